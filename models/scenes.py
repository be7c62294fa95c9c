"""Scenes for the face and body detectors: crops of scikit-image's bundled photos with lfw_subset faces pasted in.

The photo halves and the lfw images are split by pool exactly as in ``imagenet_photos``, so calibration and
evaluation scenes never share a pixel.
"""

from __future__ import annotations

from typing import List, Tuple

import numpy as np
from PIL import Image

from . import imagenet_photos

Box = Tuple[float, float, float, float]


def resized(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear resize of a uint8 image, as float32."""
    return np.asarray(Image.fromarray(np.ascontiguousarray(img)).resize((width, height), Image.BILINEAR), np.float32)


def photo_with_faces(rng: np.random.Generator, pool: int, longer_side: int, face_sizes: Tuple[int, int],
                     max_faces: int) -> Tuple[np.ndarray, List[Box]]:
    """A random crop of one of the pool's photo halves, resized to ``longer_side`` on its longer side, with
    0..max_faces lfw_subset faces of face_sizes[0]..face_sizes[1] px pasted at random places, plus light sensor
    noise. Returns the uint8 RGB image and the pasted faces' boxes (later faces may cover earlier ones)."""
    halves, faces = imagenet_photos.photo_halves(pool), imagenet_photos.lfw_faces(pool)
    crop = imagenet_photos.random_crop(rng, halves[int(rng.integers(len(halves)))])
    scale = longer_side / max(crop.shape[:2])
    img = resized(crop, max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
    h, w = img.shape[:2]
    boxes: List[Box] = []
    for _ in range(int(rng.integers(0, max_faces + 1))):
        side = min(int(rng.integers(face_sizes[0], face_sizes[1] + 1)), h, w)
        face = faces[int(rng.integers(len(faces) // 2))]  # the first half of the pool's lfw images are faces
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        img[y:y + side, x:x + side] = resized(face, side, side)
        boxes.append((x, y, x + side, y + side))
    img = img + rng.normal(0, rng.uniform(0, 5), img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), boxes
