"""The speed check's decisions, kept and replayed, as a timing cache is: keyed by everything the timings depend on.

    key = SHA-256 of (CPU model and ISA flags, OpenVINO version, ovptq version, the speed check's thresholds,
                      the INT8 model the check starts from (its IR, weights included), the feeds it times)

A record holds what the check decided (the quantizers and layers it gave back, what timing did not confirm) and,
for the log, the times it measured. A run whose key has a record applies its decisions without timing anything, so
the same model, data and options give the same IR, bit for bit, on a CPU of the same kind, however busy the
machine. Records are small JSON files in one folder (`AdvancedQuantizationParameters.speed_records`, by default
$OVPTQ_CACHE_DIR/speed_records or ~/.cache/ovptq/speed_records); a team can commit the folder beside its models.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import openvino as ov

from ovptq.files import write_text
from ovptq.parameters import MeasuringParameters
from ovptq.statistics.cache import model_fingerprint
from ovptq.version import __version__

FORMAT = 1


def default_folder() -> Path:
    root = os.environ.get("OVPTQ_CACHE_DIR") or Path.home() / ".cache" / "ovptq"
    return Path(root) / "speed_records"


def key(cpu: str, int8_model: ov.Model, feeds: list[dict], thresholds: MeasuringParameters) -> str:
    """The record key of a speed check of `int8_model` on `feeds` on the CPU described by `cpu`."""
    digest = hashlib.sha256()
    for text in (f"format {FORMAT}", cpu, ov.get_version(), __version__, repr(thresholds),
                 model_fingerprint(int8_model)):
        digest.update(text.encode())
        digest.update(b"\0")
    for feed in feeds:
        for name in sorted(feed, key=str):
            array = np.ascontiguousarray(feed[name])
            digest.update(f"{name}{array.dtype}{array.shape}".encode())
            digest.update(array.tobytes())
    return digest.hexdigest()


def load(folder: Path, record_key: str) -> dict | None:
    """The record of `record_key`, or None (also for a file that does not parse: it is measured again)."""
    path = Path(folder) / f"{record_key}.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("format") == FORMAT else None


def save(folder: Path, record_key: str, record: dict) -> None:
    """Write the record atomically (a concurrent run reads the old file or the new one, never half of it)."""
    write_text(Path(folder) / f"{record_key}.json", json.dumps({"format": FORMAT, **record}, indent=1))
