"""Two tiny CNNs built node by node with openvino.opset13, for fast tests and benchmarks.

Weights are deterministic random (He-style scaling, fixed seed) and so are the inputs; there is no task, so
evaluate() reports how closely a variant reproduces the FP32 outputs (see OutputMatchSpec).
"""

from __future__ import annotations

from typing import List

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from .zoo import Item, OutputMatchSpec, rng_for, smooth_noise

INPUT_SHAPE = [1, 3, 32, 32]


def _conv(x, rng, c_in, c_out, k=3, stride=1, bias=True, name=""):
    """Convolution (same padding) with He-initialised weights and an optional per-channel bias Add."""
    w = (rng.standard_normal((c_out, c_in, k, k)) * np.sqrt(2.0 / (c_in * k * k))).astype(np.float32)
    pad = k // 2
    y = ops.convolution(x, ops.constant(w), [stride, stride], [pad, pad], [pad, pad], [1, 1], name=name)
    if bias:
        b = 0.1 * rng.standard_normal((1, c_out, 1, 1)).astype(np.float32)
        y = ops.add(y, ops.constant(b), name=f"{name}/bias")
    return y


class _Handmade(OutputMatchSpec):
    default_n = 64
    input_name = "input"
    weight_seed = 0

    def make_items(self, n: int, seed: int, pool: int) -> List[Item]:
        rng = rng_for(seed, pool, 7)
        return [{self.input_name: smooth_noise(rng, INPUT_SHAPE)} for _ in range(n)]


class TinyResNet(_Handmade):
    name = "tiny_resnet"
    data_note = ("Hand-built with openvino.opset13: deterministic random weights (seed 0); inputs are seeded "
                 "smooth random noise [1,3,32,32].")

    def build(self) -> ov.Model:
        """conv+bias+relu -> 2 residual blocks (conv,relu,conv, Add skip, relu) -> maxpool -> global avgpool ->
        matmul+bias to 10 logits."""
        rng = np.random.default_rng(self.weight_seed)
        x = ops.parameter(INPUT_SHAPE, np.float32, name=self.input_name)
        y = ops.relu(_conv(x, rng, 3, 16, name="stem"))
        for b in range(2):
            h = ops.relu(_conv(y, rng, 16, 16, name=f"block{b}/conv1"))
            h = _conv(h, rng, 16, 16, name=f"block{b}/conv2")
            y = ops.relu(ops.add(y, h, name=f"block{b}/add"))
        y = ops.max_pool(y, [2, 2], [1, 1], [0, 0], [0, 0], [2, 2], name="maxpool").output(0)
        y = ops.reduce_mean(y, ops.constant(np.array([2, 3], np.int64)), keep_dims=False, name="gap")
        w = (rng.standard_normal((16, 10)) / 4.0).astype(np.float32)
        y = ops.matmul(y, ops.constant(w), False, False, name="fc")
        y = ops.add(y, ops.constant(0.1 * rng.standard_normal((1, 10)).astype(np.float32)), name="logits")
        return ov.Model([y], [x], self.name)


class TinyDepthwise(_Handmade):
    name = "tiny_depthwise"
    data_note = ("Hand-built with openvino.opset13: deterministic random weights (seed 0); inputs are seeded "
                 "smooth random noise [1,3,32,32].")

    def build(self) -> ov.Model:
        """conv 3->16 -> ReLU6 (Clamp 0..6) -> depthwise 3x3 GroupConvolution -> HSwish -> 1x1 conv 16->8."""
        rng = np.random.default_rng(self.weight_seed)
        x = ops.parameter(INPUT_SHAPE, np.float32, name=self.input_name)
        y = ops.clamp(_conv(x, rng, 3, 16, name="conv1"), 0.0, 6.0, name="relu6")
        dw = (rng.standard_normal((16, 1, 1, 3, 3)) * np.sqrt(2.0 / 9)).astype(np.float32)
        y = ops.group_convolution(y, ops.constant(dw), [1, 1], [1, 1], [1, 1], [1, 1], name="depthwise")
        y = ops.add(y, ops.constant(0.1 * rng.standard_normal((1, 16, 1, 1)).astype(np.float32)), name="dw/bias")
        y = ops.hswish(y, name="hswish")
        y = _conv(y, rng, 16, 8, k=1, name="pointwise")
        return ov.Model([y], [x], self.name)
