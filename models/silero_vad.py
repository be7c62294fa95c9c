"""Silero VAD v5 (voice activity detection, 16 kHz), the ONNX export for OpenVINO shipped in the silero-vad wheel.

One call takes 64 samples of context plus a 512-sample chunk ([1, 576]) and the recurrent state [2, 1, 128], and
returns the speech probability of the chunk and the next state. Evaluation streams whole clips through each
variant with its own state; calibration items carry the states the FP32 model reaches on calibration clips.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import openvino as ov

from . import speech_data
from .zoo import EVAL, Item, ModelLike, ModelSpec, compile_cpu, core, rng_for

CHUNK, CONTEXT = 512, 64
STATE_SHAPE = (2, 1, 128)


def model_path() -> Path:
    spec = importlib.util.find_spec("silero_vad")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "silero_vad_openvino_16k.onnx"


def chunks(audio: np.ndarray) -> List[np.ndarray]:
    """[1, 576] inputs: each 512-sample chunk with the 64 samples before it (zeros before the start)."""
    padded = np.concatenate([np.zeros(CONTEXT, np.float32), audio.astype(np.float32)])
    return [padded[i:i + CONTEXT + CHUNK][None] for i in range(0, len(audio) - CHUNK + 1, CHUNK)]


def stream(model: ModelLike, audio: np.ndarray) -> Tuple[np.ndarray, List[Item]]:
    """Speech probability of every chunk, the state carried from chunk to chunk; also the items fed."""
    compiled = compile_cpu(model)
    request = compiled.create_infer_request()
    state = np.zeros(STATE_SHAPE, np.float32)
    probs, items = [], []
    for x in chunks(audio):
        item = {"input": x, "state": state}
        request.infer(item)
        items.append(item)
        probs.append(float(request.get_output_tensor(0).data.ravel()[0]))
        state = request.get_output_tensor(1).data.copy()
    return np.array(probs), items


class SileroVadSpec(ModelSpec):
    name = "silero_vad"
    headline = "frame_accuracy"
    default_n = 1500  # chunks of 32 ms: 48 s of audio
    clip_seconds = 4.0
    data_note = ("Model: silero_vad_openvino_16k.onnx from silero-vad==6.2.3 (--no-deps); data: 4 s clips of "
                 "eSpeak NG speech (espeakng-loader==0.2.4; words from disjoint pools, 6 English voices, random "
                 "speed and pitch) with pauses, tones, chords, noise bursts and background noise; labels from the "
                 "clean speech's energy (a 32 ms chunk is speech when over half its samples are): frame_accuracy "
                 "of the decision probability > 0.5, and agreement with FP32's decisions.")

    def __init__(self) -> None:
        self._clips: Dict[tuple, List[Tuple[np.ndarray, np.ndarray]]] = {}

    def build(self) -> ov.Model:
        """The ONNX model read as is (its shapes are static)."""
        return core().read_model(str(model_path()))

    def _clips_for(self, n: int, seed: int, pool: int) -> List[Tuple[np.ndarray, np.ndarray]]:
        """Enough clips for n chunks: (audio, per-chunk speech label)."""
        key = (n, seed, pool)
        if key not in self._clips:
            rng = rng_for(seed, pool, CHUNK)
            clips, total = [], 0
            while total < n:
                audio, speech = speech_data.clip(rng, pool, self.clip_seconds)
                count = len(audio) // CHUNK
                labels = speech[:count * CHUNK].reshape(count, CHUNK).mean(1) > 0.5
                clips.append((audio, labels))
                total += count
            self._clips[key] = clips
        return self._clips[key]

    def make_items(self, n: int, seed: int, pool: int) -> List[Item]:
        """Every fourth chunk of the pool's clips until n, each with the state FP32 reached before it."""
        items: List[Item] = []
        for audio, _ in self._clips_for(4 * n, seed, pool):
            items += stream(self.xml_path(), audio)[1][::4]
        return items[:n]

    def _decisions(self, model: ModelLike, n: int, seed: int) -> Tuple[np.ndarray, np.ndarray]:
        compiled = compile_cpu(model)
        clips = self._clips_for(n, seed, EVAL)
        probs = np.concatenate([stream(compiled, audio)[0] for audio, _ in clips])[:n]
        return probs, np.concatenate([labels for _, labels in clips])[:n]

    def evaluate(self, model_or_xml: ModelLike, n: Optional[int] = None, seed: int = 1) -> Dict[str, Any]:
        """frame_accuracy: decisions (probability > 0.5) against the labels; agreement: the same decision as FP32;
        prob_mae: mean absolute difference of the probabilities from FP32's."""
        n = self.default_n if n is None else n
        reference = self.fp32_reference((n, seed), lambda xml: self._decisions(xml, n, seed)[0])
        probs, labels = self._decisions(model_or_xml, n, seed)
        return {"frame_accuracy": float(np.mean((probs > 0.5) == labels)),
                "agreement": float(np.mean((probs > 0.5) == (reference > 0.5))),
                "prob_mae": float(np.abs(probs - reference).mean()), "speech_share": float(labels.mean()), "n": n}
