"""Tiny hand-built models for the tests: each function returns an `ov.Model` with readable op names."""

from __future__ import annotations

import numpy as np
import openvino as ov
import openvino.opset13 as ops

RNG_SEED = 0


def _rng(seed: int = RNG_SEED) -> np.random.Generator:
    return np.random.default_rng(seed)


def conv(x, out_channels: int, name: str, kernel: int = 3, seed: int = 0, bias: bool = True, weight_dtype=np.float32,
         groups: int = 1):
    """Convolution (or GroupConvolution when groups > 1) with 'same' padding and an optional bias Add."""
    in_channels = x.get_partial_shape()[1].get_length() if hasattr(x, "get_partial_shape") else \
        x.output(0).get_partial_shape()[1].get_length()
    rng = _rng(seed)
    pad = kernel // 2
    if groups == 1:
        w = (rng.standard_normal((out_channels, in_channels, kernel, kernel)) * 0.2).astype(weight_dtype)
        weight = ops.constant(w, name=f"{name}/weight")
        if weight_dtype != np.float32:
            weight = ops.convert(weight, ov.Type.f32, name=f"{name}/weight/convert")
        y = ops.convolution(x, weight, [1, 1], [pad, pad], [pad, pad], [1, 1], name=name)
    else:
        w = (rng.standard_normal((groups, out_channels // groups, in_channels // groups, kernel, kernel)) * 0.2
             ).astype(np.float32)
        y = ops.group_convolution(x, ops.constant(w, name=f"{name}/weight"), [1, 1], [pad, pad], [pad, pad], [1, 1],
                                  name=name)
    if bias:
        b = (rng.standard_normal((1, out_channels, 1, 1)) * 0.1).astype(np.float32)
        y = ops.add(y, ops.constant(b, name=f"{name}/bias_value"), name=f"{name}/bias")
    return y


def model(outputs, inputs, name="model") -> ov.Model:
    outputs = outputs if isinstance(outputs, list) else [outputs]
    inputs = inputs if isinstance(inputs, list) else [inputs]
    return ov.Model([ops.result(o, name=f"{o.get_friendly_name()}/result") if not isinstance(o, ov.Output)
                     else ops.result(o) for o in outputs], inputs, name)


def conv_relu(channels: int = 8) -> ov.Model:
    """input -> conv -> relu -> conv -> output"""
    x = ops.parameter([1, 3, 16, 16], np.float32, name="input")
    y = ops.relu(conv(x, channels, "conv1"), name="relu1")
    return model(conv(y, channels, "conv2", seed=1), x)


def residual_block() -> ov.Model:
    """input -> conv1 -> relu1 -> {conv2 -> relu2 -> conv3, identity} -> add -> relu3 -> conv4"""
    x = ops.parameter([1, 3, 16, 16], np.float32, name="input")
    r1 = ops.relu(conv(x, 8, "conv1"), name="relu1")
    r2 = ops.relu(conv(r1, 8, "conv2", seed=1), name="relu2")
    c3 = conv(r2, 8, "conv3", seed=2)
    add = ops.add(c3, r1, name="add")
    r3 = ops.relu(add, name="relu3")
    return model(conv(r3, 4, "conv4", seed=3), x)


def depthwise_block() -> ov.Model:
    """input -> conv1 -> relu6 -> depthwise -> hswish -> pointwise conv"""
    x = ops.parameter([1, 3, 16, 16], np.float32, name="input")
    r = ops.clamp(conv(x, 8, "conv1"), 0.0, 6.0, name="relu6")
    d = ops.hswish(conv(r, 8, "depthwise", groups=8, seed=1), name="hswish")
    return model(conv(d, 8, "pointwise", kernel=1, seed=2), x)


def concat_block() -> ov.Model:
    """input -> {conv_a -> relu_a, conv_b -> relu_b -> maxpool(1x1)} -> concat -> conv_c"""
    x = ops.parameter([1, 3, 16, 16], np.float32, name="input")
    a = ops.relu(conv(x, 4, "conv_a"), name="relu_a")
    b = ops.relu(conv(x, 4, "conv_b", seed=1), name="relu_b")
    b = ops.max_pool(b, [1, 1], [1, 1], [0, 0], [0, 0], [1, 1], name="pool_b").output(0)
    cat = ops.concat([a, b], 1, name="concat")
    return model(conv(cat, 8, "conv_c", seed=2), x)


def preprocessing_block() -> ov.Model:
    """NHWC input -> subtract mean -> multiply scale -> transpose to NCHW -> conv -> relu"""
    x = ops.parameter([1, 16, 16, 3], np.float32, name="input")
    s = ops.subtract(x, ops.constant(np.array([[[[0.5, 0.4, 0.3]]]], np.float32)), name="mean")
    m = ops.multiply(s, ops.constant(np.array([[[[2.0, 2.1, 2.2]]]], np.float32)), name="scale")
    t = ops.transpose(m, ops.constant(np.array([0, 3, 1, 2], np.int64)), name="to_nchw")
    return model(ops.relu(conv(t, 8, "conv1"), name="relu"), x)


def postprocessing_block() -> ov.Model:
    """input -> conv -> relu -> conv -> reshape -> softmax -> topk -> {values, indices}"""
    x = ops.parameter([1, 3, 8, 8], np.float32, name="input")
    c = conv(ops.relu(conv(x, 4, "conv1"), name="relu1"), 4, "conv2", seed=1)
    flat = ops.reshape(c, ops.constant(np.array([1, -1], np.int64)), False, name="flatten")
    scores = ops.softmax(flat, 1, name="softmax")
    mul = ops.multiply(scores, ops.constant(np.float32(2.0)), name="rescale")
    top = ops.topk(mul, ops.constant(np.int64(5)), 1, "max", "value", name="topk")
    return ov.Model([ops.result(top.output(0), name="values"), ops.result(top.output(1), name="indices")], [x],
                    "postprocessing")


def se_block() -> ov.Model:
    """input -> conv -> relu -> [x * sigmoid(fc2(relu(fc1(mean(x)))))] -> conv"""
    x = ops.parameter([1, 3, 8, 8], np.float32, name="input")
    f = ops.relu(conv(x, 8, "conv1"), name="relu1")
    mean = ops.reduce_mean(f, ops.constant(np.array([2, 3], np.int64)), True, name="se/mean")
    fc1 = ops.relu(conv(mean, 4, "se/fc1", kernel=1, seed=1), name="se/relu")
    gate = ops.sigmoid(conv(fc1, 8, "se/fc2", kernel=1, seed=2), name="se/sigmoid")
    scaled = ops.multiply(f, gate, name="se/mul")
    return model(conv(scaled, 8, "conv2", seed=3), x)


def swish_block() -> ov.Model:
    """input -> conv1 -> x * sigmoid(x) -> conv2"""
    x = ops.parameter([1, 3, 8, 8], np.float32, name="input")
    c = conv(x, 8, "conv1")
    s = ops.multiply(c, ops.sigmoid(c, name="sigmoid"), name="swish")
    return model(conv(s, 8, "conv2", seed=1), x)


def matmul_block() -> ov.Model:
    """input [1,4,16] -> matmul(W) + bias -> q; q x q^T (two activations) -> matmul(W2)"""
    x = ops.parameter([1, 4, 16], np.float32, name="input")
    rng = _rng(1)
    w = ops.constant((rng.standard_normal((16, 16)) * 0.3).astype(np.float32), name="fc1/weight")
    q = ops.add(ops.matmul(x, w, False, False, name="fc1"), ops.constant(np.zeros(16, np.float32)), name="fc1/bias")
    scores = ops.matmul(q, q, False, True, name="scores")
    w2 = ops.constant((rng.standard_normal((8, 4)) * 0.3).astype(np.float32), name="fc2/weight")
    return model(ops.matmul(scores, w2, False, True, name="fc2"), x)


def two_inputs() -> ov.Model:
    """a -> conv_a, b -> conv_b, add -> output"""
    a = ops.parameter([1, 3, 8, 8], np.float32, name="a")
    b = ops.parameter([1, 3, 8, 8], np.float32, name="b")
    return model(ops.add(conv(a, 4, "conv_a"), conv(b, 4, "conv_b", seed=1), name="add"), [a, b])


def dynamic_batch() -> ov.Model:
    """input [?,3,8,8] -> conv -> relu -> conv"""
    x = ops.parameter(ov.PartialShape([-1, 3, 8, 8]), np.float32, name="input")
    return model(conv(ops.relu(conv(x, 4, "conv1"), name="relu1"), 4, "conv2", seed=1), x)


def no_quantizable_op() -> ov.Model:
    x = ops.parameter([1, 3, 8, 8], np.float32, name="input")
    return model(ops.sigmoid(ops.relu(x, name="relu"), name="sigmoid"), x)


def images(count: int, shape=(1, 3, 16, 16), seed: int = 0, low: float = -1.0, high: float = 1.0) -> list[np.ndarray]:
    rng = _rng(seed)
    return [rng.uniform(low, high, size=shape).astype(np.float32) for _ in range(count)]


def infer(model_: ov.Model, inputs, emulated: bool = False) -> list[np.ndarray]:
    """The model's outputs on `inputs` (f32 on CPU). With `emulated`, its quantizers run in float: what the IR
    computes on any CPU with 32-bit int8 accumulation (VNNI, AMX), not what a CPU without VNNI makes of it (its
    kernels saturate pairs of u8 x i8 products at 16 bits): tests of quantization math use it."""
    from ovptq.measuring.measure import EMULATED
    config = {"INFERENCE_PRECISION_HINT": "f32", **(EMULATED if emulated else {})}
    compiled = ov.Core().compile_model(model_, "CPU", config)
    result = compiled(inputs)
    return [result[o] for o in compiled.outputs]


def deconvolution_block() -> ov.Model:
    """input -> conv -> relu -> ConvolutionBackpropData (stride 2) -> relu"""
    x = ops.parameter([1, 3, 8, 8], np.float32, name="input")
    r = ops.relu(conv(x, 8, "conv1"), name="relu1")
    w = (_rng(3).standard_normal((8, 4, 2, 2)) * 0.2).astype(np.float32)  # [C_in, C_out, k, k]
    d = ops.convolution_backprop_data(r, ops.constant(w, name="deconv/weight"), [2, 2], name="deconv")
    return model(ops.relu(d, name="relu2"), x)


BIAS = 0.01  # bias_correction_block's biases: small, and not zero (graph normalisation removes an Add of zeros)


def bias_correction_block(bias: bool = True) -> ov.Model:
    """input -> conv 3x3 stride 2 -> relu -> depthwise 3x3 -> relu -> reshape -> matmul; biases all BIAS or none.

    The input has a large positive mean, so int8 weight errors shift the output means."""
    x = ops.parameter([1, 4, 9, 9], np.float32, name="input")
    rng = _rng(7)
    w1 = ops.constant((rng.standard_normal((6, 4, 3, 3)) * 0.3).astype(np.float32), name="conv/weight")
    y = ops.convolution(x, w1, [2, 2], [1, 1], [1, 1], [1, 1], name="conv")
    if bias:
        y = ops.add(y, ops.constant(np.full((1, 6, 1, 1), BIAS, np.float32), name="conv/bias_value"), name="conv/bias")
    y = ops.relu(y, name="relu1")
    w2 = ops.constant((rng.standard_normal((6, 1, 1, 3, 3)) * 0.3).astype(np.float32), name="depthwise/weight")
    y = ops.group_convolution(y, w2, [1, 1], [1, 1], [1, 1], [1, 1], name="depthwise")
    if bias:
        y = ops.add(y, ops.constant(np.full((1, 6, 1, 1), BIAS, np.float32)), name="depthwise/bias")
    y = ops.relu(y, name="relu2")
    flat = ops.reshape(y, ops.constant(np.array([1, -1], np.int64)), False, name="flatten")
    w3 = ops.constant((rng.standard_normal((6 * 25, 5)) * 0.1).astype(np.float32), name="fc/weight")
    out = ops.matmul(flat, w3, False, False, name="fc")
    if bias:
        out = ops.add(out, ops.constant(np.full(5, BIAS, np.float32)), name="fc/bias")
    return model(out, x)


def linear(x, out_features: int, name: str, seed: int = 0):
    """MatMul with a constant [in, out] weight and a bias Add."""
    in_features = x.get_output_partial_shape(0)[-1].get_length() if hasattr(x, "get_output_partial_shape") else \
        x.get_partial_shape()[-1].get_length()
    rng = _rng(seed)
    w = (rng.standard_normal((in_features, out_features)) / np.sqrt(in_features)).astype(np.float32)
    y = ops.matmul(x, ops.constant(w, name=f"{name}/weight"), False, False, name=name)
    b = (rng.standard_normal(out_features) * 0.1).astype(np.float32)
    return ops.add(y, ops.constant(b, name=f"{name}/bias_value"), name=f"{name}/bias")


def layer_norm(x, name: str, seed: int = 0):
    """MVN over the last axis, then gamma and beta."""
    hidden = x.get_output_partial_shape(0)[-1].get_length()
    rng = _rng(seed)
    y = ops.mvn(x, np.array([-1], np.int64), True, 1e-12, "inside_sqrt", name=f"{name}/mvn")
    y = ops.multiply(y, ops.constant((1 + 0.1 * rng.standard_normal(hidden)).astype(np.float32)), name=f"{name}/gamma")
    return ops.add(y, ops.constant((0.1 * rng.standard_normal(hidden)).astype(np.float32)), name=f"{name}/beta")


def attention_layer(x, mask_bias, hidden: int, heads: int, prefix: str, seed: int = 0):
    """A post-LayerNorm BERT layer: self-attention (Q, K, V, scores / sqrt(d) + mask, Softmax, x V, output dense),
    residual + LayerNorm, GELU feed-forward, residual + LayerNorm."""
    d = hidden // heads

    def split(t, name):  # [B, T, H] -> [B, heads, T, d]
        t = ops.reshape(t, np.array([0, 0, heads, d], np.int64), True, name=f"{name}/split")
        return ops.transpose(t, np.array([0, 2, 1, 3], np.int64), name=f"{name}/heads")

    q = split(linear(x, hidden, f"{prefix}query", seed), f"{prefix}query")
    k = split(linear(x, hidden, f"{prefix}key", seed + 1), f"{prefix}key")
    v = split(linear(x, hidden, f"{prefix}value", seed + 2), f"{prefix}value")
    scores = ops.matmul(q, k, False, True, name=f"{prefix}scores")
    scores = ops.divide(scores, ops.constant(np.float32(np.sqrt(d))), name=f"{prefix}scale")
    scores = ops.add(scores, mask_bias, name=f"{prefix}mask")
    probs = ops.softmax(scores, -1, name=f"{prefix}softmax")
    context = ops.matmul(probs, v, False, False, name=f"{prefix}context")
    context = ops.transpose(context, np.array([0, 2, 1, 3], np.int64), name=f"{prefix}merge")
    context = ops.reshape(context, np.array([0, 0, hidden], np.int64), True, name=f"{prefix}merge/reshape")
    attended = ops.add(linear(context, hidden, f"{prefix}out", seed + 3), x, name=f"{prefix}residual1")
    y = layer_norm(attended, f"{prefix}ln1", seed)
    ffn = ops.gelu(linear(y, 4 * hidden, f"{prefix}ffn1", seed + 4), "erf", name=f"{prefix}gelu")
    out = ops.add(linear(ffn, hidden, f"{prefix}ffn2", seed + 5), y, name=f"{prefix}residual2")
    return layer_norm(out, f"{prefix}ln2", seed + 1)


def attention_block(hidden: int = 16, heads: int = 2) -> ov.Model:
    """Embeddings [B, T, hidden] (dynamic B and T) and an int64 attention mask [B, T] -> one BERT layer."""
    x = ops.parameter([-1, -1, hidden], np.float32, name="embeddings")
    mask = ops.parameter([-1, -1], np.int64, name="attention_mask")
    keep = ops.convert(ops.unsqueeze(mask, np.array([1, 2], np.int64)), ov.Type.f32, name="mask/float")
    mask_bias = ops.multiply(ops.subtract(ops.constant(np.float32(1)), keep), ops.constant(np.float32(-1e4)),
                             name="mask/bias")
    return model(attention_layer(x, mask_bias, hidden, heads, ""), [x, mask])


def conv_attention() -> ov.Model:
    """A CNN stem [1, 3, 8, 32] -> sequence [1, 32, 16] -> one attention layer (no mask) -> FC: a small text
    recogniser shape."""
    x = ops.parameter([1, 3, 8, 32], np.float32, name="image")
    y = ops.relu(conv(x, 16, "stem"), name="stem/relu")
    y = ops.relu(conv(y, 16, "conv2", seed=1), name="conv2/relu")
    y = ops.reduce_mean(y, np.array([2], np.int64), False, name="pool_height")          # [1, 16, 32]
    seq = ops.transpose(y, np.array([0, 2, 1], np.int64), name="to_sequence")           # [1, 32, 16]
    no_mask = ops.constant(np.zeros((1, 1, 1, 32), np.float32), name="no_mask")
    y = attention_layer(seq, no_mask, 16, 2, "neck/", seed=10)
    return model(linear(y, 10, "head", seed=20), x)


def pre_norm_block(hidden: int = 16) -> ov.Model:
    """Pre-LayerNorm feed-forward: x + ffn2(gelu(ffn1(LN(x)))), then a MatMul + bias chain with no activation
    (proj1 -> proj2) and a weight shared by two MatMuls, one of them reading a Sigmoid (not smoothable)."""
    x = ops.parameter([-1, -1, hidden], np.float32, name="x")
    normed = layer_norm(x, "ln")
    ffn = ops.gelu(linear(normed, 2 * hidden, "ffn1", 1), "erf", name="gelu")
    y = ops.add(x, linear(ffn, hidden, "ffn2", 2), name="residual")
    chain = linear(linear(y, hidden, "proj1", 3), hidden, "proj2", 4)
    shared = ops.constant((_rng(5).standard_normal((hidden, hidden)) * 0.3).astype(np.float32), name="shared/weight")
    a = ops.matmul(chain, shared, False, False, name="shared_a")
    b = ops.matmul(ops.sigmoid(chain, name="gate"), shared, False, False, name="shared_b")
    return model([ops.add(a, b, name="out")], x)


def outlier_sequences(count: int, hidden: int = 16, seed: int = 0) -> list[np.ndarray]:
    """[1, T, hidden] inputs whose features 3 and 11 carry 30x outliers, as transformer activations do."""
    rng = np.random.default_rng(seed)
    result = []
    for i in range(count):
        x = rng.standard_normal((1, 5 + i % 4, hidden)).astype(np.float32)
        x[..., 3] *= 30
        x[..., 11] *= 30
        result.append(x)
    return result


def rotary_block(hidden: int = 8) -> ov.Model:
    """Rotary position embedding: angles = positions x inverse frequencies (a MatMul with a constant), then
    cos / sin rotate the input; the result feeds a linear layer."""
    x = ops.parameter([1, 6, hidden], np.float32, name="x")
    positions = ops.parameter([1, 6, 1], np.float32, name="positions")
    inverse_frequencies = (1.0 / 10000 ** (np.arange(0, hidden // 2) / (hidden // 2))).astype(np.float32)
    angles = ops.matmul(positions, ops.constant(inverse_frequencies[None, :], name="inv_freq"), False, False,
                        name="angles")
    angles = ops.concat([angles, angles], -1, name="angles/both")
    rotated = ops.add(ops.multiply(x, ops.cos(angles, name="cos"), name="x_cos"),
                      ops.multiply(x, ops.sin(angles, name="sin"), name="x_sin"), name="rotated")
    return model(linear(rotated, hidden, "proj"), [x, positions])


def hswish_block(decomposed: bool) -> ov.Model:
    """conv -> BatchNorm -> HSwish -> depthwise -> x * HSigmoid(1x1 conv x) -> conv, as `ov.convert_model` gives it
    (BatchNorm folded, HSwish / HSigmoid ops), or as `read_model` of a PaddlePaddle ONNX export keeps it: BatchNorm
    beside the conv, x * min(max(x + 3, 0), 6) / 6 and min(max(x + 3, 0), 6) / 6."""
    def clip6(t, name):
        shifted = ops.add(t, ops.constant(np.float32(3)), name=f"{name}/add3")
        return ops.minimum(ops.constant(np.float32(6)), ops.maximum(ops.constant(np.float32(0)), shifted,
                                                                     name=f"{name}/max0"), name=f"{name}/min6")

    def hsigmoid(t, name):
        if not decomposed:
            return ops.hsigmoid(t, name=name)
        return ops.divide(clip6(t, name), ops.constant(np.float32(6)), name=name)

    def hswish(t, name):
        if not decomposed:
            return ops.hswish(t, name=name)
        return ops.divide(ops.multiply(t, clip6(t, name), name=f"{name}/mul"), ops.constant(np.float32(6)), name=name)

    def conv_bn(t, channels, name):
        if not decomposed:
            return conv(t, channels, name)
        y = conv(t, channels, name, bias=False)
        rng = _rng(3)
        gamma, beta, mean = (rng.standard_normal(channels).astype(np.float32) * 0.1 for _ in range(3))
        variance = rng.uniform(0.5, 2.0, channels).astype(np.float32)
        return ops.batch_norm_inference(y, gamma + 1, beta, mean, variance, 1e-5, name=f"{name}/bn")

    x = ops.parameter([1, 3, 16, 16], np.float32, name="input")
    y = hswish(conv_bn(x, 8, "conv1"), "hswish")
    y = conv(y, 8, "depthwise", seed=1, groups=8)
    y = ops.multiply(y, hsigmoid(conv(y, 8, "gate_conv", kernel=1, seed=4), "hsigmoid"), name="gated")
    return model(conv(y, 8, "conv2", seed=2), x)


def ir_bytes(model_: ov.Model) -> tuple[bytes, bytes]:
    """The model's IR as `ov.save_model` writes it (weights uncompressed): (.xml bytes, .bin bytes)."""
    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "model.xml"
        ov.save_model(model_, str(xml), compress_to_fp16=False)
        return xml.read_bytes(), xml.with_suffix(".bin").read_bytes()


def kv_cache_decoder(hidden: int = 16, layers: int = 2, vocab: int = 32, positions: int = 64) -> ov.Model:
    """A decoder with a KV cache in the form OpenVINO's LLM export writes: inputs input_ids, position_ids and
    beam_idx; each layer's keys and values in a ReadValue (initial value: no tokens) reordered by beam_idx, extended
    with the new tokens' and written back by an Assign; logits out. One head, no attention mask."""
    import openvino.opset6 as ops6
    rng = _rng(11)

    def weight(rows: int, cols: int, name: str):
        return ops.constant((rng.standard_normal((rows, cols)) / np.sqrt(rows)).astype(np.float32), name=name)

    ids = ops.parameter([1, -1], np.int64, name="input_ids")
    position_ids = ops.parameter([1, -1], np.int64, name="position_ids")
    beam_idx = ops.parameter([-1], np.int32, name="beam_idx")
    embedding = ops.constant(rng.standard_normal((vocab, hidden)).astype(np.float32), name="embedding")
    position_table = ops.constant((rng.standard_normal((positions, hidden)) * 0.1).astype(np.float32),
                                  name="positions")
    zero = ops.constant(np.int64(0))
    h = ops.add(ops.gather(embedding, ids, zero, name="embedding_lookup"),
                ops.gather(position_table, position_ids, zero, name="position_lookup"), name="embed")
    sinks = []
    for layer in range(layers):
        prefix = f"layer{layer}"
        q = ops.matmul(h, weight(hidden, hidden, f"{prefix}/q/weight"), False, False, name=f"{prefix}/q")
        cached = []
        for kind in ("key", "value"):
            new = ops.matmul(h, weight(hidden, hidden, f"{prefix}/{kind}/weight"), False, False,
                             name=f"{prefix}/{kind}")
            info = ov.op.util.VariableInfo()
            info.data_shape, info.data_type = ov.PartialShape([1, -1, hidden]), ov.Type.f32
            info.variable_id = f"past_key_values.{layer}.{kind}present.{layer}.{kind}"
            variable = ov.op.util.Variable(info)
            empty = ops.broadcast(ops.constant(np.float32(0)), ops.constant(np.array([1, 0, hidden], np.int64)))
            past = ops.gather(ops6.read_value(empty, variable), beam_idx, zero, name=f"{prefix}/{kind}/reordered")
            full = ops.concat([past, new], 1, name=f"{prefix}/{kind}/cache")
            sinks.append(ops6.assign(full, variable))
            cached.append(full)
        scores = ops.divide(ops.matmul(q, cached[0], False, True, name=f"{prefix}/scores"),
                            ops.constant(np.float32(np.sqrt(hidden))))
        attention = ops.matmul(ops.softmax(scores, -1), cached[1], False, False, name=f"{prefix}/context")
        h = ops.add(h, ops.matmul(attention, weight(hidden, hidden, f"{prefix}/o/weight"), False, False,
                                  name=f"{prefix}/o"), name=f"{prefix}/attention_residual")
        up = ops.relu(ops.matmul(h, weight(hidden, 2 * hidden, f"{prefix}/up/weight"), False, False,
                                 name=f"{prefix}/up"))
        h = ops.add(h, ops.matmul(up, weight(2 * hidden, hidden, f"{prefix}/down/weight"), False, False,
                                  name=f"{prefix}/down"), name=f"{prefix}/mlp_residual")
    logits = ops.matmul(h, weight(hidden, vocab, "lm_head/weight"), False, False, name="lm_head")
    return ov.Model([ops.result(logits, name="logits")], sinks, [ids, position_ids, beam_idx], "kv_cache_decoder")


def decoder_prompt(length: int, seed: int, vocab: int = 32) -> dict[str, np.ndarray]:
    """One calibration item of `kv_cache_decoder`: a prompt of `length` random tokens from position 0."""
    rng = _rng(seed)
    return {"input_ids": rng.integers(0, vocab, (1, length), dtype=np.int64),
            "position_ids": np.arange(length, dtype=np.int64)[None], "beam_idx": np.zeros(1, np.int32)}


def generate(model_: ov.Model, prompt: dict[str, np.ndarray], steps: int, tokens: list[int] | None = None,
             emulated: bool = False) -> tuple[np.ndarray, list[int]]:
    """The last-position logits of the prompt and of `steps` one-token steps through the model's KV cache, and the
    tokens fed: greedy, or `tokens` (to feed two models the same sequence)."""
    from ovptq.measuring.measure import EMULATED
    config = {"INFERENCE_PRECISION_HINT": "f32", **(EMULATED if emulated else {})}
    compiled = ov.Core().compile_model(model_, "CPU", config)
    request = compiled.create_infer_request()
    logits = [request.infer(prompt)[compiled.output(0)][0, -1]]
    fed, length = [], prompt["input_ids"].shape[1]
    for step in range(steps):
        token = int(np.argmax(logits[-1])) if tokens is None else tokens[step]
        fed.append(token)
        feed = {"input_ids": np.array([[token]], np.int64), "position_ids": np.array([[length + step]], np.int64),
                "beam_idx": np.zeros(1, np.int32)}
        logits.append(request.infer(feed)[compiled.output(0)][0, -1])
    return np.stack(logits), fed
