"""Run OpenVINO's `benchmark_app` on an FP32 IR and INT8 IRs in alternating rounds, and report the speed-up.

    ovptq bench fp32.xml int8.xml [more.xml ...] [--rounds 4] [--seconds 10] [--shape ...] [--latency] [--layers]

The FP32 IR runs at the plugin's default inference precision, which is what a user's FP32 IR runs at: bf16 on CPUs
with AVX512-BF16 or AMX, f32 elsewhere. The report names it. Where the CPU supports bf16, the FP32 IR runs a second
time at the other precision (f32 when the default is bf16, bf16 when it is f32), so INT8 is compared with both.

Each round runs every entry once, in an order that rotates from round to round; a ratio is taken within a round
(its runs are seconds apart) and the report gives the median of the per-round ratios with their smallest and
largest values: a noisy neighbour on a shared machine slows a round, not one IR. A ratio whose rounds fall on both
sides of 1.0 is marked as within the run's noise, and a run of fewer than `MIN_ROUNDS` rounds says it cannot judge
noise. IRs that are the same network as the FP32 IR (same ops, shapes and constants) or hold no FakeQuantize are
named as such. `--layers` also profiles every IR per layer (`runtime.profile`) and shows where the INT8 models
spend time that the FP32 model does not.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import openvino as ov

from ovptq.errors import ModelError, ParameterError
from ovptq.runtime.cpu import cpu_description, default_precision  # noqa: F401  (re-exported)


def benchmark_app_command() -> str:
    """The benchmark_app beside this Python (pip installs it with openvino), else the one on PATH."""
    local = Path(sys.executable).parent / "benchmark_app"
    found = str(local) if local.exists() else shutil.which("benchmark_app")
    if found is None:
        raise FileNotFoundError("benchmark_app not found: pip install openvino (it ships the command).")
    return found


MIN_ROUNDS = 3   # fewer rounds give a ratio no spread to judge the machine's noise by


def supports_bf16(core: ov.Core | None = None, device: str = "CPU") -> bool:
    return "BF16" in (core or ov.Core()).get_property(device, "OPTIMIZATION_CAPABILITIES")


@dataclass(frozen=True)
class Entry:
    """One thing to time: an IR, optionally at a forced inference precision."""

    xml: str
    precision: str | None = None   # None: the plugin's default
    label: str = ""

    @property
    def name(self) -> str:
        return self.label or (f"{self.xml} @ {self.precision}" if self.precision else self.xml)

    def arguments(self) -> list[str]:
        return ["-infer_precision", self.precision] if self.precision else []


def fp32_entries(xml: str, core: ov.Core | None = None) -> list[Entry]:
    """The FP32 IR at the default precision, and at the other of bf16 / f32 where the CPU supports bf16."""
    default = default_precision(core)
    entries = [Entry(str(xml), None, f"FP32 @ default ({default})")]
    if supports_bf16(core):
        other = "f32" if default == "bf16" else "bf16"
        entries.append(Entry(str(xml), other, f"FP32 @ {other}"))
    return entries


@dataclass
class Measurement:
    throughput_fps: list[float] = field(default_factory=list)   # one per round
    latency_median_ms: list[float] = field(default_factory=list)
    latency_max_ms: list[float] = field(default_factory=list)

    def median(self, name: str) -> float:
        values = [v for v in getattr(self, name) if v == v]
        return statistics.median(values) if values else float("nan")


def run_once(xml: str | Path, hint: str, seconds: int, extra: list[str] | None = None) -> dict[str, float]:
    """One benchmark_app run; returns throughput (FPS) and latency median / max (ms)."""
    command = [benchmark_app_command(), "-m", str(xml), "-d", "CPU", "-hint", hint, "-t", str(seconds),
               *(extra or [])]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        said = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        raise ModelError(f"benchmark_app failed on {xml} (exit code {done.returncode}): "
                         f"{said[-1].strip() if said else 'no message'}")
    output = done.stdout
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


def compare(entries: list[Entry | str | Path], rounds: int = 4, seconds: int = 10, extra: list[str] | None = None,
            latency: bool = False) -> dict[str, Measurement]:
    """Throughput (throughput hint), and with `latency` the latency (latency hint), of each entry, by entry name.
    Every round runs each entry once, starting one entry later than the round before. `extra` goes to every
    benchmark_app call (e.g. ["-shape", "input_ids[1,128]"] for dynamic inputs)."""
    entries = [e if isinstance(e, Entry) else Entry(str(e)) for e in entries]
    results = {e.name: Measurement() for e in entries}
    for index in range(rounds):
        for entry in entries[index % len(entries):] + entries[:index % len(entries)]:
            m = results[entry.name]
            m.throughput_fps.append(run_once(entry.xml, "throughput", seconds, [*entry.arguments(), *(extra or [])])
                                    ["throughput_fps"])
            if latency:
                timed = run_once(entry.xml, "latency", seconds, [*entry.arguments(), *(extra or [])])
                m.latency_median_ms.append(timed["latency_median_ms"])
                m.latency_max_ms.append(timed["latency_max_ms"])
    return results


@dataclass(frozen=True)
class Ratio:
    """Per-round throughput ratios of one entry to a reference: their median and range."""

    median: float
    low: float
    high: float
    rounds: int

    @property
    def within_noise(self) -> bool:
        """The rounds' ratios fall on both sides of 1.0: this run cannot tell the two apart."""
        return self.low < 1.0 < self.high

    def __str__(self) -> str:
        return f"{self.median:.2f}x ({self.low:.2f}-{self.high:.2f}){' ~' if self.within_noise else ''}"


def ratio(results: dict[str, Measurement], name: str, reference: str) -> Ratio:
    """FPS of `name` / FPS of `reference`, round by round."""
    pairs = [a / b for a, b in zip(results[name].throughput_fps, results[reference].throughput_fps) if b and a == a]
    if not pairs:
        return Ratio(float("nan"), float("nan"), float("nan"), 0)
    return Ratio(statistics.median(pairs), min(pairs), max(pairs), len(pairs))


def format_report(results: dict[str, Measurement], references: list[str]) -> str:
    """One line per entry: median FPS, and its per-round ratio to every reference (the FP32 entries)."""
    rounds = max(len(m.throughput_fps) for m in results.values())
    rounds_said = f"{rounds} alternating rounds; ratios are per round: median (min-max), ~ where the rounds fall on " \
        "both sides of 1.0 (within this run's noise)" if rounds > 1 else "1 round; a ratio of one round has no spread"
    lines = [f"CPU: {cpu_description()}; FP32 IR at the plugin's default inference precision: {default_precision()}",
             f"benchmark_app -hint throughput, {rounds_said}",
             f"{'entry':<56} {'FPS':>8} " + " ".join(f"{'vs ' + r.split(' (')[0]:>24}" for r in references)]
    latency = any(m.latency_median_ms for m in results.values())
    if latency:
        lines[-1] += f" {'lat med ms':>11} {'lat max ms':>11}"
    for name, m in results.items():
        cells = " ".join(f"{'' if name == r else str(ratio(results, name, r)):>24}" for r in references)
        line = f"{name[-56:]:<56} {m.median('throughput_fps'):>8.1f} {cells}"
        if latency:
            line += f" {m.median('latency_median_ms'):>11.2f} {m.median('latency_max_ms'):>11.2f}"
        lines.append(line)
    if rounds < MIN_ROUNDS:
        lines.append(f"note: {rounds} round{'s' if rounds != 1 else ''} cannot tell a speed-up from this machine's "
                     "noise (on a shared machine runs of one IR differ by 10% and more); use --rounds "
                     f"{MIN_ROUNDS} or more to see the spread.")
    return "\n".join(lines)


def network_signature(model: ov.Model) -> str:
    """A hash of what the model computes: its ops in order, each with its type, output shapes and element types,
    and its attributes (a Constant: its bytes); names and rt_info do not count."""
    digest = hashlib.sha256()
    for op in model.get_ordered_ops():
        digest.update(op.get_type_name().encode())
        for output in op.outputs():
            digest.update(f"{output.get_partial_shape()}{output.get_element_type()}".encode())
        if op.get_type_name() == "Constant":
            digest.update(op.get_data().tobytes())
        else:
            digest.update(repr(sorted(op.get_attributes().items())).encode())
    return digest.hexdigest()


def network_notes(xmls: list[str]) -> list[str]:
    """Notes on the IRs after the first (the FP32 one): those that are the same network as it, and those that hold
    no FakeQuantize (a float model, e.g. one the speed check gave back whole)."""
    core = ov.Core()
    models = [core.read_model(xml) for xml in xmls]
    reference = network_signature(models[0])
    notes = []
    for xml, model in zip(xmls[1:], models[1:]):
        if network_signature(model) == reference:
            notes.append(f"note: {xml} is the same network as {xmls[0]} (same ops, shapes and constants): any "
                         "difference between them is noise.")
        elif not any(op.get_type_name() == "FakeQuantize" for op in model.get_ordered_ops()):
            notes.append(f"note: {xml} holds no FakeQuantize: it runs in float, not INT8.")
    return notes


def layers_report(xmls: list[str], shape: str | None = None) -> str:
    """Per layer category, the time (ms, one thread, PERF_COUNT) of each IR, the FP32 one first at the default
    precision; then the int8 kernels. The line "outside int8 Conv/MatMul" is what quantization added around the
    int8 layers."""
    from ovptq.runtime.profile import profile
    core = ov.Core()
    profiles = {}
    for xml in xmls:
        model = core.read_model(xml)
        if shape:
            model.reshape(parse_shape(shape))
        profiles[xml] = profile(core, model)
    by_category = {xml: (p.by_category(), p.counts()) for xml, p in profiles.items()}
    categories = sorted({c for by, _ in by_category.values() for c in by},
                        key=lambda c: -max(by.get(c, 0.0) for by, _ in by_category.values()))
    names = [Path(x).name[-18:] for x in xmls]
    lines = [f"Per-layer time, ms per inference (one thread, median of runs); {names[0]} at "
             f"{profiles[xmls[0]].precision}",
             f"{'layer type':<28} " + " ".join(f"{n:>18}" for n in names)]
    for category in categories:
        cells = []
        for by, counts in by_category.values():
            cells.append(f"{by.get(category, 0.0):>10.3f} ({counts.get(category, 0):>3})" if category in by
                         else f"{'-':>18}")
        lines.append(f"{category:<28} " + " ".join(cells))
    lines.append(f"{'outside int8 Conv/MatMul':<28} " + " ".join(f"{p.outside_int8_linear():>16.3f}  "
                                                                  for p in profiles.values()))
    lines.append(f"{'total':<28} " + " ".join(f"{p.milliseconds:>16.3f}  " for p in profiles.values()))
    for xml, p in profiles.items():
        for category in [c for c in by_category[xml][1] if c.endswith(" i8")]:
            kernels = ", ".join(f"{k} x{n} {ms:.3f} ms" for k, (n, ms) in p.kernels(category).items())
            lines.append(f"{Path(xml).name}: {category} kernels: {kernels}")
    return "\n".join(lines)


def parse_shape(text: str) -> dict[str, list[int]] | list[int]:
    """benchmark_app's -shape syntax: "input[1,3,224,224]" or "a[1,128],b[1,128]" (or just "[1,3,224,224]")."""
    found = re.findall(r"([^\[\],]*)\[([\d,\s]+)\]", text)
    if not found:
        raise ValueError(f"--shape {text!r}: expected NAME[d0,d1,...], comma separated")
    shapes = {name.strip(): [int(d) for d in dims.split(",")] for name, dims in found}
    return shapes.pop("") if "" in shapes else shapes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("xml", nargs="+", help="the FP32 IR first, then INT8 IRs")
    parser.add_argument("--rounds", type=positive_int, default=4, help="alternating rounds (default: %(default)s)")
    parser.add_argument("--seconds", type=positive_int, default=10,
                        help="duration of each benchmark_app run (default: %(default)s)")
    parser.add_argument("--shape", help="benchmark_app -shape, for models with dynamic inputs, e.g. "
                                        "'input_ids[1,128],attention_mask[1,128]'")
    parser.add_argument("--latency", action="store_true", help="also run each entry with the latency hint")
    parser.add_argument("--layers", action="store_true",
                        help="also profile each IR per layer type (one thread): where INT8 spends time FP32 does not")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (anything else is a usage error, exit code 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be 1 or more")
    return value


def shape_argument(xmls: list[str], shape: str | None) -> str | None:
    """benchmark_app's -shape: `shape` when given; none when the first IR's inputs are static; else the static
    input shapes of the first IR after it that has them (an INT8 IR saved from a reshaped model). Otherwise a
    ParameterError names the dynamic input and the option to give."""
    if shape:
        return shape
    core = ov.Core()
    dynamic = [port for port in core.read_model(xmls[0]).inputs if port.get_partial_shape().is_dynamic]
    if not dynamic:
        return None
    for xml in xmls[1:]:
        inputs = core.read_model(xml).inputs
        if all(port.get_partial_shape().is_static for port in inputs):
            return ",".join(f"{port.get_any_name()}[{','.join(str(d) for d in port.get_shape())}]" for port in inputs)
    port = dynamic[0]
    example = ",".join("1" if d.is_dynamic else str(d) for d in port.get_partial_shape())
    raise ParameterError(f"{xmls[0]}: input '{port.get_any_name()}' has the dynamic shape {port.get_partial_shape()} "
                         f"and no IR given has a static one; give benchmark_app one with --shape, e.g. --shape "
                         f"'{port.get_any_name()}[{example}]' with your sizes.")


def run(args: argparse.Namespace) -> int:
    from ovptq.quantize import checked_model_path
    for xml in args.xml:
        checked_model_path(xml)
    shape = shape_argument([str(x) for x in args.xml], args.shape)
    fp32 = fp32_entries(args.xml[0])
    entries = [*fp32, *(Entry(str(x)) for x in args.xml[1:])]
    results = compare(entries, args.rounds, args.seconds, ["-shape", shape] if shape else None, args.latency)
    print(format_report(results, [e.name for e in fp32]))
    for note in network_notes([str(x) for x in args.xml]):
        print(note)
    if args.layers:
        print()
        print(layers_report([str(x) for x in args.xml], shape))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
