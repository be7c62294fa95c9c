"""Resemblyzer's speaker encoder (GE2E: 3-layer LSTM over 40 mel bands, 256-d L2-normalised voice embedding),
with the weights of the Resemblyzer wheel (``resemblyzer/pretrained.pt``; the package is not imported).

The net is declared here with the checkpoint's parameter names. Input: a 1.6 s partial utterance, [1, 160, 40]
mel power frames (25 ms window, 10 ms hop, 16 kHz). Data: eSpeak NG speech in 16 voice variants taken as 16
speakers, so speaker identification has real labels.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import openvino as ov

from . import ocr_data, speech_data
from .zoo import EVAL, Item, ModelLike, ModelSpec, rng_for, run

INPUT_NAME = "mels"
FRAMES, BANDS = 160, 40
N_FFT, HOP = 400, 160
# variants without eSpeak's breath noise, which is random per process (f2, f3, f5, david, ... have it)
SPEAKERS = tuple(f"en-us+{v}".encode() for v in ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f4", "Andy",
                                                  "grandma", "grandpa", "belinda", "john", "linda"))
ENROLL = 4  # utterances per speaker averaged into its reference embedding


def weights_path() -> Path:
    spec = importlib.util.find_spec("resemblyzer")
    return Path(list(spec.submodule_search_locations)[0]) / "pretrained.pt"


def build_torch_net():
    """LSTM (40 -> 256, 3 layers), the last layer's final hidden state through Linear + ReLU, L2-normalised."""
    import torch
    from torch import nn

    class SpeakerEncoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(BANDS, 256, num_layers=3, batch_first=True)
            self.linear = nn.Linear(256, 256)

        def forward(self, mels):
            _, (hidden, _) = self.lstm(mels)
            embedding = torch.relu(self.linear(hidden[-1]))
            return embedding / torch.linalg.norm(embedding, dim=1, keepdim=True)

    return SpeakerEncoder()


@lru_cache(maxsize=None)
def mel_filters() -> np.ndarray:
    """[40, 201] triangular filters on the Slaney mel scale (linear below 1 kHz, logarithmic above), each
    normalised to unit area, 0 - 8 kHz."""
    def hz_to_mel(f):
        f = np.asarray(f, np.float64)
        return np.where(f < 1000, f * 3 / 200, 15 + np.log(np.maximum(f, 1e-9) / 1000) / (np.log(6.4) / 27))

    def mel_to_hz(m):
        return np.where(m < 15, m * 200 / 3, 1000 * np.exp((m - 15) * np.log(6.4) / 27))

    edges = mel_to_hz(np.linspace(hz_to_mel(0), hz_to_mel(speech_data.RATE / 2), BANDS + 2))
    bins = np.linspace(0, speech_data.RATE / 2, N_FFT // 2 + 1)
    rising = (bins[None] - edges[:-2, None]) / (edges[1:-1] - edges[:-2])[:, None]
    falling = (edges[2:, None] - bins[None]) / (edges[2:] - edges[1:-1])[:, None]
    weights = np.maximum(0, np.minimum(rising, falling))
    return weights * (2 / (edges[2:] - edges[:-2]))[:, None]


def mel_frames(wav: np.ndarray) -> np.ndarray:
    """[frames, 40] mel power spectrogram: centred frames (zero padding), periodic Hann window, |FFT|^2."""
    padded = np.pad(wav.astype(np.float64), N_FFT // 2)
    count = 1 + (len(padded) - N_FFT) // HOP
    frames = np.stack([padded[i * HOP:i * HOP + N_FFT] for i in range(count)])
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2
    return np.einsum("fb,mb->fm", power, mel_filters()).astype(np.float32)  # einsum: no threaded BLAS call


def utterance(rng: np.random.Generator, pool: int, speaker: int) -> np.ndarray:
    """[1, 160, 40]: 1.6 s of the speaker saying 5-9 of the pool's words, at -30 dBFS with light noise."""
    text = ocr_data.random_phrase(rng, pool, 5, 9)
    wav = speech_data.engine().say(text, SPEAKERS[speaker], int(rng.integers(150, 201)), 50)
    wav = wav * 10 ** (-30 / 20) / max(float(np.sqrt(np.mean(wav ** 2))), 1e-9)
    wav = wav + rng.standard_normal(len(wav)).astype(np.float32) * 10 ** rng.uniform(-4.5, -3)
    mels = mel_frames(wav)
    if len(mels) < FRAMES:
        mels = np.pad(mels, ((0, FRAMES - len(mels)), (0, 0)))
    start = int(rng.integers(0, len(mels) - FRAMES + 1))
    return mels[start:start + FRAMES][None]


class SpeakerEncoderSpec(ModelSpec):
    name = "speaker_encoder"
    headline = "identification_accuracy"
    default_n = 320  # 20 utterances per speaker: 4 to enrol, 16 to identify
    data_note = ("Weights: Resemblyzer GE2E speaker encoder from resemblyzer==0.1.4 (--no-deps); data: 1.6 s of "
                 "eSpeak NG speech (espeakng-loader==0.2.4) in 16 en-us voice variants as speakers, saying words "
                 "from disjoint pools for calibration and evaluation, random speed, light noise; "
                 "identification_accuracy: nearest enrolled speaker (mean of 4 embeddings, cosine) for the other "
                 "utterances, each variant enrolling with its own embeddings; cosine_to_fp32 of the embeddings.")

    def __init__(self) -> None:
        self._cache: Dict[tuple, Tuple[List[Item], np.ndarray]] = {}

    def build(self) -> ov.Model:
        """Load the checkpoint's model_state (strict) into the declared net and convert it."""
        import torch

        state = torch.load(weights_path(), map_location="cpu", weights_only=False)["model_state"]
        state = {k: v for k, v in state.items() if not k.startswith("similarity_")}  # training-only loss scale
        net = build_torch_net()
        net.load_state_dict(state, strict=True)
        with torch.no_grad():
            model = ov.convert_model(net.eval(), example_input=torch.zeros(1, FRAMES, BANDS))
        model.reshape({model.inputs[0]: ov.PartialShape([1, FRAMES, BANDS])})
        model.inputs[0].get_tensor().set_names({INPUT_NAME})
        return model

    def _labelled(self, n: int, seed: int, pool: int) -> Tuple[List[Item], np.ndarray]:
        """n utterances, speakers in turn (utterance i is by speaker i mod 16)."""
        key = (n, seed, pool)
        if key not in self._cache:
            rng = rng_for(seed, pool, FRAMES)
            speakers = np.arange(n) % len(SPEAKERS)
            self._cache[key] = ([{INPUT_NAME: utterance(rng, pool, int(s))} for s in speakers], speakers)
        return self._cache[key]

    def make_items(self, n: int, seed: int, pool: int) -> List[Item]:
        return self._labelled(n, seed, pool)[0]

    def evaluate(self, model_or_xml: ModelLike, n: Optional[int] = None, seed: int = 1) -> Dict[str, Any]:
        """identification_accuracy (see data_note); cosine_to_fp32: mean cosine of each embedding with FP32's;
        min_cosine_to_fp32: the lowest."""
        n = self.default_n if n is None else n
        items, speakers = self._labelled(n, seed, EVAL)
        embeddings = np.concatenate([out[0] for out in run(model_or_xml, items)]).astype(np.float64)
        reference = self.fp32_reference((n, seed), lambda xml: np.concatenate([out[0] for out in run(xml, items)]))
        reference = reference.astype(np.float64)
        unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
        enrol = np.arange(n) < ENROLL * len(SPEAKERS)
        centroids = np.stack([unit[enrol & (speakers == s)].mean(0) for s in range(len(SPEAKERS))])
        guesses = np.einsum("ud,sd->us", unit[~enrol], centroids).argmax(1)
        cosine = np.sum(unit * reference, axis=1) / np.maximum(np.linalg.norm(reference, axis=1), 1e-12)
        return {"identification_accuracy": float(np.mean(guesses == speakers[~enrol])),
                "cosine_to_fp32": float(cosine.mean()), "min_cosine_to_fp32": float(cosine.min()), "n": n}
