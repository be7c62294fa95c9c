"""ovptq against NNCF on real models: accuracy, quantize time, peak memory, INT8 coverage, benchmark_app speed.

    python -m benchmarks.compare                       # the default model list, subset 300
    python -m benchmarks.compare --quick               # two models, small subset, short speed runs
    python -m benchmarks.compare --models ppocr_cls light_resnet50 --subset-size 300
    python -m benchmarks.compare --variants nncf_full ovptq_full ovptq_nobc   # bias correction variants too
    python -m benchmarks.compare --corpus              # the corpus of users' models (CORPUS), subset 150, no speed

Both tools quantize the same FP32 IR with the same calibration items, each in its own process (peak RSS is per
tool); ratios are ovptq / NNCF from the same run. Results go to the terminal and to benchmarks/results/ as JSON
and Markdown (compare.*, or corpus_models.* with --corpus); --update-readme writes the table into benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.benchmark_app import Entry, cpu_description, default_precision, fp32_entries, ratio
from benchmarks.benchmark_app import compare as benchmark_compare
from benchmarks.worker import VARIANTS, save_items

# every PP-OCR model in both graph forms
DEFAULT_MODELS = ["light_resnet50", "ppocr_cls", "ppocr_cls_onnx", "ppocr_det", "ppocr_det_onnx", "mobilenet_v2",
                  "ppocr_rec", "ppocr_rec_onnx", "minilm"]
QUICK_MODELS = ["light_resnet50", "ppocr_cls"]
# every PP-OCR model and MobileNetV2 in both graph forms (convert_model and read_model of an .onnx), MiniLM
CORPUS = ["ppocr_cls", "ppocr_cls_onnx", "ppocr_det", "ppocr_det_onnx", "ppocr_rec", "ppocr_rec_onnx", "ppocrv5_rec",
          "ppocrv5_rec_onnx", "mobilenet_v2", "mobilenet_v2_onnx", "minilm"]
CORPUS_VARIANTS = ("nncf_transformer",)
TOOLS = ["nncf", "ovptq"]  # always run: the defaults of both tools
RESULTS = Path(__file__).parent / "results"
BENCHMARKS_README = Path(__file__).parent / "README.md"


def calibration_folder(spec, count: int) -> Path:
    from models import cache_dir
    folder = cache_dir() / "calibration" / f"{spec.name}-v{spec.version}-{count}"
    if not (folder / f"item_{count - 1:05d}.npz").exists():
        save_items(spec.calibration_items(count, seed=0), folder)  # the items are freed before any worker starts
    return folder


def run_tool(tool: str, xml: Path, data: Path, out_dir: Path, subset_size: int,
             model_type: str | None = None) -> dict:
    """Quantize in a worker process. `tool` is a variant, or VARIANT@CHECKOUT to run it with the ovptq of another
    checkout (a git worktree of an earlier commit, say), so that two versions are timed in the same rounds."""
    variant, _, checkout = tool.partition("@")
    stem = re.sub(r"[^\w.-]", "_", tool)
    out, report = out_dir / f"{stem}.xml", out_dir / f"{stem}.json"
    command = [sys.executable, "-m", "benchmarks.worker", variant, str(xml), str(data), str(out), str(report),
               "--subset-size", str(subset_size), *(["--model-type", model_type] if model_type else [])]
    # CI=true turns OpenVINO's telemetry off: it forks from a worker thread, which can deadlock a busy process.
    env = {**os.environ, "CI": "true", "OVPTQ_PROGRESS": "0"}
    cwd = Path(checkout) if checkout else Path(__file__).parent.parent  # the worker imports ovptq from there
    subprocess.run(command, check=True, cwd=cwd, capture_output=True, env=env)
    return {**json.loads(report.read_text()), "xml": str(out)}


def variant_argument(value: str) -> str:
    """A variant, or VARIANT@CHECKOUT (see run_tool)."""
    variant, _, checkout = value.partition("@")
    if variant not in VARIANTS or checkout and not (Path(checkout) / "benchmarks" / "worker.py").exists():
        raise argparse.ArgumentTypeError(f"{value!r}: use one of {', '.join(VARIANTS)}, optionally @ a checkout "
                                         "of ovptq (a folder with benchmarks/worker.py)")
    return value


def coverage(xml: str) -> dict:
    import ovptq
    report = ovptq.inspect(xml)
    return {"int8_layers": len(report.int8_linear), "linear_layers": len(report.linear),
            "standalone_fq": len(report.standalone_fake_quantize), "int8_names": sorted(report.int8_names())}


def measure(name: str, subset_size: int, rounds: int, seconds: int, work: Path,
            extra_variants: tuple[str, ...] = ()) -> dict:
    from models import get_model
    spec = get_model(name)
    fp32 = spec.xml_path()
    data = calibration_folder(spec, subset_size)
    out_dir = work / name
    out_dir.mkdir(parents=True, exist_ok=True)
    row: dict = {"model": name, "headline": spec.headline, "subset_size": subset_size, "data_note": spec.data_note,
                 "model_type": spec.model_type}
    tools = {tool: run_tool(tool, fp32, data, out_dir, subset_size, spec.model_type)
             for tool in [*TOOLS, *extra_variants]}
    row["tools"] = list(tools)
    row["fp32"] = {"metrics": spec.evaluate(str(fp32))}
    for tool, result in tools.items():
        row[tool] = {**result, "metrics": spec.evaluate(result["xml"]), "coverage": coverage(result["xml"])}
    nncf_int8 = set(row["nncf"]["coverage"]["int8_names"])
    row["int8_in_nncf_not_in_ovptq"] = sorted(nncf_int8 - set(row["ovptq"]["coverage"]["int8_names"]))
    if rounds:
        row["speed"] = speed(row, str(fp32), list(tools), rounds, seconds, list(spec.benchmark_app_args))
        row["layers"] = layer_times(row, str(fp32), list(tools), data)
    return row


def speed(row: dict, fp32: str, tools: list[str], rounds: int, seconds: int, extra: list[str]) -> dict:
    """benchmark_app throughput in alternating rounds: the FP32 IR at the default precision (and the other of
    bf16 / f32 where the CPU has bf16), then each tool's INT8 IR; each tool's per-round ratios to the FP32 entries
    and ovptq's to NNCF's. Also sets each entry's median FPS in the row."""
    references = fp32_entries(fp32)
    entries = [*references, *(Entry(row[tool]["xml"], label=tool) for tool in tools)]
    measured = benchmark_compare(entries, rounds, seconds, extra)
    fps = {name: m.throughput_fps for name, m in measured.items()}
    ratios = {f"{tool} / {reference.name}": vars(ratio(measured, tool, reference.name))
              for tool in tools for reference in references}
    if "ovptq" in tools and "nncf" in tools:
        ratios["ovptq / nncf"] = vars(ratio(measured, "ovptq", "nncf"))
    for tool in tools:
        if tool not in TOOLS and "ovptq" in tools:   # the default against each variant, in the same rounds
            ratios[f"ovptq / {tool}"] = vars(ratio(measured, "ovptq", tool))
    row["fp32"]["throughput_fps"] = measured[references[0].name].median("throughput_fps")
    for tool in tools:
        row[tool]["throughput_fps"] = measured[tool].median("throughput_fps")
    return {"fp32_precision": default_precision(), "references": [r.name for r in references], "fps": fps,
            "ratios": ratios}


def layer_times(row: dict, fp32: str, tools: list[str], data: Path) -> dict:
    """Per-layer profile (one thread, PERF_COUNT) of the FP32 IR at the default precision and of each INT8 IR, on
    the first calibration item: total and time outside the int8 Convolution / MatMul layers, in ms."""
    import openvino as ov

    from benchmarks.worker import DiskItems
    from ovptq.runtime.profile import Profiler, fastest
    core = ov.Core()
    feeds = [next(iter(DiskItems(data)))]
    names = ["fp32", *tools]
    xmls = [fp32, *(row[tool]["xml"] for tool in tools)]
    profiles = fastest([Profiler(core, core.read_model(xml), feeds) for xml in xmls], timings=3)
    return {name: {"total_ms": p.milliseconds, "outside_int8_ms": p.outside_int8_linear(),
                   "by_category": p.by_category()} for name, p in zip(names, profiles)}


def corpus_models() -> list[str]:
    """CORPUS and the families models.CORPUS_NEW_FAMILIES adds."""
    import models
    return [*CORPUS, *getattr(models, "CORPUS_NEW_FAMILIES", ())]


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "-"


def _model_cell(r: dict) -> str:
    return f"{r['model']} (model_type={r['model_type']})" if r.get("model_type") else r["model"]


def _seconds_cell(n: dict, o: dict) -> str:
    """Quantize time NNCF / ovptq (ratio)."""
    return f"{n['quantize_seconds']:.1f} / {o['quantize_seconds']:.1f} " \
           f"({_ratio(o['quantize_seconds'], n['quantize_seconds'])})"


def _layers_cell(n: dict, o: dict) -> str:
    """INT8 layers / linear layers, NNCF / ovptq."""
    return f"{n['coverage']['int8_layers']}/{n['coverage']['linear_layers']} / " \
           f"{o['coverage']['int8_layers']}/{o['coverage']['linear_layers']}"


def _fps_cell(r: dict) -> str:
    if "throughput_fps" not in r.get("ovptq", {}):
        return "-"
    return " / ".join(f"{r[key]['throughput_fps']:.0f}" if "throughput_fps" in r.get(key, {}) else "-"
                      for key in ("fp32", "nncf", "ovptq"))


def _ratio_cell(r: dict, key: str) -> str:
    """A per-round ratio: median (min-max)."""
    found = r.get("speed", {}).get("ratios", {}).get(key)
    if not found or found["rounds"] == 0:
        return "-"
    return f"{found['median']:.2f} ({found['low']:.2f}-{found['high']:.2f})"


def extra_tools(rows: list[dict]) -> list[str]:
    """The variants run beside the two defaults, in the order given (VARIANT or VARIANT@CHECKOUT)."""
    return list(dict.fromkeys(t for r in rows for t in r.get("tools", [v for v in VARIANTS if v in r])
                              if t not in TOOLS))


def tool_label(tool: str) -> str:
    """A variant's name in tables: VARIANT, or VARIANT@ the checkout folder's name."""
    variant, _, checkout = tool.partition("@")
    return f"{variant}@{Path(checkout).name}" if checkout else variant


def speed_table(rows: list[dict]) -> list[str]:
    """benchmark_app throughput ratios per round (median, min-max), and per-layer time outside the int8 layers."""
    rows = [r for r in rows if "speed" in r]
    if not rows:
        return []
    precision = rows[0]["speed"]["fp32_precision"]
    other = rows[0]["speed"]["references"][1:]
    variants = extra_tools(rows)
    header = (f"| model | FPS FP32 @ {precision} / NNCF / ovptq | ovptq / FP32 @ {precision} "
              f"| NNCF / FP32 @ {precision} " + "".join(f"| ovptq / {name} " for name in other)
              + "".join(f"| {tool_label(v)} / FP32 @ {precision} | ovptq / {tool_label(v)} " for v in variants)
              + "| ovptq / NNCF | ms outside int8 Conv/MatMul FP32 / NNCF / ovptq | ms total FP32 / NNCF / ovptq |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in rows:
        reference = r["speed"]["references"][0]
        layers = r.get("layers", {})
        outside = " / ".join(f"{layers[k]['outside_int8_ms']:.2f}" for k in ("fp32", "nncf", "ovptq")) if layers \
            else "-"
        total = " / ".join(f"{layers[k]['total_ms']:.2f}" for k in ("fp32", "nncf", "ovptq")) if layers else "-"
        lines.append(f"| {r['model']} | {_fps_cell(r)} | {_ratio_cell(r, f'ovptq / {reference}')} "
                     f"| {_ratio_cell(r, f'nncf / {reference}')} "
                     + "".join(f"| {_ratio_cell(r, f'ovptq / {name}')} " for name in other)
                     + "".join(f"| {_ratio_cell(r, f'{v} / {reference}')} | {_ratio_cell(r, f'ovptq / {v}')} "
                               for v in variants)
                     + f"| {_ratio_cell(r, 'ovptq / nncf')} | {outside} | {total} |")
    return lines


def done_when(r: dict) -> str:
    """"ok" when ovptq's headline metric is at least NNCF's default - 0.005, and at least the best of NNCF's
    default and transformer mode - 0.01 or FP32 - 0.01; "MISS" otherwise."""
    h = r["headline"]
    fp32, ovptq, nncf = (r[key]["metrics"][h] for key in ("fp32", "ovptq", "nncf"))
    best_nncf = max(nncf, r["nncf_transformer"]["metrics"][h]) if "nncf_transformer" in r else nncf
    return "ok" if ovptq >= nncf - 0.005 and (ovptq >= best_nncf - 0.01 or ovptq >= fp32 - 0.01) else "MISS"


def corpus_table(rows: list[dict]) -> list[str]:
    """Headline metric of FP32 and each tool, the done-when check, INT8 coverage and quantize time."""
    header = ("| model | metric | FP32 | NNCF default | NNCF transformer | ovptq default | done-when check | "
              "INT8 layers NNCF / ovptq | standalone FQ NNCF / ovptq | quantize s NNCF / ovptq (ratio) | "
              "FPS FP32 / NNCF / ovptq |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in rows:
        h = r["headline"]
        n, o = r["nncf"], r["ovptq"]
        transformer = f"{r['nncf_transformer']['metrics'][h]:.4f}" if "nncf_transformer" in r else "-"
        lines.append(
            f"| {_model_cell(r)} | {h} | {r['fp32']['metrics'][h]:.4f} | {n['metrics'][h]:.4f} | {transformer} "
            f"| {o['metrics'][h]:.4f} | {done_when(r)} | {_layers_cell(n, o)} "
            f"| {n['coverage']['standalone_fq']} / {o['coverage']['standalone_fq']} | {_seconds_cell(n, o)} "
            f"| {_fps_cell(r)} |")
    return lines


def _rounds(rows: list[dict]) -> int:
    return max(len(fps) for r in rows if "speed" in r for fps in r["speed"]["fps"].values())


def variants_table(rows: list[dict]) -> list[str]:
    """Headline metric and quantize time of every variant that was run, the two defaults first."""
    names = [*TOOLS, *extra_tools(rows)]
    lines = ["| model | metric | FP32 | " + " | ".join(map(tool_label, names)) + " |",
             "|" + "---|" * (len(names) + 3)]
    for r in rows:
        h = r["headline"]
        cells = [f"{r[v]['metrics'][h]:.4f} ({r[v]['quantize_seconds']:.1f} s)" if v in r else "-" for v in names]
        lines.append(f"| {r['model']} | {h} | {r['fp32']['metrics'][h]:.4f} | " + " | ".join(cells) + " |")
    return lines


def metrics_table(rows: list[dict]) -> list[str]:
    """Every metric of every model, for FP32 and the two tools' defaults."""
    lines = ["| model | FP32 | NNCF INT8 | ovptq INT8 |", "|---|---|---|---|"]
    for r in rows:
        cells = []
        for key in ("fp32", "nncf", "ovptq"):
            metrics = r[key]["metrics"]
            cells.append(", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                   for k, v in metrics.items()))
        lines.append(f"| {r['model']} | " + " | ".join(cells) + " |")
    return lines


def table(rows: list[dict]) -> list[str]:
    header = ("| model | metric | FP32 | NNCF INT8 | ovptq INT8 | quantize s NNCF / ovptq (ratio) | "
              "peak RSS MB NNCF / ovptq (ratio) | INT8 layers NNCF / ovptq | FPS FP32 / NNCF / ovptq |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in rows:
        h = r["headline"]
        n, o = r["nncf"], r["ovptq"]
        lines.append(
            f"| {_model_cell(r)} | {h} | {r['fp32']['metrics'][h]:.4f} | {n['metrics'][h]:.4f} "
            f"| {o['metrics'][h]:.4f} | {_seconds_cell(n, o)} "
            f"| {n['peak_rss_mb']:.0f} / {o['peak_rss_mb']:.0f} ({_ratio(o['peak_rss_mb'], n['peak_rss_mb'])}) "
            f"| {_layers_cell(n, o)} | {_fps_cell(r)} |")
    return lines


def write_results(rows: list[dict], command: str, started: float, out: Path, variants: bool, corpus: bool = False,
                  failed: dict | None = None) -> list[str]:
    """Write compare.json and compare.md (corpus_models.* for the corpus) for the models measured so far; return
    the Markdown lines."""
    speeds = speed_table(rows)
    if speeds:
        speeds = ["", f"Speed: benchmark_app -hint throughput, {_rounds(rows)} alternating rounds, "
                  "ratios per round: median (min-max); per-layer times: PERF_COUNT, one thread, first calibration "
                  "item:", "", *speeds]
    lines = [*(corpus_table if corpus else table)(rows), *speeds, "", "All metrics:", "", *metrics_table(rows), "",
             "Where the data comes from:", "", *(f"- `{r['model']}`: {r['data_note']}" for r in rows)]
    if variants:
        lines += ["", "Variants: bias correction modes and model_type=\"transformer\" (headline metric, quantize "
                  "wall time):", "", *variants_table(rows)]
    if failed:
        lines += ["", "Failed:", "", *(f"- `{name}`: {error}" for name, error in failed.items())]
    return save_run(out, "corpus_models" if corpus else "compare", command, started, rows, lines)


def save_run(out: Path, stem: str, command: str, started: float, rows: list, lines: list[str]) -> list[str]:
    """Write `stem`.json (the rows) and `stem`.md (machine, command and duration, then `lines`) to `out`; return
    the Markdown lines."""
    minutes = (time.time() - started) / 60
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(
        {"machine": cpu_description(), "command": command, "minutes": minutes, "rows": rows}, indent=1))
    markdown = [f"Machine: {cpu_description()}, 2 cores. Command: `{command}` ({minutes:.0f} min).", "", *lines]
    (out / f"{stem}.md").write_text("\n".join(markdown) + "\n")
    return markdown


def command_line(module: str, argv: list[str] | None) -> str:
    """The command that ran `module`, as the results and the README quote it."""
    return f"python -m {module} {' '.join(argv if argv is not None else sys.argv[1:])}".strip()


def per_model_run(name: str, description: str, measure, table, default_models, argv: list[str] | None) -> int:
    """The command line of a benchmark that measures one model at a time: `measure(model, subset_size)` gives a
    row, `table(rows)` its Markdown; each row is printed as it comes, then the run is saved as `name`.json / .md
    and published to the `name` block of benchmarks/README.md with --update-readme. `default_models` is a list or
    a function giving one (called only when --models is not given)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--models", nargs="+")
    parser.add_argument("--subset-size", type=int, default=150)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--update-readme", action="store_true")
    args = parser.parse_args(argv)
    started, rows = time.time(), []
    for model in args.models or (default_models() if callable(default_models) else default_models):
        print(f"== {model}", flush=True)
        rows.append(measure(model, args.subset_size))
        print("\n".join(table(rows[-1:])), flush=True)
    publish(save_run(args.out, name, command_line(f"benchmarks.{name}", argv), started, rows, table(rows)), name,
            args.update_readme)
    return 0


def publish(markdown: list[str], marker: str, to_readme: bool, readme: Path = BENCHMARKS_README) -> None:
    """Print a run's Markdown and, with `to_readme`, write it between the `marker` markers of `readme`."""
    print("\n".join(markdown))
    if to_readme:
        update_readme(markdown, marker, readme)


def update_readme(markdown: list[str], marker: str = "results", readme: Path = BENCHMARKS_README) -> None:
    """Replace the text between the `marker` markers of `readme` with this run's tables."""
    text = readme.read_text()
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    head, rest = text.split(start, 1)
    tail = rest.split(end, 1)[1]
    readme.write_text(f"{head}{start}\n" + "\n".join(markdown) + f"\n{end}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+")
    parser.add_argument("--subset-size", type=int)
    parser.add_argument("--rounds", type=int, help="benchmark_app rounds (0: skip speed)")
    parser.add_argument("--seconds", type=int, help="duration of each benchmark_app run")
    parser.add_argument("--quick", action="store_true", help="two models, subset 50, one short speed round")
    parser.add_argument("--corpus", action="store_true",
                        help="the corpus models (or --models), subset 150, no speed runs, NNCF transformer mode too")
    parser.add_argument("--variants", nargs="*", default=[], type=variant_argument,
                        help=f"also run these ({', '.join(VARIANTS[2:])}, or VARIANT@CHECKOUT: a variant run with "
                             "the ovptq of another checkout, in the same rounds); their table shows metric and time")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--update-readme", action="store_true",
                        help="write the table into benchmarks/README.md")
    args = parser.parse_args(argv)
    models = args.models or (corpus_models() if args.corpus else QUICK_MODELS if args.quick else DEFAULT_MODELS)
    subset = args.subset_size or (150 if args.corpus else 50 if args.quick else 300)
    rounds = args.rounds if args.rounds is not None else (0 if args.corpus else 1 if args.quick else 4)
    seconds = args.seconds or (5 if args.quick else 10)
    variants = tuple(dict.fromkeys([*args.variants, *(CORPUS_VARIANTS if args.corpus else ())]))
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    rows: list[dict] = []
    failed: dict[str, str] = {}
    command = command_line("benchmarks.compare", argv)
    for name in models:
        print(f"== {name}", flush=True)
        try:
            rows.append(measure(name, subset, rounds, seconds, args.out / "irs", variants))
            print("\n".join((corpus_table if args.corpus else table)(rows[-1:])), flush=True)
        except (ImportError, subprocess.CalledProcessError) as error:  # a missing package, a tool that failed
            failed[name] = failure_message(error)
            print(f"{name} failed: {failed[name]}", flush=True)
        if rows:  # after each model
            markdown = write_results(rows, command, started, args.out, bool(args.variants), args.corpus, failed)
    if rows:
        publish(markdown, "corpus_models" if args.corpus else "results", args.update_readme)
    return 1 if failed else 0


def failure_message(error: Exception) -> str:
    """The error; for a failed worker, its variant, exit code and last line of stderr."""
    if isinstance(error, subprocess.CalledProcessError):
        last = error.stderr.decode(errors="replace").strip().splitlines()[-1:] if error.stderr else []
        return f"worker {error.cmd[3]} exited with {error.returncode}: {' '.join(last)}"
    return str(error)


if __name__ == "__main__":
    sys.exit(main())
