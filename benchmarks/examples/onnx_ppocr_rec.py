"""ONNX: the PP-OCRv4 text recogniser, read with ov.Core().read_model, quantized with a dict transform_fn.

    pip install -e ".[examples]"
    python -m benchmarks.examples.onnx_ppocr_rec [--calibration 300] [--evaluation 300] [--out DIR]

The ONNX file is rapidocr's (rapidocr-onnxruntime wheel); its input 'x' is [?, 3, 48, ?]. The data are English
words and short phrases rendered in matplotlib's 21 Latin fonts at 22-44 px, some low-contrast or light on dark,
blurred and noisy (calibration and evaluation from disjoint word lists); the accuracy is the share of lines read
exactly (greedy CTC decoding with the character list from the ONNX metadata).
"""

from __future__ import annotations

import itertools

import numpy as np
import openvino as ov

import ovptq
from benchmarks.examples.common import arguments, nncf_int8, report
from models.ppocr import PPOCRRec, fitting_lines, resize_pad
from models.zoo import compile_cpu, rng_for

HEIGHT, WIDTH = 48, 320
CALIBRATION_WORDS, EVALUATION_WORDS = 0, 1


def text_lines(count: int, words: int, seed: int) -> list[tuple[np.ndarray, str]]:
    """(BGR uint8 line image, its text) for `count` phrases of 1-3 words that fit 320x48 unsqueezed."""
    return list(itertools.islice(fitting_lines(rng_for(seed, words), words, HEIGHT, WIDTH), count))


def transform_fn(sample: tuple[np.ndarray, str]) -> dict[str, np.ndarray]:
    """One (image, text) sample -> {input name: [1, 3, 48, 320] float32}: the text stays out."""
    image, _ = sample
    return {"x": resize_pad(image, HEIGHT, WIDTH)}


def word_accuracy(model: ov.Model, samples: list[tuple[np.ndarray, str]], recogniser: PPOCRRec) -> float:
    compiled = compile_cpu(model)
    read = [recogniser.decode(compiled(transform_fn(sample))[0][0]) for sample in samples]
    return float(np.mean([text == truth for text, (_, truth) in zip(read, samples)]))


def main() -> None:
    args = arguments(__doc__, calibration=300, evaluation=300)
    recogniser = PPOCRRec()  # where the ONNX file is, and its character list
    fp32 = ov.Core().read_model(recogniser.onnx_path())

    calibration = text_lines(args.calibration, CALIBRATION_WORDS, seed=0)
    int8 = ovptq.quantize(fp32, ovptq.Dataset(calibration, transform_fn), subset_size=args.calibration,
                          target_device=args.target_device)
    peer = nncf_int8(args, fp32, calibration, transform_fn, args.calibration)

    evaluation = text_lines(args.evaluation, EVALUATION_WORDS, seed=1)
    report(fp32, int8, "word_accuracy", lambda model: word_accuracy(model, evaluation, recogniser), args,
           shape=f"x[1,3,{HEIGHT},{WIDTH}]", peer=peer)


if __name__ == "__main__":
    main()
