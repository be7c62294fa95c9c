"""Run OpenVINO's `benchmark_app` on an FP32 IR and INT8 IRs, alternately, and report the speed-up.

    ovptq bench fp32.xml int8.xml [more.xml ...] [--rounds 3] [--seconds 10] [--shape ...]

Each round runs every IR once with the throughput hint and once with the latency hint; the reported figure is
the median over rounds, so a noisy neighbour on a shared machine hurts all IRs alike. INT8 gains depend on the
CPU's instruction set (VNNI, AMX), which the report names.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path


def benchmark_app_command() -> str:
    """The benchmark_app beside this Python (pip installs it with openvino), else the one on PATH."""
    local = Path(sys.executable).parent / "benchmark_app"
    found = str(local) if local.exists() else shutil.which("benchmark_app")
    if found is None:
        raise FileNotFoundError("benchmark_app not found: pip install openvino (it ships the command).")
    return found


def cpu_description() -> str:
    """CPU model name and the INT8-relevant instruction sets."""
    name, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and name == "unknown CPU":
                name = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    isa = [label for flag, label in (("avx512_vnni", "AVX512-VNNI"), ("avx_vnni", "AVX-VNNI"),
                                     ("amx_int8", "AMX-INT8"), ("avx512_bf16", "AVX512-BF16"), ("avx2", "AVX2"))
           if flag in flags]
    return f"{name} ({', '.join(isa) or 'no VNNI/AMX'})"


@dataclass
class Measurement:
    throughput_fps: list[float] = field(default_factory=list)
    latency_median_ms: list[float] = field(default_factory=list)
    latency_max_ms: list[float] = field(default_factory=list)

    def median(self, name: str) -> float:
        values = getattr(self, name)
        return statistics.median(values) if values else float("nan")


def run_once(xml: str | Path, hint: str, seconds: int, extra: list[str] | None = None) -> dict[str, float]:
    """One benchmark_app run; returns throughput (FPS) and latency median / max (ms)."""
    command = [benchmark_app_command(), "-m", str(xml), "-d", "CPU", "-hint", hint, "-t", str(seconds),
               *(extra or [])]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return {"throughput_fps": _number(r"Throughput:\s+([\d.]+)\s*FPS", output),
            "latency_median_ms": _milliseconds("Median", output),
            "latency_max_ms": _milliseconds("Max", output)}


def _number(pattern: str, text: str) -> float:
    match = re.search(pattern, text)
    return float(match.group(1)) if match else float("nan")


def _milliseconds(label: str, text: str) -> float:
    """A latency line of the report ('Median:  3.21 ms', or in us for tiny models) in milliseconds."""
    match = re.search(rf"{label}:\s+([\d.]+)\s*(ms|us)", text)
    if not match:
        return float("nan")
    return float(match.group(1)) / (1000 if match.group(2) == "us" else 1)


def compare(xmls: list[str | Path], rounds: int = 3, seconds: int = 10,
            extra: list[str] | None = None) -> dict[str, Measurement]:
    """Throughput (throughput hint) and latency (latency hint) of each IR, alternating IRs within each round.
    `extra` goes to every benchmark_app call (e.g. ["-shape", "input_ids[1,128]"] for dynamic inputs)."""
    results = {str(x): Measurement() for x in xmls}
    for _ in range(rounds):
        for xml in xmls:
            throughput = run_once(xml, "throughput", seconds, extra)
            latency = run_once(xml, "latency", seconds, extra)
            m = results[str(xml)]
            m.throughput_fps.append(throughput["throughput_fps"])
            m.latency_median_ms.append(latency["latency_median_ms"])
            m.latency_max_ms.append(latency["latency_max_ms"])
    return results


def format_report(results: dict[str, Measurement], baseline: str) -> str:
    base = results[baseline]
    lines = [f"CPU: {cpu_description()}",
             f"{'IR':<60} {'FPS':>9} {'speed-up':>9} {'lat med ms':>11} {'lat max ms':>11}"]
    for xml, m in results.items():
        speedup = m.median("throughput_fps") / base.median("throughput_fps")
        lines.append(f"{xml[-60:]:<60} {m.median('throughput_fps'):>9.1f} {speedup:>8.2f}x "
                     f"{m.median('latency_median_ms'):>11.2f} {m.median('latency_max_ms'):>11.2f}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("xml", nargs="+", help="the FP32 IR first, then INT8 IRs")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10, help="duration of each benchmark_app run")
    parser.add_argument("--shape", help="benchmark_app -shape, for models with dynamic inputs, e.g. "
                                        "'input_ids[1,128],attention_mask[1,128]'")


def run(args: argparse.Namespace) -> int:
    results = compare(args.xml, args.rounds, args.seconds, ["-shape", args.shape] if args.shape else None)
    print(format_report(results, str(args.xml[0])))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
