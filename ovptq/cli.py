"""The `ovptq` command: quantize a model, prove it runs INT8, compare its speed.

    ovptq quantize MODEL --data DATA -o OUT.xml [options]   # DATA: image folder, .npy / .npz, module:function
    ovptq quantize ... --max-drop 0.01 --validate pkg.metrics:accuracy --val-data DATA   # accuracy control
    ovptq inspect MODEL.xml [--layers] [--json]            # the INT8 proof from the CPU runtime model
    ovptq bench FP32.xml INT8.xml [...]                    # benchmark_app, alternating, median of rounds
    ovptq report FP32.xml INT8.xml --data DATA             # per-layer error, worst first (table, JSON, PNG)

Exit code 0 on success, 1 on an ovptq error (the message says what to do), 2 on a usage error.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys

from ovptq.runtime import bench

log = logging.getLogger("ovptq")


def main(argv: list[str] | None = None) -> int:
    if hasattr(signal, "SIGPIPE"):  # `ovptq inspect x.xml | head` ends quietly, as a Unix tool does
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    parser = argparse.ArgumentParser(prog="ovptq", description="Post-training INT8 quantization for OpenVINO "
                                     "models.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)
    _quantize_parser(commands.add_parser("quantize", help="quantize a model to INT8 and save the IR"))
    inspect = commands.add_parser("inspect", help="which layers the CPU runs in INT8")
    inspect.add_argument("model", help="an IR (.xml) or .onnx model")
    inspect.add_argument("--layers", action="store_true", help="also list every runtime layer")
    inspect.add_argument("--json", action="store_true", help="print the report as JSON")
    bench.add_arguments(commands.add_parser("bench", help="benchmark_app on FP32 and INT8 IRs, alternately"))
    report = commands.add_parser("report", help="per-layer quantization error, worst first")
    report.add_argument("fp32", help="the FP32 model")
    report.add_argument("int8", help="the INT8 model ovptq made from it")
    report.add_argument("--data", required=True, help="as for quantize: image folder, .npy / .npz, module:function")
    report.add_argument("--samples", type=bench.positive_int, default=8,
                        help="calibration items the errors are measured on (default: %(default)s)")
    report.add_argument("--ablation", action="store_true",
                        help="also rank by the output gain of putting each layer back in float (slower)")
    report.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    report.add_argument("--plot", metavar="PATH", help="also draw it (PNG; needs matplotlib)")
    _image_options(report)
    args = parser.parse_args(argv)
    if args.command == "quantize" and (args.max_drop is not None) != bool(args.validate and args.val_data):
        parser.error("accuracy control takes --max-drop, --validate and --val-data together")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s: %(message)s")
    from ovptq.errors import OvptqError
    try:
        return {"quantize": _quantize, "inspect": _inspect, "bench": bench.run, "report": _report}[args.command](args)
    except OvptqError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


def _quantize_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="an IR (.xml with its .bin) or .onnx model")
    parser.add_argument("--data", required=True, help="a folder of images, a .npy ([N, ...]) or .npz (one [N, ...] "
                                                      "array per input name) file, or module:function")
    parser.add_argument("-o", "--output", required=True, help="the INT8 IR to write (.xml; the .bin goes beside)")
    parser.add_argument("--preset", choices=["performance", "mixed"])
    parser.add_argument("--subset-size", type=bench.positive_int, default=300,
                        help="calibration items used for statistics (default: %(default)s)")
    parser.add_argument("--model-type", choices=["transformer"])
    parser.add_argument("--target-device", choices=["ANY", "CPU", "GPU", "NPU"], default="ANY",
                        help="ANY (default): an IR for any device, no decision taken from this machine's timings; "
                             "CPU: for this CPU, layers slower in int8 here go back to float (the speed check) "
                             "(default: %(default)s)")
    parser.add_argument("--ignore-names", nargs="+", default=[], metavar="NAME")
    parser.add_argument("--ignore-types", nargs="+", default=[], metavar="TYPE")
    parser.add_argument("--ignore-patterns", nargs="+", default=[], metavar="REGEX")
    correction = parser.add_mutually_exclusive_group()
    correction.add_argument("--no-bias-correction", action="store_true")
    correction.add_argument("--full-bias-correction", action="store_true")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (also OVPTQ_PROGRESS=0)")
    control = parser.add_argument_group("accuracy control (quantize_with_accuracy_control)")
    control.add_argument("--max-drop", type=float, help="the largest metric drop allowed against FP32")
    control.add_argument("--drop-type", choices=["absolute", "relative"], default="absolute",
                         help="(default: %(default)s)")
    control.add_argument("--validate", metavar="MODULE:FUNCTION",
                         help="validation_fn(compiled_model, validation_data) -> metric (higher is better)")
    control.add_argument("--val-data", help="validation data, in any form --data takes")
    _image_options(parser)


def _image_options(parser: argparse.ArgumentParser) -> None:
    images = parser.add_argument_group("image folders")
    images.add_argument("--size", nargs=2, type=int, metavar=("HEIGHT", "WIDTH"),
                        help="resize to (default: the model input's height and width)")
    images.add_argument("--mean", nargs=3, type=float, default=[0.0, 0.0, 0.0],
                        help="per channel, subtracted (default: 0 0 0)")
    images.add_argument("--scale", nargs=3, type=float, default=[1.0, 1.0, 1.0],
                        help="per channel, divided by (default: 1 1 1)")
    images.add_argument("--layout", choices=["NCHW", "NHWC"], default="NCHW", help="(default: %(default)s)")
    images.add_argument("--bgr", action="store_true", help="channels in BGR order (default RGB)")


def _quantize(args: argparse.Namespace) -> int:
    import ovptq
    from ovptq import cli_data, files
    from ovptq.quantize import load_model
    from ovptq.rewrite.record import stage_record
    model = load_model(args.model)
    items = cli_data.load(args.data, model, _images(args))
    scope = None
    if args.ignore_names or args.ignore_types or args.ignore_patterns:
        scope = ovptq.IgnoredScope(names=args.ignore_names, types=args.ignore_types, patterns=args.ignore_patterns)
    advanced = ovptq.AdvancedQuantizationParameters(disable_bias_correction=args.no_bias_correction,
                                                    show_progress=False if args.no_progress else None)
    options = dict(preset=args.preset, subset_size=args.subset_size, fast_bias_correction=not args.full_bias_correction,
                   model_type=args.model_type, ignored_scope=scope, target_device=args.target_device)
    if args.max_drop is None:
        int8 = ovptq.quantize(model, ovptq.Dataset(items), advanced_parameters=advanced, **options)
    else:
        validate = cli_data.import_function(args.validate, "--validate")
        validation = ovptq.Dataset(cli_data.load(args.val_data, model, _images(args)))
        int8 = ovptq.quantize_with_accuracy_control(model, ovptq.Dataset(items), validation, validate, args.max_drop,
                                                    args.drop_type, advanced_quantization_parameters=advanced,
                                                    **options)
    files.save_model(int8, args.output)
    speed = stage_record(int8, "speed_check")
    if speed.get("whole_model_in_float"):
        print(f"wrote {args.output}: NO INT8 LAYER. On this CPU ({speed['cpu']}) the INT8 model ran slower than the "
              f"FP32 model at {speed['fp32_precision']}, so the speed check gave every layer back to float; quantize "
              "with --target-device ANY to keep INT8.")
    else:
        print(f"wrote {args.output}")
    return 0


def _images(args: argparse.Namespace):
    from ovptq import cli_data
    return cli_data.ImageOptions(tuple(args.size) if args.size else None, tuple(args.mean), tuple(args.scale),
                                 args.layout, args.bgr)


def _report(args: argparse.Namespace) -> int:
    import ovptq
    from ovptq import cli_data, files
    from ovptq.quantize import load_model
    from ovptq.report import layer_errors
    fp32, int8 = load_model(args.fp32), load_model(args.int8)
    report = layer_errors(fp32, int8, ovptq.Dataset(cli_data.load(args.data, fp32, _images(args))), args.samples,
                          ablation=args.ablation)
    print(report)
    if args.json:
        files.write_text(args.json, report.to_json())
    if args.plot:
        report.plot(args.plot)
    return 0


def _inspect(args: argparse.Namespace) -> int:
    import ovptq
    from ovptq.quantize import load_model
    report = ovptq.inspect(load_model(args.model))
    if args.json:
        print(json.dumps(report.as_dict(), indent=1))
        return 0
    if args.layers:
        print(report.table())
        print()
    print(report)
    print(report.verdict())
    for hint in report.hints():
        print(f"hint: {hint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
