"""MTCNN's output network (ONet): face / non-face score, box refinement and five landmarks on a 48x48 crop.

Weights: ``facenet_pytorch/data/onet.pt`` from the facenet-pytorch wheel (a state_dict; the package itself is
not imported, it needs torchvision). The net is declared here with the state_dict's parameter names. Data:
scikit-image's lfw_subset, 100 faces and 100 non-face patches, so face classification has real labels.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import openvino as ov
from PIL import Image

from . import imagenet_photos
from .zoo import EVAL, Item, ModelLike, ModelSpec, rng_for, run

INPUT_NAME = "input"
SIZE = 48


def weights_path() -> Path:
    spec = importlib.util.find_spec("facenet_pytorch")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "onet.pt"


def build_torch_net():
    """ONet: four conv + PReLU stages, a 256-wide dense layer, three heads (box deltas, landmarks, face
    probability)."""
    import torch
    from torch import nn

    class ONet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
            self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
            self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
            self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
            self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
            self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
            self.dense6_1, self.dense6_2, self.dense6_3 = nn.Linear(256, 2), nn.Linear(256, 4), nn.Linear(256, 10)

        def forward(self, x):
            x = self.pool1(self.prelu1(self.conv1(x)))
            x = self.pool2(self.prelu2(self.conv2(x)))
            x = self.pool3(self.prelu3(self.conv3(x)))
            x = self.prelu4(self.conv4(x))
            x = self.prelu5(self.dense5(x.permute(0, 3, 2, 1).flatten(1)))  # the weights expect W, H order
            return self.dense6_2(x), self.dense6_3(x), torch.softmax(self.dense6_1(x), dim=1)

    return ONet()


def jittered(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """A crop of 60-100 % of the patch side at a random offset, flipped half the time, with random brightness,
    contrast and sensor noise, resized to 48x48 (uint8 RGB)."""
    h, w = img.shape[:2]
    side = int(round(min(h, w) * rng.uniform(0.6, 1.0)))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = img[y:y + side, x:x + side]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    out = np.asarray(Image.fromarray(np.ascontiguousarray(crop)).resize((SIZE, SIZE), Image.BILINEAR), np.float32)
    out = (out - out.mean()) * rng.uniform(0.4, 1.3) + out.mean() + rng.uniform(-40, 40)
    out = out + rng.normal(0, rng.uniform(0, 12), out.shape)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def to_input(rgb: np.ndarray) -> np.ndarray:
    """MTCNN normalisation (x - 127.5) / 128, NCHW float32."""
    return ((rgb.astype(np.float32) - 127.5) / 128.0).transpose(2, 0, 1)[None]


class MtcnnONetSpec(ModelSpec):
    name = "mtcnn_onet"
    headline = "accuracy"
    default_n = 300
    data_note = ("Weights: MTCNN ONet state_dict from facenet-pytorch==2.6.0 (--no-deps); data: scikit-image "
                 "lfw_subset (faces vs non-face patches, even indices for calibration, odd for evaluation) with "
                 "random crop, flip, brightness/contrast and noise; accuracy of face vs non-face (argmax) against "
                 "the real labels, plus landmark error against FP32 in pixels of the 48x48 crop.")

    def __init__(self) -> None:
        self._cache: Dict[tuple, Tuple[List[Item], np.ndarray]] = {}

    def build(self) -> ov.Model:
        """Load the state_dict (strict) into the declared net and convert it with ov.convert_model."""
        import torch

        net = build_torch_net()
        net.load_state_dict(torch.load(weights_path(), map_location="cpu", weights_only=True), strict=True)
        with torch.no_grad():
            model = ov.convert_model(net.eval(), example_input=torch.zeros(1, 3, SIZE, SIZE))
        model.reshape({model.inputs[0]: ov.PartialShape([1, 3, SIZE, SIZE])})
        model.inputs[0].get_tensor().set_names({INPUT_NAME})
        return model

    def _labelled(self, n: int, seed: int, pool: int) -> Tuple[List[Item], np.ndarray]:
        """Inputs and labels (1 face, 0 not), faces and non-faces in equal shares."""
        key = (n, seed, pool)
        if key not in self._cache:
            patches = imagenet_photos.lfw_faces(pool)  # first half faces, second half non-faces
            half = len(patches) // 2
            rng = rng_for(seed, pool, 48)
            items, labels = [], []
            for i in range(n):
                is_face = i % 2 == 0
                src = patches[int(rng.integers(half)) + (0 if is_face else half)]
                items.append({INPUT_NAME: to_input(jittered(rng, src))})
                labels.append(int(is_face))
            self._cache[key] = (items, np.array(labels))
        return self._cache[key]

    def make_items(self, n: int, seed: int, pool: int) -> List[Item]:
        return self._labelled(n, seed, pool)[0]

    def evaluate(self, model_or_xml: ModelLike, n: Optional[int] = None, seed: int = 1) -> Dict[str, Any]:
        """accuracy: face vs non-face (larger of the two probabilities) against the labels; agreement: the same
        decision as FP32; landmark_error_px: mean distance of the five landmarks to FP32's on the face crops, in
        pixels of the 48x48 input."""
        n = self.default_n if n is None else n
        items, labels = self._labelled(n, seed, EVAL)
        ref, out = self.fp32_reference((n, seed), lambda xml: run(xml, items)), run(model_or_xml, items)
        face_prob = np.array([o[2][0, 1] for o in out])
        ref_prob = np.array([r[2][0, 1] for r in ref])
        faces = labels == 1
        marks = np.stack([o[1][0] for o in out])[faces].reshape(-1, 2, 5)
        ref_marks = np.stack([r[1][0] for r in ref])[faces].reshape(-1, 2, 5)
        return {"accuracy": float(np.mean((face_prob > 0.5) == faces)),
                "agreement": float(np.mean((face_prob > 0.5) == (ref_prob > 0.5))),
                "landmark_error_px": float(np.linalg.norm(marks - ref_marks, axis=1).mean() * SIZE),
                "face_prob_mae": float(np.abs(face_prob - ref_prob).mean()), "n": n}
