"""The CPU this process runs on, as speed decisions record it: its model name and the instruction sets that decide
how fast int8 and bf16 run, and the precision the CPU plugin runs an FP32 IR at there."""

from __future__ import annotations

from pathlib import Path

import openvino as ov

# /proc/cpuinfo flag -> its name in descriptions: what moves int8 (VNNI, AMX) and float (bf16, AVX-512) speed.
ISA_FLAGS = (("avx512_vnni", "AVX512-VNNI"), ("avx_vnni", "AVX-VNNI"), ("amx_int8", "AMX-INT8"),
             ("amx_bf16", "AMX-BF16"), ("avx512_bf16", "AVX512-BF16"), ("avx512f", "AVX512F"), ("avx2", "AVX2"))


# x86 int8 instructions that add u8 x i8 products in 32 bits; without one of them (AVX2's vpmaddubsw) the CPU
# plugin's int8 kernels add each pair of products in 16 bits, which saturates: 2 x 255 x 127 > 32767.
INT8_DOT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


def _cpu_info() -> tuple[str, set[str]]:
    """(model name, /proc/cpuinfo flags) of this CPU; ("unknown CPU", empty) where /proc/cpuinfo is not readable."""
    name, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and name == "unknown CPU":
                name = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return name, flags


def cpu_description() -> str:
    """CPU model name and its int8- and bf16-relevant instruction sets, e.g. "AMD EPYC (AVX512-VNNI, AVX2)"."""
    name, flags = _cpu_info()
    isa = [label for flag, label in ISA_FLAGS if flag in flags]
    return f"{name} ({', '.join(isa) or 'no AVX2, VNNI or AMX'})"


def int8_sums_saturate() -> bool:
    """Whether this CPU's int8 kernels add pairs of u8 x i8 products in 16 bits: an x86 CPU with AVX2 and none of
    `INT8_DOT_FLAGS`. False where the flags cannot be read (no decision is taken from an unknown CPU)."""
    _, flags = _cpu_info()
    return "avx2" in flags and not flags & INT8_DOT_FLAGS


def default_precision(core: ov.Core | None = None, device: str = "CPU") -> str:
    """The inference precision the plugin runs an FP32 IR at when nothing is asked ("bf16", "f32", "f16")."""
    return (core or ov.Core()).get_property(device, "INFERENCE_PRECISION_HINT").get_type_name()
