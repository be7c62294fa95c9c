"""ImageNet-style inputs cut from the photos bundled with scikit-image (only those that load offline).

Every photo is split in two halves along its longer side; calibration crops come only from the first halves and
evaluation crops only from the second, so the two sets never share a pixel. lfw_subset faces (25x25, upscaled)
are split the same way by index (even: calibration, odd: evaluation) and make up about 5 % of the crops.
"""

from __future__ import annotations

from functools import lru_cache
from typing import List, Tuple

import numpy as np
from PIL import Image

# skimage.data loaders whose images are inside the wheel (the others download through pooch and fail offline).
# Pure textures and scenes ImageNet has no class for (brick, grass, moon, retina) are left out: MobileNetV2 is
# unsure on them, so their crops mostly add noise to the agreement figures.
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "stereo_motorcycle", "immunohistochemistry",
          "hubble_deep_field", "camera", "coins", "clock", "gravel")
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
LFW_SHARE = 0.05


def _rgb(img: np.ndarray) -> np.ndarray:
    """Any skimage image (grey, RGB, float or uint8) -> uint8 HxWx3 RGB."""
    if img.dtype != np.uint8:
        img = np.clip(np.rint(img * 255 if img.max() <= 1.0 else img), 0, 255).astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return np.ascontiguousarray(img[:, :, :3])


@lru_cache(maxsize=None)
def photo_halves(pool: int) -> Tuple[np.ndarray, ...]:
    """Half ``pool`` (0: left/top, 1: right/bottom) of every bundled photo, RGB uint8."""
    import skimage.data

    halves = []
    for name in PHOTOS:
        img = getattr(skimage.data, name)()
        img = _rgb(img[0] if isinstance(img, tuple) else img)  # stereo_motorcycle: the left image
        h, w = img.shape[:2]
        if w >= h:
            halves.append(img[:, :w // 2] if pool == 0 else img[:, w // 2:])
        else:
            halves.append(img[:h // 2] if pool == 0 else img[h // 2:])
    return tuple(halves)


@lru_cache(maxsize=None)
def lfw_faces(pool: int) -> Tuple[np.ndarray, ...]:
    """lfw_subset images (100 faces, 100 non-faces) of the pool: even indices for 0, odd for 1."""
    import skimage.data

    return tuple(_rgb(x) for x in skimage.data.lfw_subset()[pool::2])


def random_crop(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Random resized crop: 25-100 % of the area, aspect ratio 3/4..4/3, then a horizontal flip half the time."""
    h, w = img.shape[:2]
    area = h * w * rng.uniform(0.25, 1.0)
    aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    cw, ch = min(w, int(round(np.sqrt(area * aspect)))), min(h, int(round(np.sqrt(area / aspect))))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    crop = img[y:y + ch, x:x + cw]
    return crop[:, ::-1] if rng.random() < 0.5 else crop


def preprocess(rgb: np.ndarray) -> np.ndarray:
    """Torchvision-style eval transform: resize short side to 256 (bilinear), centre-crop 224, RGB/255,
    ImageNet mean/std, NCHW float32 [1,3,224,224]."""
    h, w = rgb.shape[:2]
    scale = 256 / min(h, w)
    size = (max(256, int(round(w * scale))), max(256, int(round(h * scale))))
    img = np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).resize(size, Image.BILINEAR), np.float32)
    top, left = (size[1] - 224) // 2, (size[0] - 224) // 2
    img = (img[top:top + 224, left:left + 224] / 255.0 - MEAN) / STD
    return img.transpose(2, 0, 1)[None].astype(np.float32)


def photo_crops(rng: np.random.Generator, n: int, pool: int) -> List[np.ndarray]:
    """n preprocessed crops [1,3,224,224] from the pool's photo halves and lfw faces."""
    halves, faces = photo_halves(pool), lfw_faces(pool)
    out = []
    for _ in range(n):
        if rng.random() < LFW_SHARE:
            src = faces[int(rng.integers(len(faces)))]
        else:
            src = halves[int(rng.integers(len(halves)))]
        out.append(preprocess(random_crop(rng, src)))
    return out
