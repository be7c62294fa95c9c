"""How much one layer's rounding moves a model's output error: the default INT8 model (safety net off), then the
same model with one layer's int8 weights taken from the overflow fix's 7-bit grid (its other layers unchanged),
layer by layer, on the corpus models, in one process.

    python -m benchmarks.sensitivity --models ppocrv5_rec ppocr_rec ppocr_cls
    python -m benchmarks.sensitivity --update-readme           # and fill the block in benchmarks/README.md

A 7-bit grid moves each weight by at most one 8-bit step; the layer keeps its FP32 bias (bias correction is undone
for it), so the same variants with only the bias correction undone are measured too. Per model: the output SQNR
against FP32 (emulated, 32 calibration items the statistics saw) of the default model, and the lowest, median and
highest over each kind of one-layer variant, with how many read more than 1 dB above the default. A model whose
variants spread wide has an error that is a draw of its roundings, not the work of one layer: no quantizer stands
out for the safety net, and any method that re-rounds is judged on how wide that draw is.
"""

from __future__ import annotations

import sys

import numpy as np
import openvino as ov

import ovptq
from benchmarks.compare import calibration_folder, per_model_run
from benchmarks.worker import DiskItems
from models import get_model
from ovptq.measuring.measure import bind, output_sqnr, run
from ovptq.measuring.trial import PlanChange, built, changed
from ovptq.quantize import quantized_state

GAIN_DB = 1.0


def measure(name: str, subset: int) -> dict:
    core = ov.Core()
    spec = get_model(name)
    fp32 = core.read_model(str(spec.xml_path()))
    dataset = ovptq.Dataset(DiskItems(calibration_folder(spec, subset)))

    def state(overflow_fix: str):
        parameters = ovptq.AdvancedQuantizationParameters(safety_net=False, overflow_fix=overflow_fix)
        return quantized_state(fp32, dataset, subset_size=subset, model_type=spec.model_type,
                               advanced_parameters=parameters)

    default, coarse = state("first_layer"), state("enable")
    feeds = bind(dataset, fp32, 132, "benchmark")[100:]
    reference = run(core, fp32, feeds)

    def sqnr(model: ov.Model) -> float:
        return output_sqnr(reference, run(core, model, feeds, emulated=True))

    base = sqnr(default.result)
    layers = [w.node for w in default.plan.weights if not w.half_range and w.node in coarse.weights]

    def spread(source) -> dict:
        variants = [sqnr(built(changed(default, PlanChange(requantized={node: source.weights[node]}))).result)
                    for node in layers]
        return {"min_db": float(np.min(variants)), "median_db": float(np.median(variants)),
                "max_db": float(np.max(variants)), "above": int(sum(v > base + GAIN_DB for v in variants)),
                "best_layer": layers[int(np.argmax(variants))]}

    return {"model": name, "default_db": base, "layers": len(layers), "fp32_bias": spread(default),
            "re_rounded": spread(coarse)}


def table(rows: list[dict]) -> list[str]:
    lines = ["| model | output SQNR dB, default | one layer's bias correction undone: lowest / median / highest "
             f"(above default + {GAIN_DB:g} dB) | one layer re-rounded, its bias correction undone: lowest / median / "
             "highest (above) |", "|---|---|---|---|"]

    def cells(s: dict, layers: int) -> str:
        return f"{s['min_db']:.1f} / {s['median_db']:.1f} / {s['max_db']:.1f} ({s['above']} of {layers})"

    lines += [f"| {r['model']} | {r['default_db']:.1f} | {cells(r['fp32_bias'], r['layers'])} "
              f"| {cells(r['re_rounded'], r['layers'])} |" for r in rows]
    return lines


def main(argv: list[str] | None = None) -> int:
    return per_model_run("sensitivity", __doc__.splitlines()[0], measure, table,
                         ["ppocrv5_rec", "ppocr_rec", "ppocr_cls"], argv)


if __name__ == "__main__":
    sys.exit(main())
