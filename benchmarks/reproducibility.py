"""The default call's contract on real models: one IR for one input, in any process, beside a busy CPU too, and its
quantize time and peak memory against NNCF's default call in the same run.

    python -m benchmarks.reproducibility                    # the benchmark models (300 items) and the corpus (150)
    python -m benchmarks.reproducibility --models ppocr_det --subset-size 300
    python -m benchmarks.reproducibility --update-readme    # and fill its block in benchmarks/README.md

Per model, each in a process of its own (`benchmarks.worker`): NNCF's default call once, then ovptq's default call
three times; the second ovptq run has two processes spinning beside it, so the CPU is busy throughout. The IRs of
the three ovptq runs are compared byte for byte (.xml and .bin, by SHA-256). The time ratio is the median of the
two quiet ovptq runs over NNCF's; the memory ratio is the same for peak RSS.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.compare import (DEFAULT_MODELS, RESULTS, calibration_folder, command_line, corpus_models, publish,
                                run_tool, save_run)

RUNS = 3
BUSY = 1  # the run with a busy CPU beside it


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def measure(name: str, subset_size: int, work: Path) -> dict:
    from models import get_model
    spec = get_model(name)
    fp32, data = spec.xml_path(), calibration_folder(spec, subset_size)
    out = work / f"{name}-{subset_size}"
    out.mkdir(parents=True, exist_ok=True)
    nncf = run_tool("nncf", fp32, data, out, subset_size, spec.model_type)
    runs = []
    for run in range(RUNS):
        busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)] if run == BUSY else []
        try:
            result = run_tool("ovptq", fp32, data, out, subset_size, spec.model_type)
        finally:
            for process in busy:
                process.kill()
                process.wait()
        xml = Path(result["xml"])
        runs.append({**result, "xml_sha256": sha256(xml), "bin_sha256": sha256(xml.with_suffix(".bin"))})
    quiet = [r for i, r in enumerate(runs) if i != BUSY]
    seconds = statistics.median(r["quantize_seconds"] for r in quiet)
    rss = statistics.median(r["peak_rss_mb"] for r in quiet)
    return {"model": name, "subset_size": subset_size, "nncf": nncf, "ovptq": runs,
            "identical": len({(r["xml_sha256"], r["bin_sha256"]) for r in runs}) == 1,
            "ovptq_seconds": seconds, "ovptq_peak_rss_mb": rss,
            "time_ratio": seconds / nncf["quantize_seconds"], "rss_ratio": rss / nncf["peak_rss_mb"]}


def table(rows: list[dict]) -> list[str]:
    lines = ["| model | items | IR in 3 processes (one beside a busy CPU) | SHA-256 of .xml / .bin | quantize s NNCF / "
             "ovptq (ratio) | peak RSS MB NNCF / ovptq (ratio) |", "|---|---|---|---|---|---|"]
    for r in rows:
        run = r["ovptq"][0]
        lines.append(f"| {r['model']} | {r['subset_size']} | {'identical' if r['identical'] else '**DIFFERENT**'} | "
                     f"{run['xml_sha256'][:10]} / {run['bin_sha256'][:10]} | {r['nncf']['quantize_seconds']:.1f} / "
                     f"{r['ovptq_seconds']:.1f} ({r['time_ratio']:.2f}) | {r['nncf']['peak_rss_mb']:.0f} / "
                     f"{r['ovptq_peak_rss_mb']:.0f} ({r['rss_ratio']:.2f}) |")
    if rows:
        identical = sum(r["identical"] for r in rows)
        ratios = sorted(r["time_ratio"] for r in rows)
        rss = sorted(r["rss_ratio"] for r in rows)
        lines += ["", f"Bit-identical in all three processes: {identical} of {len(rows)} runs. Quantize time against "
                      f"NNCF: median {statistics.median(ratios):.2f}, at most {ratios[-1]:.2f}; peak RSS: median "
                      f"{statistics.median(rss):.2f}, at most {rss[-1]:.2f}."]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", help="these models at --subset-size (default: the benchmark models "
                                                    "at 300 items and the corpus at 150)")
    parser.add_argument("--subset-size", type=int, default=300)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--work", type=Path, default=Path("/tmp/ovptq-reproducibility"))
    parser.add_argument("--update-readme", action="store_true")
    args = parser.parse_args(argv)
    runs = [(m, args.subset_size) for m in args.models] if args.models else \
        [(m, 300) for m in DEFAULT_MODELS] + [(m, 150) for m in corpus_models()]
    started, rows = time.time(), []
    command = command_line("benchmarks.reproducibility", argv)
    for name, subset in runs:
        print(f"== {name} ({subset} items)", flush=True)
        try:
            rows.append(measure(name, subset, args.work))
        except (subprocess.CalledProcessError, ImportError) as error:
            print(f"   failed: {error}", flush=True)
            continue
        print("\n".join(table(rows[-1:])[2:3]), flush=True)
        markdown = save_run(args.out, "reproducibility", command, started, rows, table(rows))
    publish(markdown, "reproducibility", args.update_readme)
    return 0


if __name__ == "__main__":
    sys.exit(main())
