"""The `ovptq` command, run as a user would: as a subprocess, on files."""

import json
import subprocess
import sys
from pathlib import Path

import builders
import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest

import ovptq

ENV_OVERRIDES = {"CI": "true", "OVPTQ_PROGRESS": "0"}


def ovptq_command(*args, cwd=None):
    import os
    env = {**os.environ, **ENV_OVERRIDES}
    return subprocess.run([sys.executable, "-m", "ovptq.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


@pytest.fixture
def fp32_ir(tmp_path):
    path = tmp_path / "model.xml"
    ov.save_model(builders.conv_relu(), path, compress_to_fp16=False)
    return path


def inspect_json(path):
    done = ovptq_command("inspect", path, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_quantize_an_image_folder_and_inspect_the_result(tmp_path, fp32_ir):
    from PIL import Image
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    out = tmp_path / "int8.xml"
    done = ovptq_command("quantize", fp32_ir, "--data", folder, "-o", out, "--mean", "127", "127", "127",
                         "--scale", "64", "64", "64")
    assert done.returncode == 0, done.stderr
    assert out.exists() and out.with_suffix(".bin").exists()
    report = inspect_json(out)
    assert report["verdict"].startswith("INT8: all 2") and report["coverage"] == 1.0
    assert ov.Core().read_model(out).get_rt_info(["ovptq", "quantization", "samples_used"]).astype(str) == "6"


def test_quantize_a_npy_file_and_a_module_function(tmp_path, fp32_ir):
    np.save(tmp_path / "data.npy", np.concatenate(builders.images(5)))
    done = ovptq_command("quantize", fp32_ir, "--data", tmp_path / "data.npy", "-o", tmp_path / "a.xml",
                         "--no-bias-correction", "--preset", "mixed")
    assert done.returncode == 0, done.stderr
    (tmp_path / "calibration.py").write_text(
        "import numpy as np\n\n"
        "def samples():\n    return (np.ones((1, 3, 16, 16), np.float32) * i for i in range(4))\n")
    done = ovptq_command("quantize", fp32_ir, "--data", "calibration:samples", "-o", tmp_path / "b.xml",
                         cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert inspect_json(tmp_path / "a.xml")["coverage"] == inspect_json(tmp_path / "b.xml")["coverage"] == 1.0
    preset = ov.Core().read_model(tmp_path / "a.xml").get_rt_info(["ovptq", "quantization", "preset"]).astype(str)
    assert preset == "mixed"


def test_errors_exit_non_zero_with_the_message_and_write_nothing(tmp_path, fp32_ir):
    done = ovptq_command("quantize", tmp_path / "missing.xml", "--data", tmp_path, "-o", tmp_path / "o.xml")
    assert done.returncode == 1 and "error: " in done.stderr and "does not exist" in done.stderr
    np.save(tmp_path / "bad.npy", np.zeros((2, 3, 5, 5), np.float32))
    done = ovptq_command("quantize", fp32_ir, "--data", tmp_path / "bad.npy", "-o", tmp_path / "o.xml")
    assert done.returncode == 1 and "expects shape [1,3,16,16]" in done.stderr
    assert not list(tmp_path.glob("o.*")) and not list(tmp_path.glob(".o-*"))
    done = ovptq_command("quantize", fp32_ir, "-o", tmp_path / "o.xml")
    assert done.returncode == 2 and "--data" in done.stderr


def test_inspect_verdicts_fp32_and_a_broken_placement(tmp_path, fp32_ir):
    assert inspect_json(fp32_ir)["verdict"].startswith("FLOAT")
    int8 = ovptq.quantize(builders.conv_relu(), ovptq.Dataset(builders.images(4)))
    fq = next(op for op in int8.get_ordered_ops() if op.get_friendly_name() == "relu1/fq_output_0")
    per_channel = np.linspace(1, 4, 8, dtype=np.float32).reshape(1, 8, 1, 1)  # per-channel activation ranges
    for port, value in ((1, 0 * per_channel), (2, per_channel), (3, 0 * per_channel), (4, per_channel)):
        fq.input(port).replace_source_output(ops.constant(value).output(0))
    ov.save_model(int8, tmp_path / "broken.xml")
    report = inspect_json(tmp_path / "broken.xml")
    assert report["verdict"].startswith("PARTIAL INT8")
    assert report["float_linear"] == ["conv2"]  # the per-channel FakeQuantize cost conv2 its int8 kernel
    done = ovptq_command("inspect", tmp_path / "broken.xml", "--layers")
    assert done.returncode == 0 and "hint: " in done.stdout and "Convolution" in done.stdout


def test_the_console_script_is_installed():
    script = Path(sys.executable).parent / "ovptq"
    assert script.exists()
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "quantize" in done.stdout


def test_output_piped_into_a_command_that_stops_reading_ends_quietly(tmp_path, fp32_ir):
    command = f"{sys.executable} -m ovptq.cli inspect {fp32_ir} --layers | head -1"
    done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, **ENV_OVERRIDES})
    assert done.returncode == 0 and len(done.stdout.splitlines()) == 1
    assert "BrokenPipeError" not in done.stderr and "Traceback" not in done.stderr


def test_a_model_the_speed_check_gives_back_whole_is_said_on_the_last_line_and_by_inspect(tmp_path, fp32_ir,
                                                                                          monkeypatch):
    """The speed check's decision for this CPU, recorded in a first run (planted times: INT8 slower as a whole), is
    replayed by the command in another process, which says so on its last line; inspect says it too."""
    from test_speed_check import planted

    from ovptq.measuring import speed_check
    data = np.concatenate(builders.images(6))
    np.save(tmp_path / "data.npy", data)
    monkeypatch.setenv("OVPTQ_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(speed_check, "Profiler", planted({"conv1": {True: 1.1, False: 1.0},
                                                          "conv2": {True: 1.1, False: 1.0}}))
    items = [data[i:i + 1] for i in range(len(data))]   # what the command makes of data.npy
    first = ovptq.quantize(ov.Core().read_model(fp32_ir), ovptq.Dataset(items), target_device="CPU")
    assert not ovptq.inspect(first).int8_linear
    ENV_OVERRIDES["OVPTQ_CACHE_DIR"] = str(tmp_path / "cache")
    try:
        done = ovptq_command("quantize", fp32_ir, "--data", tmp_path / "data.npy", "-o", tmp_path / "cpu.xml",
                             "--target-device", "CPU")
    finally:
        del ENV_OVERRIDES["OVPTQ_CACHE_DIR"]
    assert done.returncode == 0, done.stderr
    last = done.stdout.strip().splitlines()[-1]
    assert "NO INT8 LAYER" in last and "--target-device ANY" in last
    report = inspect_json(tmp_path / "cpu.xml")
    assert report["verdict"].startswith("FLOAT: the speed check gave every layer back")
    assert not any("Reorders" in hint for hint in report["hints"])


@pytest.mark.parametrize("content, said", [
    (None, "is not a plain NumPy array file: numpy reads it as pickled Python objects"),   # np.save of objects
    (b"\x93NUMPY\x20\x67garbage", "is not a NumPy file numpy can read: we only support format version"),
])
def test_a_data_file_numpy_cannot_read_is_one_line_naming_it_and_exit_code_1(tmp_path, fp32_ir, content, said):
    data = tmp_path / "data.npy"
    if content is None:
        np.save(data, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    else:
        data.write_bytes(content)
    done = ovptq_command("quantize", fp32_ir, "--data", data, "-o", tmp_path / "o.xml")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith(f"error: {data} {said}")
    assert not list(tmp_path.glob("o.*"))


def test_paths_that_are_missing_or_the_weights_file_say_so(tmp_path, fp32_ir):
    done = ovptq_command("quantize", fp32_ir, "--data", tmp_path / "nothere.npy", "-o", tmp_path / "o.xml")
    assert done.returncode == 1 and f"--data '{tmp_path / 'nothere.npy'}': no such file or folder" in done.stderr
    done = ovptq_command("quantize", fp32_ir.with_suffix(".bin"), "--data", tmp_path / "x.npy",
                         "-o", tmp_path / "o.xml")
    assert done.returncode == 1 and "is the weights file of an IR: pass its .xml" in done.stderr
    assert "Traceback" not in done.stderr and "tensorflow" not in done.stderr.lower()
    done = ovptq_command("bench", tmp_path / "missing.xml", fp32_ir)
    missing = tmp_path / "missing.xml"
    assert done.returncode == 1 and done.stderr.strip() == f"error: Model file '{missing}' does not exist."


@pytest.mark.parametrize("args", [("quantize", "{ir}", "--data", "{ir}", "-o", "o.xml", "--subset-size", "0"),
                                  ("quantize", "{ir}", "--data", "{ir}", "-o", "o.xml", "--subset-size", "-5"),
                                  ("bench", "{ir}", "{ir}", "--rounds", "0"),
                                  ("report", "{ir}", "{ir}", "--data", "{ir}", "--samples", "zero")])
def test_counts_below_one_are_usage_errors_with_exit_code_2(tmp_path, fp32_ir, args):
    done = ovptq_command(*(a.format(ir=fp32_ir) for a in args), cwd=tmp_path)
    assert "must be 1 or more" in done.stderr or "is not an integer" in done.stderr
    assert done.returncode == 2 and "usage: ovptq" in done.stderr


def test_help_shows_the_defaults():
    done = ovptq_command("bench", "--help")
    assert "(default: 4)" in done.stdout and "(default: 10)" in done.stdout
    assert "(default: 300)" in ovptq_command("quantize", "--help").stdout


def test_an_int8_model_with_an_unfused_input_quantizer_gets_a_verdict_that_agrees_with_its_counts():
    from ovptq.runtime.inspect import Int8Report
    from ovptq.runtime.layers import RuntimeLayer

    def conv(name):
        return RuntimeLayer(name, "Convolution", "U8", "brgconv_avx2_I8", (name,), ir_name=name)
    fq = RuntimeLayer("x/fq", "FakeQuantize", "FP32", "jit_avx2_FP32", ("x/fq",))
    report = Int8Report([conv("a"), conv("b"), fq], 2, made_by_ovptq=True, input_quantizers=frozenset({"x/fq"}),
                        sums_saturate=False)
    assert str(report).startswith("INT8 coverage: 2/2")
    assert report.verdict() == ("INT8: all 2 Convolution / FullyConnected / MatMul layers run int8 kernels; "
                                "1 FakeQuantize runs as a separate float layer.")
    assert report.hints() == ["1 FakeQuantize on a model input runs as its own layer: it turns the float input into "
                              "the int8 grid, one element-wise pass over the input per inference, before the first "
                              "int8 layer."]
    inner = RuntimeLayer("y/fq", "FakeQuantize", "FP32", "jit_avx2_FP32", ("y/fq",))
    made_by_ovptq = Int8Report([conv("a"), inner], 2, made_by_ovptq=True, sums_saturate=False).hints()
    made_elsewhere = Int8Report([conv("a"), inner], 2, made_by_ovptq=False, sums_saturate=False).hints()
    assert "re-quantize with ovptq" not in made_by_ovptq[0] and "re-quantize with ovptq" in made_elsewhere[0]


def test_bench_names_a_run_too_short_to_judge_and_an_ir_that_is_the_same_network(tmp_path, fp32_ir):
    from ovptq.runtime import bench
    results = {"FP32 @ default (f32)": bench.Measurement([100.0]), "int8.xml": bench.Measurement([137.0])}
    report = bench.format_report(results, ["FP32 @ default (f32)"])
    assert "1 round; a ratio of one round has no spread" in report and "1 alternating rounds" not in report
    assert "note: 1 round cannot tell a speed-up from this machine's noise" in report
    noisy = {"FP32 @ default (f32)": bench.Measurement([100.0, 100.0, 100.0]),
             "int8.xml": bench.Measurement([95.0, 104.0, 101.0])}
    assert "1.01x (0.95-1.04) ~" in bench.format_report(noisy, ["FP32 @ default (f32)"])
    copy = tmp_path / "copy.xml"
    ov.save_model(ov.Core().read_model(fp32_ir), copy, compress_to_fp16=False)
    int8 = tmp_path / "int8.xml"
    ov.save_model(ovptq.quantize(builders.conv_relu(), ovptq.Dataset(builders.images(4))), int8)
    notes = bench.network_notes([str(fp32_ir), str(copy), str(int8)])
    assert notes == [f"note: {copy} is the same network as {fp32_ir} (same ops, shapes and constants): any "
                     "difference between them is noise."]
