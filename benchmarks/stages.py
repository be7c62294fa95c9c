"""Where the default call's time goes: the wall time of each stage of one quantize call, per model.

    python -m benchmarks.stages --models ppocr_det ppocrv5_rec [--subset-size 150] [--update-readme]

Each model is quantized in a process of its own (`benchmarks.worker` reads the calibration items from disk, as the
other benchmarks do); the stage times come from ovptq's debug log ("Stage <name>: <seconds> s"), the safety net's
outcome from the INT8 model's rt_info.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.compare import RESULTS, calibration_folder, command_line, publish, save_run

STAGE_LINE = re.compile(r"Stage (?P<name>.+?): (?P<seconds>[0-9.]+) s")

# One quantize call with the debug log on: argv = FP32 xml, calibration folder, subset size, model type, out xml.
WORKER = """
import json, logging, sys, time
import openvino as ov
import ovptq
from benchmarks.worker import DiskItems
from ovptq.files import save_model
xml, data, subset, model_type, out = sys.argv[1:6]
logging.basicConfig(level=logging.DEBUG, format="%(message)s")
started = time.perf_counter()
int8 = ovptq.quantize(ov.Core().read_model(xml), ovptq.Dataset(DiskItems(data)), subset_size=int(subset),
                      model_type=model_type or None)
print(f"Stage total: {time.perf_counter() - started:.3f} s")
save_model(int8, out)
"""


def stage_times(name: str, subset_size: int, work: Path) -> dict:
    from models import get_model
    spec = get_model(name)
    out = work / f"{name}.xml"
    out.parent.mkdir(parents=True, exist_ok=True)
    run = subprocess.run([sys.executable, "-c", WORKER, str(spec.xml_path()), str(calibration_folder(spec, subset_size)),
                          str(subset_size), spec.model_type or "", str(out)], capture_output=True, text=True,
                         check=True, env={**__import__("os").environ, "OVPTQ_PROGRESS": "0", "CI": "true"})
    times: dict[str, float] = {}
    for match in STAGE_LINE.finditer(run.stdout + run.stderr):
        times[match["name"]] = times.get(match["name"], 0.0) + float(match["seconds"])
    import openvino as ov
    int8 = ov.Core().read_model(str(out))
    net = json.loads(int8.get_rt_info(["ovptq", "safety_net"]).astype(str)) \
        if int8.has_rt_info(["ovptq", "safety_net"]) else {}
    return {"model": name, "subset_size": subset_size, "seconds": times, "safety_net": net}


def table(rows: list[dict]) -> list[str]:
    columns = ["start", "placement", "statistics pass", "activation ranges", "weight quantization",
               "fast bias correction", "SmoothQuant", "rewrite", "safety net", "speed check", "record"]
    lines = ["| model | items | total s | " + " | ".join(columns) + " | safety net: models measured, ended |",
             "|" + "---|" * (len(columns) + 4)]
    for r in rows:
        t, net = r["seconds"], r["safety_net"]
        cells = [f"{t[c]:.2f}" if c in t else "-" for c in columns]
        lines.append(f"| {r['model']} | {r['subset_size']} | {t.get('total', 0):.2f} | " + " | ".join(cells)
                     + f" | {net.get('measurements', '-')}, {net.get('ended', '-')} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["ppocr_det", "ppocrv5_rec"])
    parser.add_argument("--subset-size", type=int, default=150)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--work", type=Path, default=Path("/tmp/ovptq-stages"))
    parser.add_argument("--update-readme", action="store_true")
    args = parser.parse_args(argv)
    started, rows = time.time(), []
    for name in args.models:
        rows.append(stage_times(name, args.subset_size, args.work))
        print("\n".join(table(rows[-1:])[2:]), flush=True)
    markdown = save_run(args.out, "stages", command_line("benchmarks.stages", argv), started, rows, table(rows))
    publish(markdown, "stages", args.update_readme)
    return 0


if __name__ == "__main__":
    sys.exit(main())
