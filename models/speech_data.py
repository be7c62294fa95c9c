"""Synthetic speech with known speech / non-speech regions, from the eSpeak NG engine in the espeakng-loader wheel.

eSpeak NG is a formant synthesiser: its voice is clearly speech but not a recording. Clips mix utterances of the
pool's words (``ocr_data.word_pool``: calibration and evaluation never say the same word) in several voices,
speeds and pitches with pauses, non-speech events (tones, chords, noise bursts) and background noise.
"""

from __future__ import annotations

import ctypes
from functools import lru_cache
from typing import List, Optional, Tuple

import numpy as np

from . import ocr_data

RATE = 16000
VOICES = (b"en", b"en-us", b"en-gb-scotland", b"en-gb-x-rp", b"en-029", b"en-us-nyc")
_AUDIO_OUTPUT_SYNCHRONOUS, _RATE, _PITCH, _CHARS_UTF8, _POS_CHARACTER = 2, 1, 3, 1, 1
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class _Engine:
    """The eSpeak NG library, initialised once for synchronous synthesis into memory."""

    def __init__(self) -> None:
        import espeakng_loader

        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self.rate = self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0,
                                               espeakng_loader.get_data_path().encode(), 0)
        if self.rate <= 0:
            raise RuntimeError("eSpeak NG failed to initialise")
        self._chunks: List[np.ndarray] = []
        self._callback = _CALLBACK(self._collect)  # kept referenced while the library holds it
        self.lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, wav, count, _events) -> int:
        if count > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, (count,)).astype(np.float32) / 32768.0)
        return 0

    def say(self, text: str, voice: bytes, words_per_minute: int, pitch: Optional[int] = None) -> np.ndarray:
        """The utterance at 16 kHz, float32 in [-1, 1]; pitch None keeps the voice's own."""
        from scipy.signal import resample_poly

        self._chunks = []
        if self.lib.espeak_SetVoiceByName(voice) != 0:
            raise ValueError(f"eSpeak NG has no voice {voice!r}")
        self.lib.espeak_SetParameter(_RATE, words_per_minute, 0)
        if pitch is not None:
            self.lib.espeak_SetParameter(_PITCH, pitch, 0)
        data = text.encode()
        self.lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        self.lib.espeak_Synchronize()
        wav = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.float32)
        return resample_poly(wav, RATE, self.rate).astype(np.float32)


@lru_cache(maxsize=None)
def engine() -> _Engine:
    return _Engine()


def _non_speech(rng: np.random.Generator, length: int) -> np.ndarray:
    """A tone, a chord with harmonics, or a noise burst, with a smooth envelope."""
    t = np.arange(length) / RATE
    kind = int(rng.integers(3))
    if kind == 0:
        sound = np.sin(2 * np.pi * rng.uniform(200, 3000) * t)
    elif kind == 1:
        sound = sum(np.sin(2 * np.pi * f0 * h * t) / h for f0 in rng.uniform(110, 880, 3) for h in (1, 2, 3))
    else:
        sound = rng.standard_normal(length)
    envelope = np.minimum(1, np.minimum(t, t[::-1]) / 0.02)
    return (sound / np.abs(sound).max() * envelope * rng.uniform(0.05, 0.4)).astype(np.float32)


def clip(rng: np.random.Generator, pool: int, seconds: float = 4.0) -> Tuple[np.ndarray, np.ndarray]:
    """A clip of utterances, pauses and non-speech events over background noise (SNR of the speech roughly
    5-30 dB). Returns (audio float32 at 16 kHz, per-sample speech mask from the clean utterances' energy)."""
    length = int(seconds * RATE)
    audio = np.zeros(length, np.float32)
    speech = np.zeros(length, bool)
    pos = int(rng.integers(0, RATE // 2))
    while pos < length - RATE // 4:
        if rng.random() < 0.7:
            text = ocr_data.random_phrase(rng, pool, 1, 5)
            wav = engine().say(text, VOICES[int(rng.integers(len(VOICES)))], int(rng.integers(120, 221)),
                               int(rng.integers(20, 81)))[:length - pos]
            wav = wav * rng.uniform(0.3, 1.0) / max(float(np.abs(wav).max()), 1e-6)
            frame_energy = np.convolve(wav ** 2, np.ones(160) / 160, mode="same")
            speech[pos:pos + len(wav)] = frame_energy > 1e-4
        else:
            wav = _non_speech(rng, min(int(rng.uniform(0.2, 1.0) * RATE), length - pos))
        audio[pos:pos + len(wav)] += wav
        pos += len(wav) + int(rng.uniform(0.1, 0.8) * RATE)
    noise = rng.standard_normal(length).astype(np.float32)
    if rng.random() < 0.5:  # pink-ish: low frequencies dominate
        noise = np.cumsum(noise) * 0.05
        noise -= np.convolve(noise, np.ones(400) / 400, mode="same")
    noise *= 10 ** rng.uniform(-3.0, -1.5) / max(float(noise.std()), 1e-9)
    return np.clip(audio + noise, -1, 1), speech
