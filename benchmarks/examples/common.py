"""What the examples share: their options, NNCF beside ovptq (--nncf), saving the IRs, and the closing report.

The report prints one line per figure in a fixed form, which the smoke tests read:

    accuracy <metric>: FP32 <value>  INT8 <value>
    INT8 layers: <int8> of <linear> Convolution / MatMul layers run int8 on this CPU
    throughput FPS: FP32 <fps> (<precision>)  INT8 <fps>  ratio <median>x

With --nncf, lines starting "NNCF" give the same figures for NNCF's INT8 model.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import tempfile
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator

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
    parser.add_argument("--target-device", choices=["ANY", "CPU"], default="ANY",
                        help="ANY (default): an IR for any CPU; CPU: for this CPU (the speed check gives back to "
                             "float the layers slower in int8 here)")
    parser.add_argument("--nncf", action="store_true",
                        help="also quantize with NNCF's default call on the same data and report it beside ovptq")
    parser.add_argument("--out", type=Path, help="folder to keep model.xml and model_int8.xml in (default: a "
                                                 "temporary folder)")
    args = parser.parse_args()
    show_summary()
    return args


def show_summary() -> None:
    """ovptq's one-line summary of each quantize call on stderr, and its warnings; nothing else it logs."""
    logging.basicConfig(format="%(name)s: %(message)s")
    logging.getLogger("ovptq.summary").setLevel(logging.INFO)


def nncf_int8(args: argparse.Namespace, fp32: ov.Model, data_source: Iterable, transform_fn: Callable,
              subset_size: int) -> ov.Model | None:
    """With --nncf, NNCF's default call on the same model and data (NNCF is a benchmark peer, not a dependency)."""
    if not args.nncf:
        return None
    import nncf

    try:
        len(data_source)
    except TypeError:  # NNCF 3.4 stops on a source whose len() raises, as a tf.data.Dataset of unknown length does
        print("NNCF: the data source has no length (NNCF raises TypeError on it); NNCF gets its items as a list")
        data_source = list(itertools.islice(data_source, subset_size))
    return nncf.quantize(fp32.clone(), nncf.Dataset(data_source, transform_fn), subset_size=subset_size)


@contextmanager
def output_folder(out: Path | None) -> Iterator[Path]:
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        yield out
        return
    with tempfile.TemporaryDirectory() as folder:
        yield Path(folder)


def int8_layers(model: ov.Model) -> str:
    proof = ovptq.inspect(model)
    kept = Counter(proof.kept_float.values())
    return (f"{len(proof.int8_linear)} of {len(proof.linear)} Convolution / MatMul layers run int8 on this CPU"
            + "".join(f"; {count} kept float by the {stage}" for stage, count in sorted(kept.items())))


def report(fp32: ov.Model, int8: ov.Model, metric: str, evaluate: Callable[[ov.Model], float],
           args: argparse.Namespace, shape: str | None = None, peer: ov.Model | None = None) -> None:
    """Save the IRs, print `evaluate` of each model, the INT8 layers the CPU runs and the benchmark_app throughput
    (the FP32 IR at the default precision and the other of bf16 / f32). `shape` is benchmark_app's -shape for a
    model with dynamic inputs; `peer` is NNCF's INT8 model, reported on lines of its own."""
    print(f"accuracy {metric}: FP32 {evaluate(fp32):.4f}  INT8 {evaluate(int8):.4f}")
    print(f"INT8 layers: {int8_layers(int8)}")
    if peer is not None:
        print(f"NNCF accuracy {metric}: INT8 {evaluate(peer):.4f}\nNNCF INT8 layers: {int8_layers(peer)}")
    with output_folder(args.out) as folder:
        models = {"model.xml": fp32, "model_int8.xml": int8, **({"model_nncf_int8.xml": peer} if peer else {})}
        for name, model in models.items():
            ov.save_model(model, folder / name, compress_to_fp16=False)
        if args.out is not None:
            print(f"saved {', '.join(str(folder / name) for name in models)}")
        if args.seconds <= 0:
            return
        references = fp32_entries(str(folder / "model.xml"))
        entries = [Entry(str(folder / "model_int8.xml"), label="INT8")]
        if peer is not None:
            entries.append(Entry(str(folder / "model_nncf_int8.xml"), label="NNCF INT8"))
        results = compare([*references, *entries], rounds=args.rounds, seconds=args.seconds,
                          extra=["-shape", shape] if shape else None)
    print(format_report(results, [r.name for r in references]))
    default = references[0].name
    fps = {name: results[name].median("throughput_fps") for name in results}
    print(f"throughput FPS: FP32 {fps[default]:.1f} ({default_precision()})  INT8 {fps['INT8']:.1f}  "
          f"ratio {ratio(results, 'INT8', default).median:.2f}x")
    if peer is not None:
        print(f"NNCF throughput FPS: INT8 {fps['NNCF INT8']:.1f}  "
              f"ratio {ratio(results, 'NNCF INT8', default).median:.2f}x  "
              f"(ovptq / NNCF {ratio(results, 'INT8', 'NNCF INT8').median:.2f}x)")
