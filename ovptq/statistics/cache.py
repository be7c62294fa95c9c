"""A statistics file: the results of one statistics pass, reused by later quantizations of the same model and data.

The file (.npz) holds the value of every reduction of the statistics plan, keyed by the reduction, with the
fingerprints of the model (SHA-256 of its serialized IR) and of the data (SHA-256 of every calibration item used,
after transform_fn), the subset size and the number of samples. A later run with other options (preset, ignored
scope, range estimator, bias correction mode) takes what it needs from it without an inference pass, and is
refused, with what to do, when the model, the data or the subset size differ or when a statistic it needs was not
collected.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

from ovptq.dataset import Dataset, _to_numpy
from ovptq.errors import StatisticsError
from ovptq.files import replacing
from ovptq.statistics.reductions import TensorStatistics

FORMAT = 2  # 2: statistics keyed by RangeReduction / MeanReduction
_FIELDS = ("global_min", "global_max", "mean_min", "mean_max", "mean_absmax", "mean_quantile_low",
           "mean_quantile_high")


def model_fingerprint(model: ov.Model) -> str:
    """SHA-256 of the model's serialized IR (topology, names and weights)."""
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "model.xml"
        ov.save_model(model, str(xml), compress_to_fp16=False)
        digest = hashlib.sha256(xml.read_bytes())
        digest.update(xml.with_suffix(".bin").read_bytes())
    return digest.hexdigest()


class _ItemHasher:
    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.items = 0

    def update(self, item: Any) -> None:
        for array in _arrays(item):
            self.digest.update(f"{array.dtype}{array.shape}".encode())
            self.digest.update(np.ascontiguousarray(array).tobytes())
        self.items += 1

    def hexdigest(self) -> str:
        return f"{self.items}:{self.digest.hexdigest()}"


def _arrays(item: Any) -> list[np.ndarray]:
    if isinstance(item, dict):
        return [a for key in sorted(item) for a in _arrays(item[key])]
    if isinstance(item, (list, tuple)):
        return [a for value in item for a in _arrays(value)]
    return [_to_numpy(item)]


def hashing(dataset: Dataset, limit: int) -> tuple[Dataset, _ItemHasher]:
    """A one-pass dataset over `dataset`'s first `limit` transformed items that fingerprints them as they go."""
    hasher = _ItemHasher()

    def source():
        for _, item in dataset.items(limit=limit, stage="the statistics file"):
            hasher.update(item)
            yield item
    return Dataset(source()), hasher


def data_fingerprint(dataset: Dataset, limit: int) -> str:
    hashed, hasher = hashing(dataset, limit)
    for _ in hashed.items():
        pass
    return hasher.hexdigest()


def save(path: str | Path, model_key: str, data_key: str, subset_size: int, samples: int,
         statistics: dict, graph_options: str = "") -> None:
    """Write the statistics to `path` (atomically: a temporary file moved into place)."""
    path = Path(path)
    arrays, index = {}, []
    for number, (reduction, value) in enumerate(statistics.items()):
        entry = {"reduction": repr(reduction), "kind": "tensor" if isinstance(value, TensorStatistics) else "array"}
        if isinstance(value, TensorStatistics):
            for name in _FIELDS:
                if getattr(value, name) is not None:
                    arrays[f"{number}/{name}"] = np.asarray(getattr(value, name))
            if value.rows is not None:
                arrays[f"{number}/rows_min"], arrays[f"{number}/rows_max"] = value.rows
            entry["samples"] = value.samples
        else:
            arrays[f"{number}/value"] = np.asarray(value)
        index.append(entry)
    header = {"format": FORMAT, "model": model_key, "graph_options": graph_options, "data": data_key,
              "subset_size": subset_size, "samples": samples, "index": index}
    with replacing(path) as handle:
        np.savez(handle, header=np.array(json.dumps(header)), **arrays)


def load(path: str | Path, model_key: str, data_key: str, subset_size: int,
         reductions: list, graph_options: str = "") -> tuple[dict, int]:
    """The values of `reductions` from `path`, or a StatisticsError saying why the file cannot serve them."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as file:
            header = json.loads(str(file["header"]))
            arrays = {key: file[key] for key in file.files if key != "header"}
    except (OSError, ValueError, KeyError) as error:
        raise StatisticsError(f"Statistics file {path} could not be read ({error}). Delete it to collect the "
                              "statistics again.") from error
    problems = []
    if header.get("format") != FORMAT:
        problems.append(f"it has format {header.get('format')}, this ovptq writes {FORMAT}")
    if header.get("model") != model_key:
        problems.append("it was collected on another model (the IR fingerprints differ)")
    elif header.get("graph_options", "") != graph_options:
        problems.append(f"it was collected with {header.get('graph_options') or 'other graph options'}, not "
                        f"{graph_options}")
    if header.get("data") != data_key:
        problems.append("it was collected on other calibration data (the item fingerprints differ)")
    if header.get("subset_size") != subset_size:
        problems.append(f"it was collected with subset_size={header.get('subset_size')}, not {subset_size}")
    if problems:
        raise StatisticsError(f"Statistics file {path} does not match this quantization: {'; '.join(problems)}. "
                              "Delete it (or pass another statistics_path) to collect the statistics again.")
    stored = {entry["reduction"]: (number, entry) for number, entry in enumerate(header["index"])}
    missing = [reduction for reduction in reductions if repr(reduction) not in stored]
    if missing:
        raise StatisticsError(
            f"Statistics file {path} lacks {len(missing)} of the statistics this quantization needs (e.g. "
            f"{missing[0]!r}): the options ask for tensors or estimators the first run did not measure. Delete "
            "the file (or pass another statistics_path) to collect them.")
    results = {}
    for reduction in reductions:
        number, entry = stored[repr(reduction)]
        if entry["kind"] == "array":
            results[reduction] = arrays[f"{number}/value"]
            continue
        values = {name: arrays.get(f"{number}/{name}") for name in _FIELDS}
        rows = (arrays[f"{number}/rows_min"], arrays[f"{number}/rows_max"]) if f"{number}/rows_min" in arrays \
            else None
        results[reduction] = TensorStatistics(**values, samples=entry["samples"], rows=rows)
    return results, header["samples"]
