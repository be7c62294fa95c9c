"""MediaPipe's face models, read from the .tflite files in the mediapipe==0.10.14 wheel (the package is not
imported; later versions no longer ship the files).

- ``blazeface``: BlazeFace short-range face detector, [1,128,128,3] NHWC in [-1, 1], 896 SSD anchors.
- ``face_mesh``: the 468-point face landmark model, [1,192,192,3] NHWC in [0, 1].

No labels offline for either: detections are scored against FP32's, landmarks by their distance to FP32's.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import openvino as ov
from PIL import Image

from . import imagenet_photos
from .boxes import Detection, DetectorSpec, nms
from .scenes import photo_with_faces, resized
from .zoo import EVAL, Item, ModelLike, ModelSpec, core, rng_for, run


def tflite_path(module: str, file: str) -> Path:
    spec = importlib.util.find_spec("mediapipe")
    return Path(list(spec.submodule_search_locations)[0]) / "modules" / module / file


def read_static(path: Path) -> ov.Model:
    """A .tflite model read by OpenVINO (its shapes are already static)."""
    model = core().read_model(str(path))
    for port in model.inputs:
        assert port.get_partial_shape().is_static, port
    return model


def blazeface_anchors() -> np.ndarray:
    """Centres (x, y) in [0, 1] of the short-range model's 896 anchors: 2 per cell of the 16x16 grid (stride 8),
    then 6 per cell of the 8x8 grid (strides 16, three layers merged), row by row."""
    centres = []
    for grid, per_cell in ((16, 2), (8, 6)):
        ys, xs = np.meshgrid((np.arange(grid) + 0.5) / grid, (np.arange(grid) + 0.5) / grid, indexing="ij")
        cells = np.stack([xs.ravel(), ys.ravel()], 1)
        centres.append(np.repeat(cells, per_cell, axis=0))
    return np.concatenate(centres).astype(np.float32)


class BlazeFaceSpec(DetectorSpec):
    name = "blazeface"
    default_n = 300
    size = 128
    score_threshold = 0.5
    nms_iou = 0.3
    data_note = ("Model: face_detection_short_range.tflite from mediapipe==0.10.14 (--no-deps); data: crops of the "
                 "photos bundled with scikit-image with 0-3 lfw_subset faces pasted at 20-70 px (disjoint photo "
                 "halves and faces for calibration and evaluation), light noise; no labels: F-score of the "
                 "detections (score >= 0.5, NMS 0.3) against FP32's at IoU 0.5.")

    def __init__(self) -> None:
        super().__init__()
        self._anchors = blazeface_anchors()

    def build(self) -> ov.Model:
        return read_static(tflite_path("face_detection", "face_detection_short_range.tflite"))

    def make_items(self, n: int, seed: int, pool: int) -> List[Item]:
        rng = rng_for(seed, pool, self.size)
        items = []
        for _ in range(n):
            img, _ = photo_with_faces(rng, pool, self.size, (20, 70), 3)
            square = np.zeros((self.size, self.size, 3), np.float32)  # letterbox: pad right / bottom
            square[:img.shape[0], :img.shape[1]] = img
            items.append({"input": (square / 127.5 - 1.0)[None]})
        return items

    def decode(self, outputs: List[np.ndarray]) -> List[Detection]:
        """Box centres are offsets from the anchor centres and sizes are fractions of the input, both in input
        pixels; scores are the sigmoid of the logits."""
        regressors, logits = outputs
        raw = regressors[0] / self.size
        scores = 1 / (1 + np.exp(-np.clip(logits[0, :, 0].astype(np.float64), -100, 100)))
        keep = scores >= self.score_threshold
        centre = raw[keep, :2] + self._anchors[keep]
        half = raw[keep, 2:4] / 2
        boxes, scores = np.concatenate([centre - half, centre + half], 1), scores[keep]
        return [(0, float(scores[i]), tuple(map(float, boxes[i]))) for i in nms(boxes, scores, self.nms_iou)]



def face_crop(rng: np.random.Generator, pool: int, size: int) -> np.ndarray:
    """An lfw_subset face scaled to 55-80 % of a size x size crop of a photo half, shifted by up to 8 % and
    turned by up to 15 degrees, as a face tracker's region of interest looks; light noise. uint8 RGB."""
    halves, faces = imagenet_photos.photo_halves(pool), imagenet_photos.lfw_faces(pool)
    background = imagenet_photos.random_crop(rng, halves[int(rng.integers(len(halves)))])
    img = resized(background, size, size)
    side = int(size * rng.uniform(0.55, 0.8))
    face = faces[int(rng.integers(len(faces) // 2))]  # the first half of the pool's lfw images are faces
    if rng.random() < 0.5:
        face = face[:, ::-1]
    x0 = (size - side) // 2 + int(rng.integers(-size // 12, size // 12 + 1))
    y0 = (size - side) // 2 + int(rng.integers(-size // 12, size // 12 + 1))
    x0, y0 = min(max(x0, 0), size - side), min(max(y0, 0), size - side)
    img[y0:y0 + side, x0:x0 + side] = resized(face, side, side)
    turned = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).rotate(float(rng.uniform(-15, 15)),
                                                                             Image.BILINEAR)
    out = np.asarray(turned, np.float32) + rng.normal(0, rng.uniform(0, 4), (size, size, 3))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


class FaceMeshSpec(ModelSpec):
    name = "face_mesh"
    headline = "landmark_pck"
    default_n = 300
    size = 192
    left_eye_outer, right_eye_outer = 33, 263  # mesh indices of the outer eye corners
    pck_fraction = 0.02
    data_note = ("Model: face_landmark.tflite (468 3D points + face score) from mediapipe==0.10.14 (--no-deps); "
                 "data: lfw_subset faces (25x25, upscaled) pasted on crops of the photos bundled with scikit-image, "
                 "shifted and turned by up to 15 degrees, light noise (disjoint faces and photo halves for "
                 "calibration and evaluation); no labels: landmark_pck = share of the points within 2 % of FP32's "
                 "outer-eye-corner distance of FP32's point (x, y).")

    def build(self) -> ov.Model:
        return read_static(tflite_path("face_landmark", "face_landmark.tflite"))

    def make_items(self, n: int, seed: int, pool: int) -> List[Item]:
        rng = rng_for(seed, pool, self.size)
        return [{"input_1": (face_crop(rng, pool, self.size) / 255.0).astype(np.float32)[None]} for _ in range(n)]

    def evaluate(self, model_or_xml: ModelLike, n: Optional[int] = None, seed: int = 1) -> Dict[str, Any]:
        """landmark_pck (see data_note); nme: mean point distance over the eye-corner distance, both FP32's;
        face_score_mae: mean absolute difference of the face-presence sigmoid."""
        n = self.default_n if n is None else n
        items = self.make_items(n, seed, EVAL)
        ref, out = self.fp32_reference((n, seed), lambda xml: run(xml, items)), run(model_or_xml, items)
        ref_points = np.stack([r[0].reshape(-1, 3)[:, :2] for r in ref])
        points = np.stack([o[0].reshape(-1, 3)[:, :2] for o in out])
        eye_distance = np.linalg.norm(ref_points[:, self.left_eye_outer] - ref_points[:, self.right_eye_outer], axis=1)
        error = np.linalg.norm(points - ref_points, axis=2) / np.maximum(eye_distance, 1e-6)[:, None]

        def presence(outs: List[List[np.ndarray]]) -> np.ndarray:
            return 1 / (1 + np.exp(-np.clip(np.array([o[1].item() for o in outs], np.float64), -100, 100)))

        return {"landmark_pck": float(np.mean(error < self.pck_fraction)), "nme": float(error.mean()),
                "face_score_mae": float(np.abs(presence(out) - presence(ref)).mean()), "n": n}
