"""Basic Pitch (Spotify's polyphonic note transcriber: 2 s of 22.05 kHz audio -> note, onset and pitch-contour
posteriorgrams over 88 piano keys at 86 frames per second), the ONNX file of the basic-pitch wheel.

Data: synthetic polyphonic music with known notes (plucked / struck harmonic tones, chords and melodies, noise),
so the frame-level transcription has real labels.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import openvino as ov

from .metrics import detection_scores
from .zoo import EVAL, Item, ModelLike, ModelSpec, compile_cpu, core, rng_for

RATE, HOP = 22050, 256
SAMPLES = 2 * RATE - HOP     # 43844: the model's window
FRAMES, KEYS, LOWEST_MIDI = 172, 88, 21
INPUT_NAME = "serving_default_input_2:0"
NOTE_OUTPUT = "StatefulPartitionedCall:1"  # onset is :2, contour :0
FRAME_THRESHOLD = 0.3  # basic-pitch's default


def model_path() -> Path:
    spec = importlib.util.find_spec("basic_pitch")
    return Path(list(spec.submodule_search_locations)[0]) / "saved_models" / "icassp_2022" / "nmp.onnx"


def music(rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """2 s of synthetic music: 3-10 notes (MIDI 36-96), some started together as chords, each a harmonic tone
    with a random timbre, a fast attack and an exponential decay, over noise. Returns (audio [43844] float32,
    note activity [172, 88] bool: from onset to release while the note is within 30 dB of its peak)."""
    audio = np.zeros(SAMPLES)
    active = np.zeros((FRAMES, KEYS), bool)
    t_all = np.arange(SAMPLES) / RATE
    start = 0.0
    for _ in range(int(rng.integers(3, 11))):
        if rng.random() < 0.6:
            start = float(rng.uniform(0, 1.7))
        midi = int(rng.integers(36, 97))
        duration = float(rng.uniform(0.15, 1.2))
        decay = float(rng.uniform(0.5, 6.0))  # per second, natural log
        f0 = 440.0 * 2 ** ((midi - 69) / 12)
        begin, end = int(start * RATE), min(SAMPLES, int((start + duration) * RATE))
        if end - begin < HOP * 4:
            continue
        t = t_all[begin:end] - start
        harmonics = int(max(1, min(12, (RATE / 2) // f0)))
        amplitudes = rng.uniform(0, 1, harmonics) / np.arange(1, harmonics + 1) ** rng.uniform(0.7, 2.0)
        amplitudes[0] = max(amplitudes[0], 0.5)
        tone = sum(a * np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 2 * np.pi)) for h, a in enumerate(amplitudes, 1))
        envelope = np.minimum(1, t / 0.005) * np.exp(-decay * t) * np.minimum(1, (t[-1] - t) / 0.02)
        audio[begin:end] += rng.uniform(0.2, 1.0) * tone * envelope
        audible_until = min(end, begin + int(min(duration, np.log(10 ** 1.5) / decay) * RATE))
        active[begin // HOP:audible_until // HOP + 1, midi - LOWEST_MIDI] = True
    audio = audio / max(np.abs(audio).max(), 1e-9) * rng.uniform(0.3, 0.9)
    audio += rng.standard_normal(SAMPLES) * 10 ** rng.uniform(-4, -2)
    return audio.astype(np.float32), active[:FRAMES]


def frame_fscore(predicted: np.ndarray, truth: np.ndarray) -> Dict[str, float]:
    """Frame-level precision / recall / F-score of boolean [frames, keys] activity."""
    hits = int(np.sum(predicted & truth))
    return detection_scores(hits, int(predicted.sum()), int(truth.sum()))


class BasicPitchSpec(ModelSpec):
    name = "basic_pitch"
    headline = "note_fscore"
    default_n = 150
    data_note = ("Model: nmp.onnx from basic-pitch==0.4.0 (--no-deps); data: 2 s clips of synthetic polyphonic music "
                 "(3-10 harmonic notes with random timbre and decay, chords, noise) whose notes are known; "
                 "note_fscore: frame-level F-score of the note posteriorgram > 0.3 against the known notes; "
                 "fscore_vs_fp32 against FP32's frames.")

    def __init__(self) -> None:
        self._cache: Dict[tuple, Tuple[List[Item], List[np.ndarray]]] = {}

    def build(self) -> ov.Model:
        """The ONNX model read as is, batch fixed to 1."""
        model = core().read_model(str(model_path()))
        model.reshape({model.inputs[0]: ov.PartialShape([1, SAMPLES, 1])})
        return model

    def _labelled(self, n: int, seed: int, pool: int) -> Tuple[List[Item], List[np.ndarray]]:
        key = (n, seed, pool)
        if key not in self._cache:
            rng = rng_for(seed, pool, SAMPLES)
            clips = [music(rng) for _ in range(n)]
            self._cache[key] = ([{INPUT_NAME: a[None, :, None]} for a, _ in clips], [m for _, m in clips])
        return self._cache[key]

    def make_items(self, n: int, seed: int, pool: int) -> List[Item]:
        return self._labelled(n, seed, pool)[0]

    def _notes(self, model: ModelLike, items: List[Item]) -> List[np.ndarray]:
        compiled = compile_cpu(model)
        output = next(o for o in compiled.outputs if NOTE_OUTPUT in o.get_names())
        request = compiled.create_infer_request()
        notes = []
        for item in items:
            request.infer(item)
            notes.append(request.get_tensor(output).data[0] > FRAME_THRESHOLD)
        return notes

    def evaluate(self, model_or_xml: ModelLike, n: Optional[int] = None, seed: int = 1) -> Dict[str, Any]:
        """note_fscore / precision / recall against the known notes; fscore_vs_fp32: FP32's active frames taken
        as the truth."""
        n = self.default_n if n is None else n
        items, truth = self._labelled(n, seed, EVAL)
        reference = self.fp32_reference((n, seed), lambda xml: self._notes(xml, items))
        notes = self._notes(model_or_xml, items)
        scores = frame_fscore(np.concatenate(notes), np.concatenate(truth))
        return {"note_fscore": scores["fscore"], "precision": scores["precision"], "recall": scores["recall"],
                "fscore_vs_fp32": frame_fscore(np.concatenate(notes),
                                               np.concatenate(reference))["fscore"], "n": n}
