"""The structure-only ``light_*.onnx`` models shipped inside the onnx wheel (onnx/backend/test/data/light/).

They have real architectures (ResNet-50, DenseNet-121, ...) but FAKE weights: every initializer is a constant
0.02. Useful for quantizer placement, INT8 coverage and speed checks; meaningless for accuracy, so evaluate()
only measures how closely a variant reproduces the FP32 outputs on seeded smooth-noise images.
"""

from __future__ import annotations

import importlib.util
import zlib
from pathlib import Path
from typing import List

import openvino as ov

from .zoo import Item, OutputMatchSpec, core, rng_for, smooth_noise

LIGHT_NAMES = ("resnet50", "densenet121", "inception_v1", "inception_v2", "shufflenet", "squeezenet", "vgg19",
               "zfnet512", "bvlc_alexnet")


def light_onnx_path(short: str) -> Path:
    """Location of light_<short>.onnx inside the installed onnx package (found without importing onnx)."""
    spec = importlib.util.find_spec("onnx")
    root = Path(list(spec.submodule_search_locations)[0])
    return root / "backend" / "test" / "data" / "light" / f"light_{short}.onnx"


class LightOnnx(OutputMatchSpec):
    default_n = 16

    def __init__(self, short: str) -> None:
        super().__init__()
        self.short = short
        self.name = f"light_{short}"
        self.data_note = (f"Architecture from the onnx wheel's backend test data (light_{short}.onnx) with fake "
                          "constant weights; inputs are seeded smooth random noise [1,3,224,224].")
        self._inputs = None

    def build(self) -> ov.Model:
        """Convert the ONNX file with ov.convert_model: its constant folding turns the ConstantOfShape weights into
        plain Constants (ov.Core().read_model would keep them as Broadcast subgraphs) and folds BatchNorm, as for
        any IR made with ovc. Input shapes are already static."""
        return ov.convert_model(str(light_onnx_path(self.short)))

    def _input_shapes(self):
        if self._inputs is None:
            model = core().read_model(str(self.xml_path()))
            self._inputs = [(p.get_any_name(), list(p.get_shape())) for p in model.inputs]
        return self._inputs

    def make_items(self, n: int, seed: int, pool: int) -> List[Item]:
        rng = rng_for(seed, pool, zlib.crc32(self.name.encode()))
        return [{name: smooth_noise(rng, shape, -2.0, 2.5) for name, shape in self._input_shapes()}
                for _ in range(n)]
