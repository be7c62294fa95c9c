"""How much a statistics file saves: quantize once writing it, then again reading it, in one process.

    python -m benchmarks.statistics_cache [--model light_resnet50] [--subset-size 300]

Prints both wall times, their ratio, and whether the two IRs are bit-identical (same options).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import openvino as ov

from benchmarks.compare import calibration_folder
from benchmarks.worker import DiskItems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="light_resnet50")
    parser.add_argument("--subset-size", type=int, default=300)
    args = parser.parse_args(argv)
    import ovptq
    from models import get_model
    spec = get_model(args.model)
    model = ov.Core().read_model(spec.xml_path())
    items = DiskItems(calibration_folder(spec, args.subset_size))
    with tempfile.TemporaryDirectory() as tmp:
        stats, irs, seconds = Path(tmp) / "stats.npz", [], []
        for run in ("write", "read"):
            started = time.perf_counter()
            int8 = ovptq.quantize(model, ovptq.Dataset(items), subset_size=args.subset_size, statistics_path=stats)
            seconds.append(time.perf_counter() - started)
            xml = Path(tmp) / f"{run}.xml"
            ov.save_model(int8, xml, compress_to_fp16=False)
            irs.append((xml.read_bytes(), xml.with_suffix(".bin").read_bytes()))
    print(f"{args.model}, {args.subset_size} items: first run (statistics written) {seconds[0]:.1f} s, second run "
          f"(statistics read) {seconds[1]:.1f} s: {seconds[0] / seconds[1]:.1f}x faster; IRs "
          f"{'bit-identical' if irs[0] == irs[1] else 'DIFFERENT'}.")
    return 0 if irs[0] == irs[1] else 1


if __name__ == "__main__":
    sys.exit(main())
