"""Quantize wall time and peak memory, repeated: the variants take turns within each round.

    python -m benchmarks.timing --models light_resnet50 --variants nncf ovptq ovptq_nobc --repeat 5
    python -m benchmarks.timing --models ppocr_rec ppocr_cls --variants nncf ovptq_nobc ovptq --update-readme
    python -m benchmarks.timing --variants ovptq@../before ovptq      # two versions: a worktree of an old commit
    python -m benchmarks.timing --models ppocr_rec --variants nncf ovptq --speed-rounds 4   # and the IRs' speed

`benchmarks.compare` quantizes once per variant, and on a shared machine one run can be 10% off. Here each round
runs every variant once, each in its own process, in an order that rotates from round to round; a ratio is taken
within each round (the runs are minutes apart at most) and the table gives the median of those ratios against the
first variant listed, and against the variant listed just before, with their smallest and largest values.
With --speed-rounds, the IRs of the last round then run in benchmark_app against the FP32 IR at the plugin's
default inference precision (and at bf16 / f32 where the CPU has bf16), in alternating rounds, as in
benchmarks.compare.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from benchmarks.compare import (RESULTS, calibration_folder, command_line, publish, run_tool, save_run, speed,
                                speed_table, variant_argument)


def rounds_of(name: str, variants: list[str], repeat: int, subset_size: int, work: Path) -> list[dict]:
    """One dict per round: variant -> {"quantize_seconds", "peak_rss_mb", "xml"}."""
    from models import get_model
    spec = get_model(name)
    data = calibration_folder(spec, subset_size)
    out_dir = work / name
    out_dir.mkdir(parents=True, exist_ok=True)
    rounds = []
    for index in range(repeat):
        order = variants[index % len(variants):] + variants[:index % len(variants)]
        runs = {}
        for variant in order:
            result = run_tool(variant, spec.xml_path(), data, out_dir, subset_size, spec.model_type)
            runs[variant] = {key: result[key] for key in ("quantize_seconds", "peak_rss_mb", "xml")}
        print(f"  round {index + 1}: " + ", ".join(f"{v} {runs[v]['quantize_seconds']:.2f} s" for v in variants),
              flush=True)
        rounds.append(runs)
    return rounds


def speed_row(name: str, last_round: dict, rounds: int, seconds: int) -> dict:
    """The last round's IRs against the FP32 IR in benchmark_app, as a benchmarks.compare row (the table needs
    the "nncf" and "ovptq" variants)."""
    from models import get_model
    spec = get_model(name)
    row = {"model": name, "fp32": {}, **{variant: {"xml": run["xml"]} for variant, run in last_round.items()}}
    row["speed"] = speed(row, str(spec.xml_path()), list(last_round), rounds, seconds, list(spec.benchmark_app_args))
    return row


def summary(name: str, variants: list[str], rounds: list[dict]) -> dict:
    """Median time and memory per variant; per-round time ratios against the first and the previous variant."""
    row: dict = {"model": name, "rounds": len(rounds), "variants": {}}
    for position, variant in enumerate(variants):
        seconds = [r[variant]["quantize_seconds"] for r in rounds]
        row["variants"][variant] = {
            "seconds_median": statistics.median(seconds), "seconds": seconds,
            "peak_rss_mb_median": statistics.median(r[variant]["peak_rss_mb"] for r in rounds),
            "against_first": _ratios(rounds, variant, variants[0]) if position else None,
            "against_previous": _ratios(rounds, variant, variants[position - 1]) if position > 1 else None}
    return row


def _ratios(rounds: list[dict], variant: str, reference: str) -> dict:
    ratios = [r[variant]["quantize_seconds"] / r[reference]["quantize_seconds"] for r in rounds]
    return {"reference": reference, "median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}


def _ratio_cell(ratios: dict | None) -> str:
    if ratios is None:
        return "-"
    return f"{ratios['median']:.2f} ({ratios['min']:.2f}-{ratios['max']:.2f}) of {ratios['reference']}"


def table(rows: list[dict]) -> list[str]:
    lines = ["| model | variant | quantize s: median (each round) | time ratio: median (min-max) | "
             "time ratio to the previous variant | peak RSS MB, median |", "|---|---|---|---|---|---|"]
    for row in rows:
        for variant, v in row["variants"].items():
            runs = ", ".join(f"{s:.1f}" for s in v["seconds"])
            lines.append(f"| {row['model']} | {variant} | {v['seconds_median']:.2f} ({runs}) "
                         f"| {_ratio_cell(v['against_first'])} | {_ratio_cell(v['against_previous'])} "
                         f"| {v['peak_rss_mb_median']:.0f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["light_resnet50"])
    parser.add_argument("--variants", nargs="+", default=["nncf", "ovptq"], type=variant_argument,
                        help="the first one is the reference of the ratios; VARIANT@CHECKOUT runs the variant with "
                             "the ovptq of another checkout")
    parser.add_argument("--repeat", type=int, default=5, help="rounds")
    parser.add_argument("--subset-size", type=int, default=300)
    parser.add_argument("--speed-rounds", type=int, default=0,
                        help="benchmark_app rounds on the last round's IRs against the FP32 IR (0: none)")
    parser.add_argument("--seconds", type=int, default=10, help="duration of each benchmark_app run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--update-readme", action="store_true", help="write the table into benchmarks/README.md")
    args = parser.parse_args(argv)
    command = command_line("benchmarks.timing", argv)
    started = time.time()
    rows = []
    for name in args.models:
        print(f"== {name}", flush=True)
        rounds = rounds_of(name, args.variants, args.repeat, args.subset_size, args.out / "irs" / "timing")
        rows.append(summary(name, args.variants, rounds))
        if args.speed_rounds:
            rows[-1]["speed_row"] = speed_row(name, rounds[-1], args.speed_rounds, args.seconds)
        print("\n".join(table(rows[-1:])), flush=True)
    lines = table(rows)
    speeds = [r["speed_row"] for r in rows if "speed_row" in r]
    if speeds:
        lines += ["", "Speed of the last round's IRs (benchmark_app -hint throughput, ratios per round):", "",
                  *speed_table(speeds)]
    publish(save_run(args.out, "timing", command, started, rows, lines), "timing", args.update_readme)
    return 0


if __name__ == "__main__":
    sys.exit(main())
