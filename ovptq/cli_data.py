"""Calibration data for the command line: a folder of images, a .npy / .npz file, or a Python `module:function`.

Images (PNG, JPEG, BMP, ... read with Pillow) become one item each: resized to `size` (H W; default: the model
input's static height and width), channels in RGB order (BGR with `bgr`), then (x - mean) / scale per channel,
laid out as NCHW (default) or NHWC, float32, batch axis of 1. A .npy array [N, ...] gives N items of shape
[1, ...]; a .npz gives one array per model input name, each [N, ...]. `module:function` is imported from the current
directory and called with no argument; it returns any iterable of items, as `ovptq.Dataset` takes them.
"""

from __future__ import annotations

import importlib
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openvino as ov

from ovptq.errors import DatasetError, ParameterError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


@dataclass(frozen=True)
class ImageOptions:
    size: tuple[int, int] | None = None          # (height, width)
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    scale: tuple[float, ...] = (1.0, 1.0, 1.0)
    layout: str = "NCHW"
    bgr: bool = False


def load(source: str, model: ov.Model, images: ImageOptions) -> list | object:
    """The calibration items described by `source` (see the module docstring)."""
    path = Path(source)
    if path.is_dir():
        return image_items(path, model, images)
    if path.suffix == ".npy" and path.is_file():
        array = _read_numpy(path)
        return [array[i:i + 1] for i in range(len(array))]
    if path.suffix == ".npz" and path.is_file():
        data = _read_numpy(path)
        counts = {len(a) for a in data.values()}
        if len(counts) != 1:
            raise DatasetError(f"{path}: its arrays have different numbers of samples "
                               f"({', '.join(f'{k} {len(v)}' for k, v in data.items())}).")
        return [{name: a[i:i + 1] for name, a in data.items()} for i in range(counts.pop())]
    if ":" in source and not path.exists():
        return _from_function(source)
    if not path.exists():
        raise DatasetError(f"--data {source!r}: no such file or folder.")
    raise ParameterError(f"--data {source!r} is neither a folder of images, a .npy / .npz file nor a "
                         "module:function.")


def _read_numpy(path: Path) -> np.ndarray | dict[str, np.ndarray]:
    """The array of a .npy file, or the arrays of a .npz file by name; a file numpy cannot read (or one holding
    pickled Python objects, which are never loaded) is a DatasetError naming it."""
    try:
        if path.suffix == ".npy":
            return np.load(path)
        with np.load(path) as arrays:
            return {name: arrays[name] for name in arrays.files}
    except ValueError as error:
        if "allow_pickle" in str(error) or "pickled" in str(error):
            raise DatasetError(f"{path} is not a plain NumPy array file: numpy reads it as pickled Python objects, "
                               "which ovptq never loads. Save numeric arrays (np.save of a float32 array).") \
                from error
        raise DatasetError(f"{path} is not a NumPy file numpy can read: {error}.") from error
    except (OSError, EOFError, zipfile.BadZipFile) as error:
        raise DatasetError(f"{path} is not a NumPy file numpy can read: {error}.") from error


def image_items(folder: Path, model: ov.Model, options: ImageOptions) -> list[np.ndarray]:
    try:
        from PIL import Image
    except ImportError as error:
        raise ParameterError("Reading an image folder needs Pillow: pip install pillow") from error
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DatasetError(f"{folder} holds no image ({', '.join(sorted(IMAGE_SUFFIXES))}).")
    height, width = options.size or _input_size(model, options.layout)
    items = []
    for file in files:
        try:
            image = Image.open(file).convert("RGB").resize((width, height), Image.BILINEAR)
        except OSError as error:
            raise DatasetError(f"Image {file} could not be read: {error}") from error
        pixels = np.asarray(image, np.float32)
        if options.bgr:
            pixels = pixels[..., ::-1]
        pixels = (pixels - np.asarray(options.mean, np.float32)) / np.asarray(options.scale, np.float32)
        if options.layout == "NCHW":
            pixels = pixels.transpose(2, 0, 1)
        items.append(np.ascontiguousarray(pixels[None]))
    return items


def _input_size(model: ov.Model, layout: str) -> tuple[int, int]:
    if len(model.inputs) != 1:
        raise ParameterError(f"An image folder feeds one input, but the model has {len(model.inputs)}; pass a "
                             ".npz with one array per input or a module:function.")
    shape = model.inputs[0].get_partial_shape()
    axes = (2, 3) if layout == "NCHW" else (1, 2)
    if shape.rank.is_dynamic or shape.rank.get_length() != 4 or any(shape[a].is_dynamic for a in axes):
        raise ParameterError(f"The model input has shape {shape}: give the image size with --size HEIGHT WIDTH.")
    return shape[axes[0]].get_length(), shape[axes[1]].get_length()


def _from_function(source: str):
    return import_function(source, "--data")()


def import_function(source: str, option: str):
    """The function `module:function` names, imported from the current directory or the Python path."""
    module_name, _, function_name = source.partition(":")
    sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ParameterError(f"{option} {source!r}: module {module_name!r} could not be imported: {error}") from error
    finally:
        sys.path.pop(0)
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ParameterError(f"{option} {source!r}: {module_name} has no function {function_name!r}.")
    return function
