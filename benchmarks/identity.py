"""Fingerprints of the IRs ovptq writes, per model and mode: proof that a refactor changes no output.

    python -m benchmarks.identity --out before.json [--save DIR]            # record
    python -m benchmarks.identity --out after.json --against before.json    # record and compare

Models: every hand-built model of tests/builders.py, the hand-made zoo models, the onnx-wheel architectures the
tests quantize, and the six benchmark models (300 calibration items, as `benchmarks.compare`). Modes: the default
call, full bias correction, model_type="transformer", and a statistics file written by a default call and read
back by each of the three. A mode's fingerprint is the SHA-256 of the saved .xml and of the .bin.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect as pyinspect
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import openvino as ov

BENCHMARK_MODELS = ["light_resnet50", "ppocr_cls", "ppocr_det", "mobilenet_v2", "ppocr_rec", "minilm"]
ZOO_TEST_MODELS = ["tiny_resnet", "tiny_depthwise", "light_densenet121", "light_inception_v1", "light_squeezenet"]
MODES = {"default": {}, "full": {"fast_bias_correction": False}, "transformer": {"model_type": "transformer"}}
HANDMADE_ITEMS = 24
ZOO_TEST_ITEMS = 32


def handmade_models() -> dict:
    """name -> builder of every zero-argument function in tests/builders.py that returns an ov.Model."""
    sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
    import builders
    found = {}
    for name, function in pyinspect.getmembers(builders, pyinspect.isfunction):
        if function.__module__ != builders.__name__ or name.startswith("_"):
            continue
        signature = pyinspect.signature(function)
        if signature.return_annotation not in ("ov.Model", ov.Model):
            continue
        if all(p.default is not p.empty for p in signature.parameters.values()):
            found[name] = function
    return found


def saved(name: str, build) -> ov.Model:
    """The hand-built model as saved once under the model cache: builders leave some ops unnamed, and OpenVINO
    names those from a process-wide counter, so a model built afresh in each run would differ by those names."""
    from models import cache_dir
    xml = cache_dir() / "identity" / f"{name}.xml"
    if not xml.exists():
        xml.parent.mkdir(parents=True, exist_ok=True)
        ov.save_model(build(), str(xml), compress_to_fp16=False)
    return ov.Core().read_model(str(xml))


def random_items(model: ov.Model, count: int, seed: int = 0) -> list[dict]:
    """Seeded items for every input: dynamic dimensions become 1 (the first) or 8, integers fall in [0, 10)."""
    rng = np.random.default_rng(seed)
    items = []
    for _ in range(count):
        item = {}
        for parameter in model.get_parameters():
            shape = [d.get_length() if d.is_static else (1 if axis == 0 else 8)
                     for axis, d in enumerate(parameter.get_partial_shape())]
            element = parameter.get_element_type()
            if element.is_real():
                value = rng.standard_normal(shape).astype(np.float32) * 2
            else:
                value = rng.integers(0, 10, shape).astype(element.to_dtype())
            item[parameter.output(0).get_any_name() if parameter.output(0).get_names()
                 else parameter.get_friendly_name()] = value
        items.append(item)
    return items


def fingerprint(model: ov.Model, folder: Path, label: str, save: Path | None) -> dict:
    xml = folder / f"{label}.xml"
    ov.save_model(model, str(xml), compress_to_fp16=False)
    digests = {"xml": hashlib.sha256(xml.read_bytes()).hexdigest(),
               "bin": hashlib.sha256(xml.with_suffix(".bin").read_bytes()).hexdigest()}
    if save is not None:
        save.mkdir(parents=True, exist_ok=True)
        (save / f"{label}.xml").write_bytes(xml.read_bytes())
        (save / f"{label}.bin").write_bytes(xml.with_suffix(".bin").read_bytes())
    return digests


def model_fingerprints(name: str, model: ov.Model, items, subset_size: int, save: Path | None) -> dict:
    import ovptq
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        keep = None if save is None else save / name
        for mode, options in MODES.items():
            started = time.perf_counter()
            int8 = ovptq.quantize(model, ovptq.Dataset(items), subset_size=subset_size, **options)
            results[mode] = {**fingerprint(int8, folder, mode, keep), "seconds": time.perf_counter() - started}
        statistics = folder / "statistics.npz"
        int8 = ovptq.quantize(model, ovptq.Dataset(items), subset_size=subset_size, statistics_path=statistics)
        results["file_write"] = fingerprint(int8, folder, "file_write", keep)
        for mode, options in MODES.items():
            int8 = ovptq.quantize(model, ovptq.Dataset(items), subset_size=subset_size, statistics_path=statistics,
                                  **options)
            results[f"file_{mode}"] = fingerprint(int8, folder, f"file_{mode}", keep)
    return results


def all_fingerprints(save: Path | None, only: list[str] | None, out: Path) -> dict:
    """Every model's fingerprints, written to `out` after each model (a long run keeps what it did)."""
    from benchmarks.compare import calibration_folder
    from benchmarks.worker import DiskItems
    from models import get_model
    results = {}
    for name, build in handmade_models().items():
        if only and name not in only:
            continue
        model = saved(name, build)
        results[name] = model_fingerprints(name, model, random_items(model, HANDMADE_ITEMS), HANDMADE_ITEMS, save)
        out.write_text(json.dumps(results, indent=1))
        print(f"{name}: done", flush=True)
    for name in ZOO_TEST_MODELS + BENCHMARK_MODELS:
        if only and name not in only:
            continue
        spec = get_model(name)
        count = 300 if name in BENCHMARK_MODELS else ZOO_TEST_ITEMS
        model = ov.Core().read_model(spec.xml_path())
        results[name] = model_fingerprints(name, model, DiskItems(calibration_folder(spec, count)), count, save)
        out.write_text(json.dumps(results, indent=1))
        print(f"{name}: done ({results[name]['default']['seconds']:.1f} s default)", flush=True)
    return results


def differences(before: dict, after: dict) -> list[str]:
    lines = []
    for name in sorted(set(before) | set(after)):
        for mode in sorted(set(before.get(name, {})) | set(after.get(name, {}))):
            old, new = before.get(name, {}).get(mode), after.get(name, {}).get(mode)
            if old is None or new is None:
                lines.append(f"{name} {mode}: only in {'after' if old is None else 'before'}")
                continue
            changed = [part for part in ("xml", "bin") if old[part] != new[part]]
            if changed:
                lines.append(f"{name} {mode}: {' and '.join(changed)} differ")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON file of the fingerprints")
    parser.add_argument("--against", help="fingerprints recorded earlier: print every difference")
    parser.add_argument("--save", type=Path, help="also keep every IR under this folder (for diffs)")
    parser.add_argument("--models", nargs="+", help="only these models")
    args = parser.parse_args(argv)
    import os
    os.environ.setdefault("CI", "true")
    os.environ.setdefault("OVPTQ_PROGRESS", "0")
    results = all_fingerprints(args.save, args.models, Path(args.out))
    count = sum(len(modes) for modes in results.values())
    print(f"{len(results)} models, {count} IRs fingerprinted into {args.out}")
    if not args.against:
        return 0
    before = json.loads(Path(args.against).read_text())
    if args.models:
        before = {name: modes for name, modes in before.items() if name in args.models}
    lines = differences(before, results)
    print("\n".join(lines) if lines else f"all {count} IRs bit-identical to {args.against}")
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main())
