"""benchmark_app smoke runs: slow (a few seconds each, timing-bound), so they run only with `pytest --slow`."""

import builders
import numpy as np
import openvino as ov
import pytest

import ovptq
from test_cli import fp32_ir, ovptq_command  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow


def test_benchmark_app_runs_the_saved_int8_ir(tmp_path):
    from benchmarks.benchmark_app import run_once
    int8 = ovptq.quantize(builders.residual_block(), ovptq.Dataset(builders.images(8)))
    ov.save_model(int8, tmp_path / "int8.xml")
    result = run_once(tmp_path / "int8.xml", "latency", seconds=1)
    assert result["throughput_fps"] > 0 and result["latency_median_ms"] > 0


def test_bench_runs_benchmark_app_on_what_quantize_wrote(tmp_path, fp32_ir):  # noqa: F811
    int8 = tmp_path / "int8.xml"
    np.save(tmp_path / "data.npy", np.concatenate(builders.images(4)))
    assert ovptq_command("quantize", fp32_ir, "--data", tmp_path / "data.npy", "-o", int8).returncode == 0
    done = ovptq_command("bench", fp32_ir, int8, "--rounds", "1", "--seconds", "1", "--layers")
    assert done.returncode == 0, done.stderr
    assert "FP32 @ default (" in done.stdout and "int8.xml" in done.stdout and "CPU:" in done.stdout
    assert "default inference precision" in done.stdout and "outside int8 Conv/MatMul" in done.stdout
