"""The IRs of a `benchmarks.compare` run, evaluated again with exact int8 arithmetic: what a CPU with VNNI or AMX
computes, on any CPU.

    python -m benchmarks.emulated --run benchmarks/results/corpus_models.json
    python -m benchmarks.emulated --run /tmp/run/corpus_models.json --models ppocr_rec ppocrv5_rec --update-readme

A CPU without VNNI or AMX (AVX2 only) runs u8 x i8 convolutions with instructions that add pairs of products in
16 bits, which saturate: there the int8 kernels compute other values than the IR says. Compiled with the CPU
plugin's low-precision transformations off (`LP_TRANSFORMS_MODE=False`) and f32 inference, a FakeQuantize runs as
the float op it is: every value is put on its int8 grid exactly and the products are summed in f32, as VNNI's and
AMX's int32 sums do (up to float rounding). Per model and tool, the headline metric of the run (int8 kernels of the
CPU that ran it) beside the emulated one. Results go to benchmarks/results/emulated.{json,md}; --update-readme
writes the table into benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from benchmarks.compare import RESULTS, command_line, publish, save_run, tool_label

EMULATED = {"INFERENCE_PRECISION_HINT": "f32", "LP_TRANSFORMS_MODE": False}
TOOLS = ["nncf", "nncf_transformer", "ovptq"]


def emulated_row(row: dict) -> dict:
    """The run's row with, per tool, the headline metric evaluated on the emulated IR."""
    import openvino as ov

    from models import get_model
    spec, core = get_model(row["model"]), ov.Core()
    result = {"model": row["model"], "headline": row["headline"], "fp32": row["fp32"]["metrics"][row["headline"]]}
    for tool in (t for t in TOOLS if t in row and "xml" in row[t]):
        compiled = core.compile_model(row[tool]["xml"], "CPU", EMULATED)
        result[tool] = {"kernels": row[tool]["metrics"][row["headline"]],
                        "emulated": spec.evaluate(compiled)[row["headline"]]}
    return result


def within(value: float, fp32: float, margin: float) -> bool:
    return value >= fp32 - margin - 1e-9


def table(rows: list[dict]) -> list[str]:
    tools = [t for t in TOOLS if any(t in r for r in rows)]
    lines = ["| model | metric | FP32 | " + " | ".join(f"{tool_label(t)}: kernels / emulated" for t in tools) + " |",
             "|---|---|---|" + "---|" * len(tools)]
    for r in rows:
        cells = [f"{r[t]['kernels']:.4f} / **{r[t]['emulated']:.4f}**" if t == "ovptq" and t in r
                 else f"{r[t]['kernels']:.4f} / {r[t]['emulated']:.4f}" if t in r else "-" for t in tools]
        lines.append(f"| {r['model']} | {r['headline']} | {r['fp32']:.4f} | " + " | ".join(cells) + " |")
    done = [r for r in rows if "ovptq" in r]
    for margin in (0.01, 0.005):
        close = sum(within(r["ovptq"]["emulated"], r["fp32"], margin) for r in done)
        kernels = sum(within(r["ovptq"]["kernels"], r["fp32"], margin) for r in done)
        lines.append(f"\novptq within {margin} of FP32: {close} of {len(done)} emulated, {kernels} of {len(done)} on "
                     "this CPU's int8 kernels.")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=RESULTS / "corpus_models.json",
                        help="the JSON of a benchmarks.compare run, its IRs still on disk")
    parser.add_argument("--models", nargs="+", help="only these models of the run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--update-readme", action="store_true")
    args = parser.parse_args(argv)
    started, rows = time.time(), []
    for row in json.loads(args.run.read_text())["rows"]:
        if args.models and row["model"] not in args.models:
            continue
        rows.append(emulated_row(row))
        print("\n".join(table(rows[-1:])[2:3]), flush=True)
    publish(save_run(args.out, "emulated", command_line("benchmarks.emulated", argv), started, rows, table(rows)),
            "emulated", args.update_readme)
    return 0


if __name__ == "__main__":
    sys.exit(main())
