"""Progress bars: shown only on a terminal, unless turned off by a flag or OVPTQ_PROGRESS=0."""

from __future__ import annotations

import os
import sys

from tqdm import tqdm


def progress_enabled(flag: bool | None = None) -> bool:
    if flag is not None:
        return flag
    if os.environ.get("OVPTQ_PROGRESS", "").strip() in ("0", "false", "off", "no"):
        return False
    return sys.stderr.isatty()


def progress(total, desc: str, unit: str = "it", enabled: bool | None = None) -> tqdm:
    """A progress bar over `total` steps, or wrapping `total` when it is an iterable."""
    if total is None or isinstance(total, int):
        return tqdm(total=total, desc=desc, unit=unit, disable=not progress_enabled(enabled), leave=False)
    return tqdm(total, desc=desc, unit=unit, disable=not progress_enabled(enabled), leave=False)
