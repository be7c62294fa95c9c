"""OpenVINO IR: the PP-OCRv4 text detector as an IR on disk, calibrated from a folder of PNG files.

    pip install -e ".[examples]"
    python -m benchmarks.examples.openvino_ir [--calibration 300] [--evaluation 100] [--out DIR]

The IR is what `ovc ch_PP-OCRv4_det_infer.onnx` writes (FP16-compressed weights, input 'x' [?, 3, ?, ?]), made
from rapidocr's ONNX file. The data are folders of 640x640 PNG pages, each with 3-9 English text lines in
matplotlib's 21 Latin fonts, and the lines' boxes in a JSON file beside it, as a user's labelled folder would be;
transform_fn reads and normalises one file. The accuracy is the F-score of the detected boxes (DBNet
post-processing, axis-aligned) against the known lines at IoU 0.5.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import cv2
import numpy as np
import openvino as ov

import ovptq
from benchmarks.examples.common import arguments, nncf_int8, report
from models import ocr_data
from models.ppocr import PPOCRDet, normalize, page_scores
from models.zoo import compile_cpu, rng_for

PAGE = 640
CALIBRATION_WORDS, EVALUATION_WORDS = 0, 1


def write_pages(folder: Path, count: int, words: int, seed: int) -> list[Path]:
    """`count` pages as NNNNN.png, each with its text-line boxes [[x0, y0, x1, y1], ...] in NNNNN.json."""
    folder.mkdir()
    rng = rng_for(seed, words)
    paths = []
    for index in range(count):
        page, boxes, _ = ocr_data.render_page(rng, words, PAGE)
        path = folder / f"{index:05d}.png"
        cv2.imwrite(str(path), page)
        path.with_suffix(".json").write_text(json.dumps([list(box) for box in boxes]))
        paths.append(path)
    return paths


def transform_fn(path: Path) -> np.ndarray:
    """An image file -> the model input [1, 3, H, W]: BGR, (x / 255 - 0.5) / 0.5."""
    return normalize(cv2.imread(str(path)))[None]


def detection_fscore(model: ov.Model, pages: list[Path]) -> float:
    compiled = compile_cpu(model)
    probability_maps = (compiled(transform_fn(path))[0][0, 0] for path in pages)
    known = (json.loads(path.with_suffix(".json").read_text()) for path in pages)
    return page_scores(probability_maps, known)["fscore"]


def main() -> None:
    args = arguments(__doc__, calibration=300, evaluation=100)
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        ir = folder / "ch_PP-OCRv4_det_infer.xml"
        ov.save_model(ov.convert_model(PPOCRDet().onnx_path()), ir)  # the IR a user holds, as `ovc` writes it
        write_pages(folder / "calibration", args.calibration, CALIBRATION_WORDS, seed=0)
        evaluation = write_pages(folder / "evaluation", args.evaluation, EVALUATION_WORDS, seed=1)

        fp32 = ov.Core().read_model(ir)
        images = sorted((folder / "calibration").glob("*.png"))
        int8 = ovptq.quantize(fp32, ovptq.Dataset(images, transform_fn), subset_size=len(images),
                              target_device=args.target_device)
        peer = nncf_int8(args, fp32, images, transform_fn, len(images))

        report(fp32, int8, "text_line_fscore", lambda model: detection_fscore(model, evaluation), args,
               shape=f"x[1,3,{PAGE},{PAGE}]", peer=peer)


if __name__ == "__main__":
    main()
