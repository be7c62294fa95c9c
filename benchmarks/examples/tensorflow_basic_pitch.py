"""TensorFlow: Spotify's Basic Pitch SavedModel -> ov.convert_model -> ovptq.quantize, data from a tf.data.Dataset.

    pip install -e ".[examples,tensorflow]" && pip install --no-deps basic-pitch==0.4.0
    python -m benchmarks.examples.tensorflow_basic_pitch [--calibration 150] [--evaluation 150] [--out DIR]

Basic Pitch transcribes 2 s of 22.05 kHz audio into note, onset and pitch-contour posteriorgrams over the 88 piano
keys. The SavedModel is the one inside the basic-pitch wheel. The audio is synthetic polyphonic music whose notes
are known (3-10 harmonic notes with random timbre and decay, chords, noise; calibration and evaluation from
different random streams), fed by a tf.data pipeline; the accuracy is the frame-level F-score of the note
posteriorgram above 0.3 against the known notes.
"""

from __future__ import annotations

import numpy as np
import openvino as ov
import tensorflow as tf

import ovptq
from benchmarks.examples.common import arguments, nncf_int8, report
from models.basic_pitch_notes import FRAME_THRESHOLD, KEYS, FRAMES, SAMPLES, frame_fscore, model_path, music
from models.zoo import compile_cpu, rng_for

CALIBRATION_STREAM, EVALUATION_STREAM = 0, 1


def clips(count: int, stream: int, seed: int) -> tf.data.Dataset:
    """(audio [1, 43844, 1], known notes [1, 172, 88]) batches of one clip."""
    def generate():
        rng = rng_for(seed, stream, SAMPLES)
        for _ in range(count):
            audio, notes = music(rng)
            yield audio[:, None], notes

    signature = (tf.TensorSpec((SAMPLES, 1), tf.float32), tf.TensorSpec((FRAMES, KEYS), tf.bool))
    return tf.data.Dataset.from_generator(generate, output_signature=signature).batch(1)


def transform_fn(batch: tuple[tf.Tensor, tf.Tensor]) -> np.ndarray:
    """A tf.data batch -> the model input: the audio, without the notes."""
    audio, _ = batch
    return audio.numpy()


def note_fscore(model: ov.Model, dataset: tf.data.Dataset) -> float:
    compiled = compile_cpu(model)
    note = compiled.output("note")
    predicted, known = [], []
    for batch in dataset:
        predicted.append(compiled(transform_fn(batch))[note][0] > FRAME_THRESHOLD)
        known.append(batch[1].numpy()[0])
    return frame_fscore(np.concatenate(predicted), np.concatenate(known))["fscore"]


def main() -> None:
    args = arguments(__doc__, calibration=150, evaluation=150)
    fp32 = ov.convert_model(model_path().parent / "nmp")  # the SavedModel folder; input 'input_2' [?, 43844, 1]

    calibration = clips(args.calibration, CALIBRATION_STREAM, seed=0)
    int8 = ovptq.quantize(fp32, ovptq.Dataset(calibration, transform_fn), subset_size=args.calibration,
                          target_device=args.target_device)
    peer = nncf_int8(args, fp32, calibration, transform_fn, args.calibration)

    evaluation = clips(args.evaluation, EVALUATION_STREAM, seed=1).cache()
    report(fp32, int8, "note_fscore", lambda model: note_fscore(model, evaluation), args,
           shape=f"input_2[1,{SAMPLES},1]", peer=peer)


if __name__ == "__main__":
    main()
