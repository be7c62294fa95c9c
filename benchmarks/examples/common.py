"""What the examples share: their options, saving the two IRs, and the closing report.

The report prints one line per figure in a fixed form, which the smoke tests read:

    accuracy <metric>: FP32 <value>  INT8 <value>
    INT8 layers: <int8> of <linear> Convolution / MatMul layers run int8 on this CPU
    throughput FPS: FP32 <fps> (<precision>)  INT8 <fps>  ratio <median>x
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import openvino as ov

import ovptq
from ovptq.runtime.bench import Entry, compare, default_precision, format_report, fp32_entries, ratio

os.environ.setdefault("CI", "true")  # no OpenVINO telemetry from the examples (see models/README.md)


def arguments(doc: str, calibration: int, evaluation: int) -> argparse.Namespace:
    """The options every example takes; `doc` is the example's module docstring."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=doc)
    parser.add_argument("--calibration", type=int, default=calibration, help="calibration samples")
    parser.add_argument("--evaluation", type=int, default=evaluation, help="evaluation samples")
    parser.add_argument("--seconds", type=int, default=10, help="duration of each benchmark_app run (0: no timing)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating benchmark_app rounds")
    parser.add_argument("--no-speed-check", dest="speed_check", action="store_false",
                        help="keep every quantizer whatever the timing on this CPU (for another deployment CPU)")
    parser.add_argument("--out", type=Path, help="folder to keep model.xml and model_int8.xml in (default: a "
                                                 "temporary folder)")
    return parser.parse_args()


def advanced_parameters(args: argparse.Namespace) -> ovptq.AdvancedQuantizationParameters:
    return ovptq.AdvancedQuantizationParameters(speed_check=args.speed_check)


@contextmanager
def output_folder(out: Path | None) -> Iterator[Path]:
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        yield out
        return
    with tempfile.TemporaryDirectory() as folder:
        yield Path(folder)


def compile_f32(model: ov.Model | str | Path) -> ov.CompiledModel:
    """Compiled on the CPU at f32, so a CPU that runs FP32 models in bf16 by default scores FP32 as FP32 (the
    INT8 model's float parts run f32 too)."""
    return ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})


def report(fp32: ov.Model, int8: ov.Model, metric: str, fp32_value: float, int8_value: float,
           args: argparse.Namespace, shape: str | None = None) -> None:
    """Save both IRs, print the accuracy, the INT8 layers the CPU runs and the benchmark_app throughput.
    `shape` is benchmark_app's -shape for a model with dynamic inputs."""
    print(f"accuracy {metric}: FP32 {fp32_value:.4f}  INT8 {int8_value:.4f}")
    proof = ovptq.inspect(int8)
    kept = Counter(proof.kept_float.values())
    print(f"INT8 layers: {len(proof.int8_linear)} of {len(proof.linear)} Convolution / MatMul layers run int8 "
          f"on this CPU" + "".join(f"; {count} kept float by the {stage}" for stage, count in sorted(kept.items())))
    with output_folder(args.out) as folder:
        fp32_xml, int8_xml = folder / "model.xml", folder / "model_int8.xml"
        ov.save_model(fp32, fp32_xml, compress_to_fp16=False)
        ov.save_model(int8, int8_xml, compress_to_fp16=False)
        if args.out is not None:
            print(f"saved {fp32_xml} and {int8_xml}")
        if args.seconds <= 0:
            return
        references = fp32_entries(str(fp32_xml))
        quantized = Entry(str(int8_xml), label="INT8")
        results = compare([*references, quantized], rounds=args.rounds, seconds=args.seconds,
                          extra=["-shape", shape] if shape else None)
    print(format_report(results, [r.name for r in references]))
    default = references[0].name
    print(f"throughput FPS: FP32 {results[default].median('throughput_fps'):.1f} ({default_precision()})  "
          f"INT8 {results[quantized.name].median('throughput_fps'):.1f}  "
          f"ratio {ratio(results, quantized.name, default).median:.2f}x")
