"""Quantize time, peak memory and output SQNR of ovptq and NNCF as the model grows, from BERT-base to LLM-sized.

    python -m benchmarks.model_size                                  # BERT base and large, decoders of 2, 6, 12 layers
    python -m benchmarks.model_size --models bert_base decoder_2     # a quick look (a few minutes)
    python -m benchmarks.model_size --update-readme                  # also write the table into benchmarks/README.md

The models are real architectures with random weights: `transformers` configs (BERT; a Llama-architecture decoder
with grouped-query attention, TinyLlama's widths), initialised by torch with a fixed seed, converted with
`ov.convert_model` and saved as FP32 IR in the model cache (built once). Nothing comes from a model hub. Both tools
quantize with `model_type="transformer"` on the same 32 sequences of 128 random tokens, each in a process of its
own (`benchmarks.worker`), so peak RSS is the tool's own: the process's high-water mark (VmHWM) after quantize,
which includes reading the model (`read_model` maps the .bin). The output SQNR against FP32 is measured on 8 other
sequences (BERT: the last hidden state; decoder: the logits). Results: benchmarks/results/model_size.{json,md,png}.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import openvino as ov

from benchmarks import plots
from benchmarks.compare import RESULTS, command_line, publish, run_tool, save_run
from benchmarks.worker import save_items

TOOLS = ["nncf_transformer", "ovptq_transformer"]
SEQUENCE = 128
CALIBRATION, EVALUATION = 32, 8
TINYLLAMA = dict(hidden_size=2048, intermediate_size=5632, num_attention_heads=32, num_key_value_heads=4,
                 vocab_size=32000, max_position_embeddings=2048)
MODELS = {
    "bert_base": ("bert", dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                               intermediate_size=3072)),
    "bert_large": ("bert", dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                                intermediate_size=4096)),
    "decoder_2": ("llama", dict(TINYLLAMA, num_hidden_layers=2)),
    "decoder_6": ("llama", dict(TINYLLAMA, num_hidden_layers=6)),
    "decoder_12": ("llama", dict(TINYLLAMA, num_hidden_layers=12)),
}
SEED = 0


def model_folder() -> Path:
    from models import cache_dir
    return cache_dir() / "model_size"


def build(name: str) -> Path:
    """The FP32 IR of `name`, built once into the model cache."""
    xml = model_folder() / name / "model.xml"
    if xml.exists():
        return xml
    import torch
    import transformers
    family, sizes = MODELS[name]
    torch.manual_seed(SEED)
    if family == "bert":
        config = transformers.BertConfig(**sizes)
        network = transformers.BertModel(config)
    else:
        config = transformers.LlamaConfig(**sizes, use_cache=False, tie_word_embeddings=False)
        network = transformers.LlamaForCausalLM(config)
    network.eval()
    example = {key: torch.from_numpy(value) for key, value in tokens(family, 1, SEED)[0].items()}
    with torch.no_grad():
        converted = ov.convert_model(network, example_input=example)
    xml.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(converted, xml, compress_to_fp16=False)
    return xml


def tokens(family: str, count: int, seed: int) -> list[dict[str, np.ndarray]]:
    """`count` items of SEQUENCE random token ids (BERT: with token types), full attention masks."""
    rng = np.random.default_rng(seed)
    vocabulary = 30522 if family == "bert" else TINYLLAMA["vocab_size"]
    items = []
    for _ in range(count):
        item = {"input_ids": rng.integers(0, vocabulary, (1, SEQUENCE), dtype=np.int64),
                "attention_mask": np.ones((1, SEQUENCE), np.int64)}
        if family == "bert":
            item["token_type_ids"] = np.zeros((1, SEQUENCE), np.int64)
        items.append(item)
    return items


def output_sqnr_db(fp32_xml: Path, int8_xml: str, items: list[dict]) -> float:
    """`sqnr_db` of the first output on `items`, both models compiled in f32, one after the other."""
    from ovptq.measuring.measure import run, sqnr_db
    core = ov.Core()
    reference, quantized = (run(core, core.read_model(str(path)), items)[0] for path in (fp32_xml, int8_xml))
    return sqnr_db(reference, quantized)


def measure(name: str, work: Path) -> dict:
    family = MODELS[name][0]
    xml = build(name)
    data = save_items(tokens(family, CALIBRATION, SEED + 1), work / name / "calibration")
    held_out = tokens(family, EVALUATION, SEED + 2)
    row = {"model": name, "weights_mb": xml.with_suffix(".bin").stat().st_size / 2 ** 20}
    for tool in TOOLS:
        report = run_tool(tool, xml, data, work / name, CALIBRATION)
        row[tool.split("_")[0]] = {"seconds": report["quantize_seconds"], "peak_rss_mb": report["peak_rss_mb"],
                                   "sqnr_db": output_sqnr_db(xml, report["xml"], held_out)}
    print(f"{name:11s} {row['weights_mb']:7.0f} MB: " + "  ".join(
        f"{tool} {row[tool]['seconds']:6.1f} s {row[tool]['peak_rss_mb']:6.0f} MB {row[tool]['sqnr_db']:5.1f} dB"
        for tool in ("nncf", "ovptq")), flush=True)
    return row


def table(rows: list[dict]) -> list[str]:
    lines = ["| model | FP32 weights MB | quantize s NNCF / ovptq (ratio) | peak RSS MB NNCF / ovptq "
             "| peak RSS / weights NNCF / ovptq | output SQNR dB NNCF / ovptq |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        n, o, weights = row["nncf"], row["ovptq"], row["weights_mb"]
        lines.append(f"| {row['model']} | {weights:.0f} | {n['seconds']:.1f} / {o['seconds']:.1f} "
                     f"({o['seconds'] / n['seconds']:.2f}) | {n['peak_rss_mb']:.0f} / {o['peak_rss_mb']:.0f} | "
                     f"{n['peak_rss_mb'] / weights:.2f} / {o['peak_rss_mb'] / weights:.2f} | "
                     f"{n['sqnr_db']:.1f} / {o['sqnr_db']:.1f} |")
    return lines


def plot(rows: list[dict], path: Path) -> bool:
    """Two panels against the FP32 weight bytes: quantize time and peak RSS; NNCF dashed, ovptq solid."""
    panels = plots.two_panels()
    if panels is None:
        return False
    plt, figure, axes = panels
    ordered = sorted(rows, key=lambda row: row["weights_mb"])
    weights = [row["weights_mb"] for row in ordered]
    for tool, style in (("nncf", "--"), ("ovptq", "-")):
        axes[0].plot(weights, [row[tool]["seconds"] for row in ordered], style, marker="o", label=tool)
        axes[1].plot(weights, [row[tool]["peak_rss_mb"] for row in ordered], style, marker="o", label=tool)
    axes[1].plot(weights, weights, ":", color="grey", label="1x the weights")
    axes[1].plot(weights, [1.5 * w for w in weights], "-.", color="grey", label="1.5x the weights")
    for row in ordered:
        axes[0].annotate(row["model"], (row["weights_mb"], row["ovptq"]["seconds"]), fontsize=7)
    for axis in axes:
        axis.legend(fontsize=8)
    plots.save(plt, figure, axes, "FP32 weights (MB)", ("quantize wall time (s)", "peak RSS (MB)"),
               "ovptq (solid) vs NNCF (dashed), model_type=transformer, 32 x 128 tokens", path)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--update-readme", action="store_true", help="write the table into benchmarks/README.md")
    args = parser.parse_args(argv)
    started = time.time()
    command = command_line("benchmarks.model_size", argv)
    rows = [measure(name, args.out / "irs" / "model_size") for name in args.models]
    lines = table(rows)
    if plot(rows, args.out / "model_size.png"):
        lines += ["", "![quantize time and peak memory against the model's weights](results/model_size.png)"]
    publish(save_run(args.out, "model_size", command, started, rows, lines), "model_size", args.update_readme)
    return 0


if __name__ == "__main__":
    sys.exit(main())
