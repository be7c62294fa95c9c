"""Stateful models: a decoder with a KV cache (ReadValue / Assign, beam_idx, position_ids) quantizes with its state
kept, each calibration item is one sequence from the initial state, and generation stays close to FP32."""

import builders
import numpy as np

import ovptq
from ovptq.measuring.measure import sqnr_db

PROMPTS = [builders.decoder_prompt(12, seed) for seed in range(16)]


def fake_quantize_ranges(model):
    return {op.get_friendly_name(): (float(op.input_value(1).get_node().get_data().min()),
                                     float(op.input_value(2).get_node().get_data().max()))
            for op in model.get_ordered_ops() if op.get_type_name() == "FakeQuantize"}


def test_the_kv_cache_decoder_quantizes_with_its_state_ops_and_matmuls_in_int8():
    model = builders.kv_cache_decoder()
    int8 = ovptq.quantize(model, ovptq.Dataset(PROMPTS), model_type="transformer")
    types = [op.get_type_name() for op in int8.get_ordered_ops()]
    assert types.count("ReadValue") == types.count("Assign") == len(int8.get_sinks()) == 4
    assert {sink.get_variable_id() for sink in int8.get_sinks()} == {sink.get_variable_id()
                                                                      for sink in model.get_sinks()}
    report = ovptq.inspect(int8)
    assert {"layer0/q", "layer0/o", "layer0/up", "layer0/down", "layer1/key", "lm_head"} <= report.int8_names()


def test_every_calibration_item_starts_from_the_initial_state():
    """Four copies of one prompt give the ranges of one copy: no item runs on the cache another item left."""
    model = builders.kv_cache_decoder()
    once = ovptq.quantize(model, ovptq.Dataset(PROMPTS[:1]), model_type="transformer")
    four = ovptq.quantize(model, ovptq.Dataset(PROMPTS[:1] * 4), model_type="transformer")
    assert fake_quantize_ranges(four) == fake_quantize_ranges(once)
    assert builders.ir_bytes(four)[1] == builders.ir_bytes(once)[1]


def test_generation_through_the_cache_stays_close_to_fp32():
    model = builders.kv_cache_decoder()
    int8 = ovptq.quantize(model, ovptq.Dataset(PROMPTS), model_type="transformer")
    reference, produced = [], []
    for seed in range(100, 104):
        prompt = builders.decoder_prompt(8, seed)
        fp32_logits, tokens = builders.generate(model, prompt, steps=6)
        int8_logits, _ = builders.generate(int8, prompt, steps=6, tokens=tokens, emulated=True)
        reference.append(fp32_logits)
        produced.append(int8_logits)
    assert sqnr_db(reference, produced) > 20.0
