"""The reproducibility contract: the same model, data, options and versions give a bit-identical IR (.xml and .bin)
in any process, beside a busy CPU too, safety-net searches included; with target_device="CPU" the speed check's
decisions are replayed from its record."""

import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent

# Quantize one case in this process and save the IR: argv = case, output .xml.
QUANTIZE = """
import sys
import numpy as np
sys.path.insert(0, {tests!r})
import builders, ovptq
from ovptq.files import save_model

case, out = sys.argv[1], sys.argv[2]
rng = np.random.default_rng(7)
if case == "residual_block, an outlier item":     # the safety net searches and ends without a repair
    model = builders.residual_block()
    data = [rng.standard_normal((1, 3, 16, 16)).astype(np.float32) * (30 if i == 3 else 1) for i in range(16)]
    int8 = ovptq.quantize(model, ovptq.Dataset(data))
elif case == "pre-norm transformer, outlier features":   # SmoothQuant, transformer rules, a longer search
    int8 = ovptq.quantize(builders.pre_norm_block(), ovptq.Dataset(builders.outlier_sequences(16)))
elif case == "depthwise block, target_device CPU":   # the speed check, its record shared by the runs
    int8 = ovptq.quantize(builders.depthwise_block(), ovptq.Dataset(builders.images(12)), target_device="CPU")
elif case == "residual block, error-feedback rounding":   # second moments summed from a pass of their own
    int8 = ovptq.quantize(builders.residual_block(), ovptq.Dataset(builders.images(20)),
                          advanced_parameters=ovptq.AdvancedQuantizationParameters(weight_rounding="error_feedback"))
save_model(int8, out)
"""

CASES = ["residual_block, an outlier item", "pre-norm transformer, outlier features",
         "depthwise block, target_device CPU", "residual block, error-feedback rounding"]


def quantized_in_a_process(case: str, out: Path, cache: Path) -> tuple[bytes, bytes]:
    env = {**__import__("os").environ, "OVPTQ_CACHE_DIR": str(cache), "OVPTQ_PROGRESS": "0"}
    subprocess.run([sys.executable, "-c", QUANTIZE.format(tests=str(TESTS)), case, str(out)], check=True, env=env,
                   capture_output=True)
    return out.read_bytes(), out.with_suffix(".bin").read_bytes()


@pytest.mark.parametrize("case", CASES)
def test_three_processes_one_beside_a_busy_cpu_write_one_ir(case, tmp_path):
    irs = []
    for run in range(3):
        busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)] if run == 1 else []
        try:
            irs.append(quantized_in_a_process(case, tmp_path / f"run{run}.xml", tmp_path / "cache"))
        finally:
            for process in busy:
                process.kill()
                process.wait()
    assert irs[0] == irs[1] == irs[2]
    assert b"FakeQuantize" in irs[0][0]
