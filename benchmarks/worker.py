"""Quantize one model with one tool, in a process of its own, so peak memory is the tool's own.

    python -m benchmarks.worker VARIANT FP32.xml CALIBRATION_DIR OUT.xml REPORT.json [--subset-size N]

VARIANT is ovptq or nncf, optionally with _full (full bias correction), _nobc (no bias correction) or _transformer
(model_type="transformer"); ovptq_nonet is ovptq's default with the safety net off, ovptq_cpu ovptq with
target_device="CPU" (the speed check on, its decisions kept in the worker's own speed records folder).

CALIBRATION_DIR holds item_00000.npz, ... (one dataset item each), read lazily while the tool iterates, so the
data itself does not inflate peak memory. The wall time covers the quantize call only.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import openvino as ov


class DiskItems:
    """Dataset items stored one per .npz file; each is a dict {input name: array}."""

    def __init__(self, folder: str | Path):
        self.files = sorted(Path(folder).glob("item_*.npz"))

    def __len__(self) -> int:
        return len(self.files)

    def __iter__(self):
        for path in self.files:
            with np.load(path) as item:
                yield {key: item[key] for key in item.files}


def save_items(items, folder: str | Path) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for index, item in enumerate(items):
        np.savez(folder / f"item_{index:05d}.npz", **item)
    return folder


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM). Not ru_maxrss: Linux keeps that across exec, so a worker
    would report its parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# A variant is a tool with its bias correction mode: "fast" (the default of both tools), "full" or "none"; or with
# model_type="transformer" forced ("_transformer"); or ovptq's default with its safety net off ("_nonet"); or ovptq for
# the CPU that quantizes ("_cpu": target_device="CPU").
VARIANTS = ["nncf", "ovptq", "nncf_full", "ovptq_full", "nncf_nobc", "ovptq_nobc", "nncf_transformer",
            "ovptq_transformer", "ovptq_nonet", "ovptq_cpu"]


def quantize(variant: str, model: ov.Model, items: DiskItems, subset_size: int, model_type: str | None = None):
    tool, _, mode = variant.partition("_")
    fast = mode != "full"
    model_type = "transformer" if mode == "transformer" else model_type
    if tool == "ovptq":
        import ovptq
        advanced = ovptq.AdvancedQuantizationParameters(disable_bias_correction=mode == "nobc",
                                                        safety_net=mode != "nonet")
        return ovptq.quantize(model, ovptq.Dataset(items), subset_size=subset_size, fast_bias_correction=fast,
                              model_type=model_type, advanced_parameters=advanced,
                              target_device="CPU" if mode == "cpu" else "ANY")
    if tool == "nncf":
        import nncf
        advanced = nncf.AdvancedQuantizationParameters(disable_bias_correction=mode == "nobc")
        return nncf.quantize(model, nncf.Dataset(items), subset_size=subset_size, fast_bias_correction=fast,
                             model_type=nncf.ModelType(model_type) if model_type else None,
                             advanced_parameters=advanced)
    raise ValueError(f"unknown variant {variant!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("variant", choices=VARIANTS)
    parser.add_argument("model")
    parser.add_argument("data")
    parser.add_argument("out")
    parser.add_argument("report")
    parser.add_argument("--subset-size", type=int, default=300)
    parser.add_argument("--model-type", choices=["transformer"], help="passed to both tools")
    args = parser.parse_args(argv)
    if args.variant.startswith("ovptq"):
        import ovptq  # noqa: F401  imported before timing, as nncf is by its own import below
    else:
        import nncf  # noqa: F401
    model = ov.Core().read_model(args.model)
    items = DiskItems(args.data)
    rss_before = peak_rss_mb()
    started = time.perf_counter()
    quantized = quantize(args.variant, model, items, args.subset_size, args.model_type)
    seconds = time.perf_counter() - started
    rss = peak_rss_mb()
    ov.save_model(quantized, args.out, compress_to_fp16=False)
    Path(args.report).write_text(json.dumps({"variant": args.variant, "quantize_seconds": seconds, "peak_rss_mb": rss,
                                             "rss_before_quantize_mb": rss_before}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
