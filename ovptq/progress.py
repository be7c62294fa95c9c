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


def progress(total: int | None, desc: str, unit: str = "it", enabled: bool | None = None) -> tqdm:
    return tqdm(total=total, desc=desc, unit=unit, disable=not progress_enabled(enabled), leave=False)
