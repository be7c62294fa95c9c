"""Magika, Google's content-type classifier (214 file types from 2048 bytes), from the magika wheel.

Input: int32 [1, 2048], the first 1024 and the last 1024 bytes of a file with surrounding whitespace stripped,
padded with the token 256 (as the magika package prepares them); output: probabilities of the 214 content types.
Data: real files of the installed packages (matplotlib, scikit-image, scikit-learn, numpy): sources, fonts,
images, CSV, compiled libraries, ...; each file goes to calibration or evaluation by a hash of its path.
"""

from __future__ import annotations

import importlib.util
import os
import zlib
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import openvino as ov

from .metrics import agreement
from .zoo import EVAL, Item, ModelLike, ModelSpec, core, rng_for, run

INPUT_NAME = "bytes"
HALF = 1024        # bytes taken from each end
BLOCK = 4096       # bytes read from each end before stripping
PADDING = 256
PACKAGES = ("matplotlib", "skimage", "sklearn", "numpy")


def package_dir(name: str) -> Path:
    return Path(list(importlib.util.find_spec(name).submodule_search_locations)[0])


def model_path() -> Path:
    return package_dir("magika") / "models" / "standard_v3_3" / "model.onnx"


@lru_cache(maxsize=None)
def files(pool: int) -> Tuple[Path, ...]:
    """Every file of at least 8 bytes under PACKAGES whose path hash falls in ``pool``, sorted (caches skipped)."""
    found = []
    for name in PACKAGES:
        root = package_dir(name)
        for folder, dirs, names in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for file in sorted(names):
                path = Path(folder) / file
                key = f"{name}/{path.relative_to(root)}"
                if zlib.crc32(key.encode()) % 2 == pool and path.stat().st_size >= 8:
                    found.append(path)
    return tuple(found)


def features(content: bytes) -> np.ndarray:
    """[1, 2048] int32: up to BLOCK bytes from each end, stripped of whitespace (the whole file when it is no
    longer than BLOCK), the first HALF of the head padded at the end and the last HALF of the tail padded at the
    start with PADDING."""
    if len(content) <= BLOCK:
        head = tail = content.strip()
    else:
        head, tail = content[:BLOCK].lstrip(), content[-BLOCK:].rstrip()
    head, tail = head[:HALF], tail[-HALF:]
    out = np.full(2 * HALF, PADDING, np.int32)
    out[:len(head)] = np.frombuffer(head, np.uint8)
    out[2 * HALF - len(tail):] = np.frombuffer(tail, np.uint8)
    return out[None]


def read_ends(path: Path) -> bytes:
    """The file itself when short, else its first and last BLOCK bytes joined (all that features() reads)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        if size <= 2 * BLOCK:
            return f.read()
        head = f.read(BLOCK)
        f.seek(size - BLOCK)
        return head + f.read(BLOCK)


class MagikaSpec(ModelSpec):
    name = "magika"
    headline = "top1_agreement"
    default_n = 300
    data_note = ("Model: magika standard_v3_3 model.onnx from magika==1.0.3; data: files of the installed "
                 "matplotlib, scikit-image, scikit-learn and numpy packages (Python, C headers, fonts, images, "
                 "CSV, text, ELF libraries, ...), split into calibration and evaluation by a hash of the path, "
                 "drawn with every file name suffix equally likely; no labels: top-1 content type agreement with FP32.")

    def build(self) -> ov.Model:
        """The ONNX model read as is, batch fixed to 1."""
        model = core().read_model(str(model_path()))
        model.reshape({model.inputs[0]: ov.PartialShape([1, 2 * HALF])})
        return model

    def make_items(self, n: int, seed: int, pool: int) -> List[Item]:
        """n files of the pool: a file name suffix drawn uniformly, then one file with it (Python sources would
        otherwise be 70 % of the draw); files may repeat when n exceeds what the suffixes hold."""
        by_suffix: Dict[str, List[Path]] = {}
        for path in files(pool):
            by_suffix.setdefault(path.suffix.lower(), []).append(path)
        suffixes = sorted(by_suffix)
        rng = rng_for(seed, pool, 2 * HALF)
        items = []
        for _ in range(n):
            group = by_suffix[suffixes[int(rng.integers(len(suffixes)))]]
            items.append({INPUT_NAME: features(read_ends(group[int(rng.integers(len(group)))]))})
        return items

    def _probs(self, model: ModelLike, items: List[Item]) -> np.ndarray:
        return np.concatenate([out[0] for out in run(model, items)])

    def evaluate(self, model_or_xml: ModelLike, n: Optional[int] = None, seed: int = 1) -> Dict[str, Any]:
        """Versus the FP32 model on the same files (see metrics.agreement)."""
        n = self.default_n if n is None else n
        items = self.make_items(n, seed, EVAL)
        reference = self.fp32_reference((n, seed), lambda xml: self._probs(xml, items))
        return {**agreement(reference, self._probs(model_or_xml, items)), "n": n}
