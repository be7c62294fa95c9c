"""A decoder with a KV cache, as OpenVINO's LLM export writes it, quantized by both tools: state kept, generation
compared with FP32 over several steps.

    python -m benchmarks.stateful_decoder                       # the 2-layer decoder of benchmarks.model_size
    python -m benchmarks.stateful_decoder --layers 6 --update-readme

The model: a Llama-architecture decoder (`transformers` config, TinyLlama's widths, seeded random weights; nothing
from a model hub) exported with `torch.export` with its past keys and values as inputs, then made stateful the way
OpenVINO's LLM export does it: a `beam_idx` input reorders each cached tensor (Gather on the batch axis), and
OpenVINO's MakeStateful transformation turns each past input / present output pair into a ReadValue / Assign, whose
initial value is an empty cache. Inputs: input_ids, attention_mask, position_ids, beam_idx.

Both tools quantize it with `model_type="transformer"` on 32 prompts of 128 random tokens, each prompt one sequence
from an empty cache. Then 8 other prompts of 32 tokens run through the cache for 16 more one-token steps, the
tokens fed being FP32's greedy choices, so that both models see the same sequence. Reported: the state ops kept,
the output SQNR of the logits of every step against FP32, and how often the greedy next token agrees with FP32's.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import openvino as ov

from benchmarks.compare import RESULTS, command_line, publish, save_run
from benchmarks.model_size import SEED, TINYLLAMA, model_folder
from ovptq.measuring.measure import sqnr_db

PROMPT, CALIBRATION = 128, 32
EVALUATION, EVALUATION_PROMPT, STEPS = 8, 32, 16
TOOLS = ["nncf", "ovptq"]


def build(layers: int) -> Path:
    """The stateful FP32 IR of a `layers`-layer decoder, built once into the model cache."""
    xml = model_folder() / f"stateful_decoder_{layers}" / "model.xml"
    if not xml.exists():
        xml.parent.mkdir(parents=True, exist_ok=True)
        ov.save_model(make_stateful(export(layers), layers), xml, compress_to_fp16=False)
    return xml


def export(layers: int) -> ov.Model:
    """The decoder with flat past / present key and value tensors as inputs and outputs."""
    import torch
    import transformers
    torch.manual_seed(SEED)
    config = transformers.LlamaConfig(**TINYLLAMA, num_hidden_layers=layers, tie_word_embeddings=False)
    network = transformers.LlamaForCausalLM(config).eval()
    heads, width = config.num_key_value_heads, config.hidden_size // config.num_attention_heads

    class FlatCache(torch.nn.Module):
        """past keys and values as tensors in, logits and present keys and values out."""

        def __init__(self):
            super().__init__()
            self.network = network

        def forward(self, input_ids, attention_mask, position_ids, *past):
            cache = transformers.DynamicCache(config=config)
            for index, layer in enumerate(cache.layers):
                layer.keys, layer.values = past[2 * index], past[2 * index + 1]
                layer.dtype, layer.device, layer.is_initialized = past[0].dtype, past[0].device, True
            out = self.network(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                               past_key_values=cache, use_cache=True)
            return (out.logits, *[t for layer in out.past_key_values.layers for t in (layer.keys, layer.values)])

    past = tuple(torch.zeros(1, heads, 3, width) for _ in range(2 * layers))
    example = (torch.ones(1, 4, dtype=torch.long), torch.ones(1, 7, dtype=torch.long), torch.arange(3, 7)[None], *past)
    auto = torch.export.Dim.AUTO
    shapes = ({1: auto}, {1: auto}, {1: auto}, tuple({2: auto} for _ in past))
    with torch.no_grad():
        model = ov.convert_model(torch.export.export(FlatCache(), example, dynamic_shapes=shapes))
    names = ["input_ids", "attention_mask", "position_ids", *cache_names("past_key_values", layers)]
    for parameter, name in zip(model.get_parameters(), names):
        parameter.set_friendly_name(name)
        parameter.output(0).get_tensor().set_names({name})
    for output, name in zip(model.outputs, ["logits", *cache_names("present", layers)]):
        output.get_tensor().set_names({name})
    return model


def cache_names(prefix: str, layers: int) -> list[str]:
    return [f"{prefix}.{layer}.{kind}" for layer in range(layers) for kind in ("key", "value")]


def make_stateful(model: ov.Model, layers: int) -> ov.Model:
    """beam_idx reorders every past tensor; each past / present pair becomes a ReadValue / Assign whose initial
    value is an empty cache [1, heads, 0, width]."""
    from openvino import opset13 as ops
    from openvino._offline_transformations import apply_make_stateful_transformation
    beam_idx = ops.parameter([-1], np.int32, name="beam_idx")
    beam_idx.output(0).get_tensor().set_names({"beam_idx"})
    for parameter in model.get_parameters():
        if parameter.get_friendly_name().startswith("past_key_values"):
            readers = list(parameter.output(0).get_target_inputs())
            reordered = ops.gather(parameter, beam_idx, ops.constant(np.int64(0)))
            for reader in readers:
                reader.replace_source_output(reordered.output(0))
    model.add_parameters([beam_idx])
    apply_make_stateful_transformation(model, dict(zip(cache_names("past_key_values", layers),
                                                       cache_names("present", layers))))
    empty = [1, TINYLLAMA["num_key_value_heads"], 0, TINYLLAMA["hidden_size"] // TINYLLAMA["num_attention_heads"]]
    for op in model.get_ordered_ops():
        if op.get_type_name() == "ReadValue":
            op.set_arguments([ops.broadcast(ops.constant(np.float32(0)), ops.constant(np.array(empty, np.int64)))])
    model.validate_nodes_and_infer_types()
    return model


def prompt(rng: np.random.Generator, length: int) -> dict[str, np.ndarray]:
    return {"input_ids": rng.integers(0, TINYLLAMA["vocab_size"], (1, length), dtype=np.int64),
            "attention_mask": np.ones((1, length), np.int64),
            "position_ids": np.arange(length, dtype=np.int64)[None], "beam_idx": np.zeros(1, np.int32)}


def generate(model: ov.Model | str, prompts: list[dict], tokens: list[list[int]] | None = None):
    """Per prompt, the last-position logits of the prompt and of STEPS one-token steps, and the tokens fed
    (greedy, or `tokens`)."""
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    logits, fed = [], []
    for index, item in enumerate(prompts):
        request.reset_state()
        steps = [request.infer(item)[compiled.output(0)][0, -1].astype(np.float64)]
        length, chosen = item["input_ids"].shape[1], []
        for step in range(STEPS):
            token = int(np.argmax(steps[-1])) if tokens is None else tokens[index][step]
            chosen.append(token)
            feed = {"input_ids": np.array([[token]], np.int64),
                    "attention_mask": np.ones((1, length + step + 1), np.int64),
                    "position_ids": np.array([[length + step]], np.int64), "beam_idx": np.zeros(1, np.int32)}
            steps.append(request.infer(feed)[compiled.output(0)][0, -1].astype(np.float64))
        logits.append(np.stack(steps))
        fed.append(chosen)
    return logits, fed


def quantize(tool: str, model: ov.Model, data: list[dict]) -> ov.Model:
    if tool == "ovptq":
        import ovptq
        return ovptq.quantize(model, ovptq.Dataset(data), subset_size=len(data), model_type="transformer")
    import nncf
    return nncf.quantize(model, nncf.Dataset(data), subset_size=len(data), model_type=nncf.ModelType.TRANSFORMER)


def measure(layers: int) -> dict:
    xml = build(layers)
    rng = np.random.default_rng(SEED + 3)
    calibration = [prompt(rng, PROMPT) for _ in range(CALIBRATION)]
    evaluation = [prompt(rng, EVALUATION_PROMPT) for _ in range(EVALUATION)]
    reference, tokens = generate(str(xml), evaluation)
    row = {"layers": layers, "weights_mb": xml.with_suffix(".bin").stat().st_size / 2 ** 20}
    for tool in TOOLS:
        model = ov.Core().read_model(xml)
        started = time.perf_counter()
        quantized = quantize(tool, model, calibration)
        seconds = time.perf_counter() - started
        logits, _ = generate(quantized, evaluation, tokens)
        agree = np.mean([np.argmax(r, axis=1) == np.argmax(q, axis=1) for r, q in zip(reference, logits)])
        types = [op.get_type_name() for op in quantized.get_ordered_ops()]
        row[tool] = {"seconds": seconds, "sqnr_db": sqnr_db(reference, logits), "top1_agreement": float(agree),
                     "read_value": types.count("ReadValue"), "assign": types.count("Assign"),
                     "fake_quantize": types.count("FakeQuantize")}
        print(f"{tool}: {row[tool]}", flush=True)
    return row


def table(rows: list[dict]) -> list[str]:
    lines = ["| decoder | FP32 weights MB | ReadValue / Assign kept NNCF, ovptq | logits SQNR dB over "
             f"{STEPS + 1} steps NNCF / ovptq | greedy token agrees with FP32 NNCF / ovptq | quantize s NNCF / ovptq |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        n, o = row["nncf"], row["ovptq"]
        lines.append(f"| {row['layers']} layers | {row['weights_mb']:.0f} | {n['read_value']} / {n['assign']}, "
                     f"{o['read_value']} / {o['assign']} | {n['sqnr_db']:.1f} / {o['sqnr_db']:.1f} | "
                     f"{n['top1_agreement']:.3f} / {o['top1_agreement']:.3f} | "
                     f"{n['seconds']:.1f} / {o['seconds']:.1f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", nargs="+", type=int, default=[2])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--update-readme", action="store_true", help="write the table into benchmarks/README.md")
    args = parser.parse_args(argv)
    started = time.time()
    rows = [measure(layers) for layers in args.layers]
    publish(save_run(args.out, "stateful_decoder", command_line("benchmarks.stateful_decoder", argv), started, rows,
                     table(rows)), "stateful_decoder", args.update_readme)
    return 0


if __name__ == "__main__":
    sys.exit(main())
