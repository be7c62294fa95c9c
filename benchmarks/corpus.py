"""Run ovptq over the ONNX project's single-op test models: nothing may crash.

    python -m benchmarks.corpus                   # all of them (about 1300, a few minutes)
    python -m benchmarks.corpus --limit 100       # the first 100
    python -m benchmarks.corpus --update-readme   # also write the counts into benchmarks/README.md

The models are `onnx/backend/test/data/node/*/model.onnx` with their test inputs (`test_data_set_0/input_*.pb`),
read from the onnx 1.17.0 wheel (the last wheel that ships them), which is fetched once with `pip download` into
the model cache. For each model OpenVINO can read and that has a float input, ovptq quantizes it with its test
inputs as calibration data; the INT8 model must compile and run on CPU. Outcomes:
  quantized   FakeQuantize inserted; the INT8 output is compared with FP32 (relative L2 error)
  unchanged   no op ovptq quantizes (returned as it was, with a warning)
  refused     a clear ovptq.errors error (e.g. a dynamic-rank tensor on the path)
  crashed     anything else, or an INT8 model that does not compile or run: a bug
Models OpenVINO cannot read, whose FP32 form does not run on CPU, or without float inputs are counted apart.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import openvino as ov

WHEEL = "onnx==1.17.0"
CLOSE = 0.1  # relative L2 error of the INT8 output counted as close to FP32


def wheel_path() -> Path:
    from models import cache_dir
    folder = cache_dir() / "onnx-node-tests"
    found = sorted(folder.glob("onnx-1.17.0-*.whl"))
    if not found:
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", WHEEL, "-d", str(folder)], check=True)
        found = sorted(folder.glob("onnx-1.17.0-*.whl"))
    return found[0]


def node_tests(wheel: Path) -> dict[str, dict[str, bytes]]:
    """test name -> {"model.onnx": bytes, "input_0.pb": bytes, ...} (first test data set only)."""
    tests: dict[str, dict[str, bytes]] = {}
    prefix = "onnx/backend/test/data/node/"
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            if not name.startswith(prefix):
                continue
            test, _, rest = name[len(prefix):].partition("/")
            if rest == "model.onnx" or rest.startswith("test_data_set_0/input_"):
                tests.setdefault(test, {})[rest.rpartition("/")[2]] = archive.read(name)
    return dict(sorted(tests.items()))


def load_inputs(files: dict[str, bytes]) -> list[np.ndarray]:
    import onnx
    from onnx import numpy_helper
    arrays = []
    for index in range(len(files)):
        name = f"input_{index}.pb"
        if name not in files:
            break
        tensor = onnx.TensorProto()
        tensor.ParseFromString(files[name])
        arrays.append(numpy_helper.to_array(tensor))
    return arrays


def run_outputs(model: ov.Model, item: dict) -> list[np.ndarray]:
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    result = compiled(item)
    return [np.asarray(result[output]) for output in compiled.outputs]


def relative_error(reference: list[np.ndarray], got: list[np.ndarray]) -> float:
    """Relative L2 error over the float outputs' finite reference values (an output of -inf, as log(0), must
    simply be -inf in both)."""
    pairs = []
    for r, g in zip(reference, got):
        if r.dtype.kind != "f":
            continue
        r, g = r.astype(np.float64).ravel(), g.astype(np.float64).ravel()
        finite = np.isfinite(r)
        if not np.array_equal(r[~finite], g[~finite]):
            return float("inf")
        pairs.append((r[finite], g[finite]))
    if not pairs:
        return 0.0
    diff = sum(float(np.sum((r - g) ** 2)) for r, g in pairs)
    norm = sum(float(np.sum(r ** 2)) for r, _ in pairs)
    return float(np.sqrt(diff / norm)) if norm > 0 else float(np.sqrt(diff))


def check(name: str, files: dict[str, bytes], workdir: Path) -> dict:
    import ovptq
    path = workdir / f"{name}.onnx"
    path.write_bytes(files["model.onnx"])
    try:
        model = ov.Core().read_model(str(path))
    except Exception as error:  # OpenVINO's ONNX frontend does not support the op or opset
        return {"outcome": "unreadable", "detail": str(error).splitlines()[-1][:200]}
    try:
        arrays = load_inputs(files)
    except Exception as error:  # sequence / optional / map inputs are not plain tensors
        return {"outcome": "no float input", "detail": f"test inputs are not plain tensors: {error}"[:200]}
    inputs = model.inputs
    if len(arrays) != len(inputs) or not any(a.dtype.kind == "f" for a in arrays):
        return {"outcome": "no float input"}
    item = {port.get_any_name(): array for port, array in zip(inputs, arrays)}
    try:
        reference = run_outputs(model, item)
    except Exception as error:
        return {"outcome": "fp32 does not run", "detail": str(error).splitlines()[-1][:200]}
    try:
        int8 = ovptq.quantize(model, ovptq.Dataset([item, item]), subset_size=2,
                              advanced_parameters=ovptq.AdvancedQuantizationParameters(show_progress=False))
    except ovptq.errors.OvptqError as error:
        return {"outcome": "refused", "error": type(error).__name__, "detail": str(error)[:300]}
    except Exception:
        return {"outcome": "crashed", "detail": traceback.format_exc()[-1500:]}
    quantized = any(op.get_type_name() == "FakeQuantize" for op in int8.get_ordered_ops())
    try:
        got = run_outputs(int8, item)
    except Exception:
        return {"outcome": "crashed", "detail": "INT8 model does not run: " + traceback.format_exc()[-1200:]}
    if not quantized:
        return {"outcome": "unchanged"}
    return {"outcome": "quantized", "relative_error": relative_error(reference, got)}


def summary(results: dict[str, dict]) -> list[str]:
    counts = Counter(r["outcome"] for r in results.values())
    quantized = [r["relative_error"] for r in results.values() if r["outcome"] == "quantized"]
    close = sum(e <= CLOSE for e in quantized)
    lines = ["| outcome | models |", "|---|---|"]
    for outcome in ("quantized", "unchanged", "refused", "crashed", "unreadable", "fp32 does not run",
                    "no float input"):
        lines.append(f"| {outcome} | {counts.get(outcome, 0)} |")
    lines.append(f"| total | {len(results)} |")
    if quantized:
        lines += ["", f"Quantized models whose INT8 output is within {CLOSE:.0%} (relative L2) of FP32: {close} of "
                  f"{len(quantized)}; median error {np.median(quantized):.4f}."]
    worst = sorted(((r["relative_error"], n) for n, r in results.items() if r["outcome"] == "quantized"),
                   reverse=True)[:5]
    if worst:
        lines.append("Largest errors: " + ", ".join(f"{n} {e:.3f}" for e, n in worst) + ".")
    refused = Counter(r["error"] for r in results.values() if r["outcome"] == "refused")
    if refused:
        lines.append("Refusals: " + ", ".join(f"{k} x{v}" for k, v in sorted(refused.items())) + ".")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--update-readme", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("CI", "true")
    logging.getLogger("ovptq").setLevel(logging.ERROR)  # "no op to quantize" warnings are expected here
    tests = node_tests(wheel_path())
    names = list(tests)[:args.limit] if args.limit else list(tests)
    started = time.time()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for index, name in enumerate(names):
            results[name] = check(name, tests[name], Path(tmp))
            if results[name]["outcome"] == "crashed":
                print(f"CRASH {name}: {results[name]['detail']}", flush=True)
            if (index + 1) % 100 == 0:
                print(f"{index + 1} / {len(names)}", flush=True)
    from benchmarks.benchmark_app import cpu_description
    from benchmarks.compare import command_line, publish
    markdown = [f"Machine: {cpu_description()}. Command: `{command_line('benchmarks.corpus', argv)}` "
                f"({(time.time() - started) / 60:.0f} min), ONNX node tests of {WHEEL}, "
                f"OpenVINO {ov.get_version().split('-')[0]}.", "",
                *summary(results)]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "corpus.json").write_text(json.dumps(results, indent=1))
    (args.out / "corpus.md").write_text("\n".join(markdown) + "\n")
    publish(markdown, "corpus", args.update_readme)
    return 1 if any(r["outcome"] == "crashed" for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
