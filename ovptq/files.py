"""Files ovptq writes go to a temporary name beside the target and are moved into place, so a failure or an
interrupt never leaves a half-written IR or report."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator

import openvino as ov


def save_model(model: ov.Model, xml: str | Path, compress_to_fp16: bool = False) -> Path:
    """`ov.save_model` with the .bin then the .xml moved into place only once both are written. FP32 constants
    stay FP32 by default (OpenVINO would compress them to FP16)."""
    xml = Path(xml)
    if xml.suffix != ".xml":
        raise ValueError(f"{xml}: an IR path ends in .xml")
    xml.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=xml.parent, prefix=f".{xml.stem}-") as tmp:
        staged = Path(tmp) / xml.name
        ov.save_model(model, str(staged), compress_to_fp16=compress_to_fp16)
        os.replace(staged.with_suffix(".bin"), xml.with_suffix(".bin"))
        os.replace(staged, xml)
    return xml


@contextlib.contextmanager
def replacing(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """A temporary file beside `path`, open for writing: moved onto `path` when the block ends, deleted if it
    raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(mode, dir=path.parent, prefix=f".{path.name}-", delete=False)
    try:
        with handle:
            yield handle
        os.replace(handle.name, path)
    except BaseException:
        os.unlink(handle.name)
        raise


def write_text(path: str | Path, text: str) -> Path:
    with replacing(path, "w") as handle:
        handle.write(text)
    return Path(path)
