"""The main job on a bundled real model: quantize it with ovptq, print FP32 vs INT8 accuracy and speed.

    python -m benchmarks.demo [--model ppocr_det] [--subset-size 300] [--seconds 10]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import openvino as ov

import ovptq
from benchmarks.benchmark_app import Entry, compare, format_report, fp32_entries
from benchmarks.examples.common import show_summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ppocr_det")
    parser.add_argument("--subset-size", type=int, default=300)
    parser.add_argument("--seconds", type=int, default=10, help="duration of each benchmark_app run")
    args = parser.parse_args(argv)
    show_summary()

    from models import get_model
    spec = get_model(args.model)
    fp32_xml = spec.xml_path()
    print(f"{spec.name}: {spec.data_note}")
    items = spec.calibration_items(args.subset_size)
    started = time.perf_counter()
    int8 = ovptq.quantize(fp32_xml, ovptq.Dataset(items), subset_size=args.subset_size)
    print(f"quantized with {args.subset_size} samples in {time.perf_counter() - started:.1f} s")
    print(ovptq.inspect(int8))
    with tempfile.TemporaryDirectory() as folder:
        int8_xml = Path(folder) / f"{spec.name}_int8.xml"
        ov.save_model(int8, int8_xml, compress_to_fp16=False)
        fp32_metrics, int8_metrics = spec.evaluate(str(fp32_xml)), spec.evaluate(str(int8_xml))
        print(f"{spec.headline}: FP32 {fp32_metrics[spec.headline]:.4f}  INT8 {int8_metrics[spec.headline]:.4f}")
        print(f"all metrics: FP32 {fp32_metrics}\n             INT8 {int8_metrics}")
        references = fp32_entries(str(fp32_xml))
        results = compare([*references, Entry(str(int8_xml), label="ovptq INT8")], rounds=2, seconds=args.seconds)
        print(format_report(results, [r.name for r in references]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
