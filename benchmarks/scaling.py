"""Quantize time and peak memory of ovptq and NNCF as the subset grows, on models of different sizes.

    python -m benchmarks.scaling                                   # 4 models x subset 100, 300, 1000
    python -m benchmarks.scaling --models ppocr_cls --sizes 50 100 # a quick look
    python -m benchmarks.scaling --update-readme                   # also write the table into benchmarks/README.md

Each (model, subset, tool) runs in its own process, on the same calibration items for both tools (read lazily
from disk, so the data does not count in peak memory). Results: benchmarks/results/scaling.{json,md,png}.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from benchmarks import plots
from benchmarks.compare import RESULTS, calibration_folder, command_line, publish, run_tool, save_run

DEFAULT_MODELS = ["ppocr_cls", "ppocr_rec", "mobilenet_v2", "light_resnet50"]
DEFAULT_SIZES = [100, 300, 1000]
TOOLS = ["nncf", "ovptq"]


def model_megabytes(xml: Path) -> float:
    return xml.with_suffix(".bin").stat().st_size / 2 ** 20


def measure(name: str, sizes: list[int], work: Path) -> list[dict]:
    from models import get_model
    spec = get_model(name)
    xml = spec.xml_path()
    data = calibration_folder(spec, max(sizes))  # the first `size` items of one folder serve every size
    rows = []
    for size in sizes:
        row = {"model": name, "weights_mb": model_megabytes(xml), "subset_size": size}
        for tool in TOOLS:
            out_dir = work / name / str(size)
            out_dir.mkdir(parents=True, exist_ok=True)
            report = run_tool(tool, xml, data, out_dir, size)
            row[tool] = {"seconds": report["quantize_seconds"], "peak_rss_mb": report["peak_rss_mb"]}
        print(f"{name:16s} subset {size:5d}: " + "  ".join(
            f"{tool} {row[tool]['seconds']:6.1f} s {row[tool]['peak_rss_mb']:6.0f} MB" for tool in TOOLS), flush=True)
        rows.append(row)
    return rows


def table(rows: list[dict]) -> list[str]:
    lines = ["| model (weights MB) | subset | seconds NNCF / ovptq (ratio) | peak RSS MB NNCF / ovptq (ratio) |",
             "|---|---|---|---|"]
    for row in rows:
        n, o = row["nncf"], row["ovptq"]
        lines.append(f"| {row['model']} ({row['weights_mb']:.1f}) | {row['subset_size']} | "
                     f"{n['seconds']:.1f} / {o['seconds']:.1f} ({o['seconds'] / n['seconds']:.2f}) | "
                     f"{n['peak_rss_mb']:.0f} / {o['peak_rss_mb']:.0f} "
                     f"({o['peak_rss_mb'] / n['peak_rss_mb']:.2f}) |")
    return lines


def plot(rows: list[dict], path: Path) -> bool:
    """Two panels, time and peak memory against the subset size; one colour per model, NNCF dashed."""
    panels = plots.two_panels()
    if panels is None:
        return False
    plt, figure, axes = panels
    models = list(dict.fromkeys(row["model"] for row in rows))
    for index, model in enumerate(models):
        mine = [row for row in rows if row["model"] == model]
        sizes = [row["subset_size"] for row in mine]
        for tool, style in (("nncf", "--"), ("ovptq", "-")):
            colour = f"C{index}"
            axes[0].plot(sizes, [row[tool]["seconds"] for row in mine], style, color=colour, marker="o",
                         label=f"{model} {tool}")
            axes[1].plot(sizes, [row[tool]["peak_rss_mb"] for row in mine], style, color=colour, marker="o")
    for axis in axes:
        axis.set_xscale("log")
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=7, ncol=2)
    plots.save(plt, figure, axes, "subset_size (items)", ("quantize wall time (s)", "peak RSS (MB)"),
               "ovptq (solid) vs NNCF (dashed), default settings, same data", path)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    parser.add_argument("--sizes", nargs="+", type=int, default=DEFAULT_SIZES)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--update-readme", action="store_true", help="write the table into benchmarks/README.md")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    command = command_line("benchmarks.scaling", argv)
    rows = []
    for name in args.models:
        rows += measure(name, sorted(args.sizes), args.out / "irs" / "scaling")
    lines = table(rows)
    if plot(rows, args.out / "scaling.png"):
        lines += ["", "![quantize time and peak memory against subset size](results/scaling.png)"]
    publish(save_run(args.out, "scaling", command, started, rows, lines), "scaling", args.update_readme)
    return 0


if __name__ == "__main__":
    sys.exit(main())
