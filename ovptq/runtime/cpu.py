"""The CPU this process runs on, as speed decisions record it: its model name and the instruction sets that decide
how fast int8 and bf16 run, and the precision the CPU plugin runs an FP32 IR at there."""

from __future__ import annotations

from pathlib import Path

import openvino as ov

# /proc/cpuinfo flag -> its name in descriptions: what moves int8 (VNNI, AMX) and float (bf16, AVX-512) speed.
ISA_FLAGS = (("avx512_vnni", "AVX512-VNNI"), ("avx_vnni", "AVX-VNNI"), ("amx_int8", "AMX-INT8"),
             ("amx_bf16", "AMX-BF16"), ("avx512_bf16", "AVX512-BF16"), ("avx512f", "AVX512F"), ("avx2", "AVX2"))


def cpu_description() -> str:
    """CPU model name and its int8- and bf16-relevant instruction sets, e.g. "AMD EPYC (AVX512-VNNI, AVX2)"."""
    name, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and name == "unknown CPU":
                name = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    isa = [label for flag, label in ISA_FLAGS if flag in flags]
    return f"{name} ({', '.join(isa) or 'no AVX2, VNNI or AMX'})"


def default_precision(core: ov.Core | None = None, device: str = "CPU") -> str:
    """The inference precision the plugin runs an FP32 IR at when nothing is asked ("bf16", "f32", "f16")."""
    return (core or ov.Core()).get_property(device, "INFERENCE_PRECISION_HINT").get_type_name()
