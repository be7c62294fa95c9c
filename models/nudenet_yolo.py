"""NudeNet's detector: a YOLOv8n with 18 body-part classes (faces, feet, armpits, ...) at 320x320.

The ONNX file (``nudenet/320n.onnx``) ships in the nudenet wheel. Inputs are letterboxed like the package does
(pad right / bottom to a square, resize, RGB / 255). There are no box labels offline: a variant is scored by how
well its detections match FP32's (same class, IoU >= 0.5) on crops of scikit-image's bundled photos.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import List

import numpy as np
import openvino as ov
from PIL import Image

from .boxes import Detection, DetectorSpec, nms
from .scenes import photo_with_faces
from .zoo import Item, core, rng_for

INPUT_NAME = "images"
SIZE = 320
SCORE_THRESHOLD = 0.25
NMS_IOU = 0.45


def model_path() -> Path:
    spec = importlib.util.find_spec("nudenet")
    return Path(list(spec.submodule_search_locations)[0]) / "320n.onnx"


def letterbox(rgb: np.ndarray) -> np.ndarray:
    """Pad right / bottom with black to a square, resize to 320, RGB / 255, NCHW float32."""
    h, w = rgb.shape[:2]
    side = max(h, w)
    square = np.zeros((side, side, 3), np.uint8)
    square[:h, :w] = rgb
    img = np.asarray(Image.fromarray(square).resize((SIZE, SIZE), Image.BILINEAR), np.float32) / 255.0
    return img.transpose(2, 0, 1)[None]


def decode(output: np.ndarray) -> List[Detection]:
    """YOLOv8 head [1, 4 + classes, anchors] (centre x, centre y, width, height in input pixels, then class
    scores) -> detections above SCORE_THRESHOLD after class-agnostic NMS."""
    pred = output[0].T
    scores = pred[:, 4:].max(1)
    keep = scores >= SCORE_THRESHOLD
    pred, scores = pred[keep], scores[keep]
    cx, cy, w, h = pred[:, 0], pred[:, 1], pred[:, 2], pred[:, 3]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
    classes = pred[:, 4:].argmax(1)
    return [(int(classes[i]), float(scores[i]), tuple(map(float, boxes[i]))) for i in nms(boxes, scores, NMS_IOU)]


class NudeNetYoloSpec(DetectorSpec):
    name = "nudenet_yolov8n"
    default_n = 200
    data_note = ("Model: YOLOv8n 320n.onnx from nudenet==3.4.2 (--no-deps); data: random crops of the photos "
                 "bundled with scikit-image with 0-4 lfw_subset faces pasted in (calibration and evaluation from "
                 "disjoint photo halves and faces), letterboxed; no "
                 "labels: F-score of the detections (score >= 0.25, NMS 0.45) against FP32's, same class, IoU 0.5.")

    def build(self) -> ov.Model:
        """The ONNX model read as is, input fixed to [1,3,320,320]."""
        model = core().read_model(str(model_path()))
        model.reshape({model.inputs[0]: ov.PartialShape([1, 3, SIZE, SIZE])})
        return model

    def make_items(self, n: int, seed: int, pool: int) -> List[Item]:
        rng = rng_for(seed, pool, SIZE)
        return [{INPUT_NAME: letterbox(photo_with_faces(rng, pool, SIZE, (40, 130), 4)[0])} for _ in range(n)]

    def decode(self, outputs: List[np.ndarray]) -> List[Detection]:
        return decode(outputs[0])
