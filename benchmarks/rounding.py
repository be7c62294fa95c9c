"""Weight rounding: ovptq's default call with nearest rounding against `weight_rounding="error_feedback"`, on the
corpus models, in one process.

    python -m benchmarks.rounding                              # every corpus model (about 15 min on 2 cores)
    python -m benchmarks.rounding --models ppocrv5_rec ppocr_rec
    python -m benchmarks.rounding --update-readme              # and fill the block in benchmarks/README.md

Per model and rounding: the headline metric on this CPU's int8 kernels and with the quantizers emulated in float
(what a CPU with VNNI or AMX computes), the output SQNR against FP32 (emulated, 32 calibration items the statistics
saw but the rounding did not), and the quantize() wall time.
"""

from __future__ import annotations

import sys
import time

import openvino as ov

import ovptq
from benchmarks.compare import calibration_folder, corpus_models, per_model_run
from benchmarks.worker import DiskItems
from models import get_model
from ovptq.measuring.measure import EMULATED, bind, output_sqnr, run

F32 = {"INFERENCE_PRECISION_HINT": "f32"}
ROUNDINGS = ("nearest", "error_feedback")


def emulated_sqnr(core: ov.Core, fp32: ov.Model, int8: ov.Model, dataset: ovptq.Dataset, first: int = 100,
                  count: int = 32) -> float:
    """The SQNR over every output (`output_sqnr`), INT8 emulated, on feeds first..first+count."""
    feeds = bind(dataset, fp32, first + count, "benchmark")[first:]
    return output_sqnr(run(core, fp32, feeds), run(core, int8, feeds, emulated=True))


def measure(name: str, subset: int) -> dict:
    core = ov.Core()
    spec = get_model(name)
    fp32 = core.read_model(str(spec.xml_path()))
    dataset = ovptq.Dataset(DiskItems(calibration_folder(spec, subset)))
    row = {"model": name, "headline": spec.headline, "fp32": spec.evaluate(fp32)[spec.headline]}
    for rounding in ROUNDINGS:
        started = time.perf_counter()
        int8 = ovptq.quantize(fp32, dataset, subset_size=subset, model_type=spec.model_type,
                              advanced_parameters=ovptq.AdvancedQuantizationParameters(weight_rounding=rounding))
        seconds = time.perf_counter() - started
        row[rounding] = {"seconds": seconds, "sqnr_db": emulated_sqnr(core, fp32, int8, dataset),
                         "metric": spec.evaluate(core.compile_model(int8, "CPU", F32))[spec.headline],
                         "metric_emulated": spec.evaluate(core.compile_model(int8, "CPU", {**F32, **EMULATED}))[
                             spec.headline]}
    return row


def table(rows: list[dict]) -> list[str]:
    lines = ["| model | metric | FP32 | nearest: int8 kernels / emulated | error feedback: int8 kernels / emulated "
             "| output SQNR dB nearest / error feedback | quantize s nearest / error feedback |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        n, e = r["nearest"], r["error_feedback"]
        lines.append(f"| {r['model']} | {r['headline']} | {r['fp32']:.4f} "
                     f"| {n['metric']:.4f} / {n['metric_emulated']:.4f} "
                     f"| {e['metric']:.4f} / {e['metric_emulated']:.4f} | {n['sqnr_db']:.1f} / {e['sqnr_db']:.1f} "
                     f"| {n['seconds']:.1f} / {e['seconds']:.1f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    return per_model_run("rounding", __doc__.splitlines()[0], measure, table, corpus_models, argv)


if __name__ == "__main__":
    sys.exit(main())
