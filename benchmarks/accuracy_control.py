"""Accuracy control, ovptq against NNCF: final metric, budget met, validation_fn calls, wall time, peak memory,
INT8 layers.

    python -m benchmarks.accuracy_control                                   # every model, max_drop 0.005 and 0.01
    python -m benchmarks.accuracy_control --models ppocr_rec --drops 0.01 --timeout 1200
    python -m benchmarks.accuracy_control --models ppocr_rec --drops 0.01 --pairs   # (input, label) items as they are

Each case (tool, model, max_drop) runs in a process of its own (peak RSS is the tool's), on the same FP32 IR,
the same calibration items and the same validation items with the same validation_fn:
- ppocr_rec, ppocrv5_rec: word accuracy (exact match) of rendered lines, with per-sample values;
- mobilenet_v2: top-1 agreement with the FP32 model on photo crops, with per-sample values.
The validation Dataset maps each (input, label) pair to its input with a transform_fn; with --pairs it holds the
pairs as they are, with no transform_fn (NNCF accepts that: only validation_fn reads the items). A case that runs
past --timeout is stopped and reported as such. Results go to benchmarks/results/
accuracy_control.{json,md}; --update-readme writes the table into benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.compare import BENCHMARKS_README, RESULTS, command_line, publish, save_run

MODELS = ["ppocr_rec", "ppocrv5_rec", "mobilenet_v2"]
DROPS = [0.005, 0.01]
TOOLS = ["nncf", "ovptq"]
CALIBRATION, VALIDATION = 150, 200  # items


def validation_set(name: str) -> tuple[list, object]:
    """(item, expected) pairs from the evaluation pool, and validation_fn(compiled, pairs) -> (metric, values)."""
    from models import get_model
    from models.zoo import EVAL, run
    spec = get_model(name)
    if name == "mobilenet_v2":
        items = spec.make_items(VALIDATION, 1, EVAL)
        expected = [int(np.argmax(out[0])) for out in run(spec.xml_path(), items)]

        def top1_agreement(compiled, data):
            values = [float(np.argmax(compiled(item)[compiled.outputs[0]]) == label) for item, label in data]
            return float(np.mean(values)), values
        return list(zip(items, expected)), top1_agreement
    items, texts = spec.samples(VALIDATION, 1, EVAL)

    def word_accuracy(compiled, data):
        values = [float(spec.decode(compiled(item)[compiled.outputs[0]][0]) == text) for item, text in data]
        return float(np.mean(values)), values
    return list(zip(items, texts)), word_accuracy


class Counted:
    """validation_fn, counting its calls."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0
        self.__qualname__ = getattr(fn, "__qualname__", "validation_fn")

    def __call__(self, compiled, data):
        self.calls += 1
        return self.fn(compiled, data)


def worker(tool: str, name: str, max_drop: float, out: Path, as_pairs: bool = False) -> int:
    """One case, in this process: quantize with accuracy control, save the IR and a JSON report beside it."""
    import openvino as ov

    from benchmarks.compare import calibration_folder
    from benchmarks.worker import DiskItems, peak_rss_mb
    from models import get_model
    spec = get_model(name)
    pairs, fn = validation_set(name)
    calibration = DiskItems(calibration_folder(spec, CALIBRATION))
    counted = Counted(fn)
    model = ov.Core().read_model(spec.xml_path())
    to_input = None if as_pairs else (lambda pair: pair[0])
    started = time.perf_counter()
    if tool == "ovptq":
        import ovptq
        int8 = ovptq.quantize_with_accuracy_control(model, ovptq.Dataset(calibration), ovptq.Dataset(pairs, to_input),
                                                    counted, max_drop, subset_size=CALIBRATION)
    else:
        import nncf
        int8 = nncf.quantize_with_accuracy_control(model, nncf.Dataset(calibration), nncf.Dataset(pairs, to_input),
                                                   counted, max_drop=max_drop, subset_size=CALIBRATION)
    seconds = time.perf_counter() - started
    calls = counted.calls
    ov.save_model(int8, out, compress_to_fp16=False)
    core = ov.Core()
    metric, _ = fn(core.compile_model(str(out), "CPU"), pairs)
    fp32, _ = fn(core.compile_model(str(spec.xml_path()), "CPU"), pairs)
    out.with_suffix(".json").write_text(json.dumps({
        "tool": tool, "model": name, "pairs": as_pairs, "max_drop": max_drop, "fp32_metric": fp32,
        "final_metric": metric,
        "met": fp32 - metric <= max_drop + 1e-9, "validations": calls, "seconds": seconds,
        "peak_rss_mb": peak_rss_mb()}))
    return 0


def run_case(tool: str, name: str, max_drop: float, work: Path, timeout: int, as_pairs: bool = False) -> dict:
    out = work / f"{name}-{max_drop}-{tool}{'-pairs' if as_pairs else ''}.xml"
    command = [sys.executable, "-m", "benchmarks.accuracy_control", "--worker", tool, name, str(max_drop), str(out),
               *(["--pairs"] if as_pairs else [])]
    env = {**os.environ, "CI": "true", "OVPTQ_PROGRESS": "0"}
    try:
        subprocess.run(command, check=True, capture_output=True, env=env, timeout=timeout,
                       cwd=Path(__file__).parent.parent)
    except subprocess.TimeoutExpired:
        return {"tool": tool, "model": name, "pairs": as_pairs, "max_drop": max_drop, "timeout": timeout}
    except subprocess.CalledProcessError as error:
        last = error.stderr.decode(errors="replace").strip().splitlines()[-1:]
        return {"tool": tool, "model": name, "pairs": as_pairs, "max_drop": max_drop, "error": " ".join(last)}
    import ovptq
    result = json.loads(out.with_suffix(".json").read_text())
    result["int8_layers"] = len(ovptq.inspect(str(out)).int8_linear)
    return result


def table(rows: list[dict]) -> list[str]:
    lines = ["| model | max_drop | FP32 | tool | final metric | met | validation_fn calls | wall s | peak RSS MB | "
             "INT8 layers |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        model = f"{r['model']}, (input, label) items" if r.get("pairs") else r["model"]
        if "timeout" in r or "error" in r:
            why = f"stopped after {r['timeout']} s" if "timeout" in r else f"failed: {r['error']}"
            lines.append(f"| {model} | {r['max_drop']} | - | {r['tool']} | {why} | - | - | - | - | - |")
            continue
        lines.append(f"| {model} | {r['max_drop']} | {r['fp32_metric']:.4f} | {r['tool']} "
                     f"| {r['final_metric']:.4f} | {'yes' if r['met'] else 'NO'} | {r['validations']} "
                     f"| {r['seconds']:.0f} | {r['peak_rss_mb']:.0f} | {r['int8_layers']} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=4, metavar=("TOOL", "MODEL", "MAX_DROP", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--drops", nargs="+", type=float, default=DROPS)
    parser.add_argument("--tools", nargs="+", default=TOOLS, choices=TOOLS)
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per case")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--pairs", action="store_true",
                        help="validation items as (input, label) pairs with no transform_fn")
    parser.add_argument("--update-readme", action="store_true", help="write the table into benchmarks/README.md")
    args = parser.parse_args(argv)
    if args.worker:
        tool, name, max_drop, out = args.worker
        return worker(tool, name, float(max_drop), Path(out), args.pairs)
    command, started = command_line("benchmarks.accuracy_control", argv), time.time()
    work = args.out / "irs" / "accuracy_control"
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.models:
        for max_drop in args.drops:
            for tool in args.tools:
                rows.append(run_case(tool, name, max_drop, work, args.timeout, args.pairs))
                print("\n".join(table(rows[-1:])[2:]), flush=True)
                save_run(args.out, "accuracy_control", command, started, rows, table(rows))
    publish(save_run(args.out, "accuracy_control", command, started, rows, table(rows)), "accuracy_control",
            args.update_readme, BENCHMARKS_README)
    return 0


if __name__ == "__main__":
    sys.exit(main())
