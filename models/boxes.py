"""Box helpers shared by the detector families: non-maximum suppression and agreement with FP32's detections."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .metrics import detection_scores, iou, match_boxes
from .zoo import EVAL, Item, ModelLike, ModelSpec, run

Detection = Tuple[int, float, Tuple[float, float, float, float]]  # class, score, (x0, y0, x1, y1)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_thresh: float) -> List[int]:
    """Indices kept by greedy non-maximum suppression (highest score first), boxes [n, 4] as x0, y0, x1, y1."""
    kept: List[int] = []
    for i in np.argsort(-scores, kind="stable"):
        if all(iou(tuple(boxes[i]), tuple(boxes[j])) < iou_thresh for j in kept):
            kept.append(int(i))
    return kept


def agreement_with_reference(reference: Sequence[List[Detection]], detections: Sequence[List[Detection]],
                             iou_thresh: float = 0.5) -> Dict[str, float]:
    """FP32's detections taken as ground truth: boxes of the same class matched one to one at IoU >= iou_thresh,
    pooled over all images into precision / recall / F-score; images where both find nothing add nothing."""
    hits = predicted = truths = 0
    for ref, det in zip(reference, detections):
        for cls in {d[0] for d in ref} | {d[0] for d in det}:
            ref_boxes = [d[2] for d in ref if d[0] == cls]
            det_boxes = [d[2] for d in det if d[0] == cls]
            hits += match_boxes(det_boxes, ref_boxes, iou_thresh)
            predicted += len(det_boxes)
            truths += len(ref_boxes)
    return {**detection_scores(hits, predicted, truths), "reference_boxes": truths}


class DetectorSpec(ModelSpec):
    """A detector without box labels: a variant is scored by how well its detections match FP32's."""

    headline = "fscore"

    def decode(self, outputs: List[np.ndarray]) -> List[Detection]:
        """One image's detections from the model's outputs."""
        raise NotImplementedError

    def _detect(self, model: ModelLike, items: List[Item]) -> List[List[Detection]]:
        return [self.decode(outputs) for outputs in run(model, items)]

    def evaluate(self, model_or_xml: ModelLike, n: Optional[int] = None, seed: int = 1) -> Dict[str, Any]:
        """fscore / precision / recall of the model's detections against FP32's (see agreement_with_reference)."""
        n = self.default_n if n is None else n
        items = self.make_items(n, seed, EVAL)
        reference = self.fp32_reference((n, seed), lambda xml: self._detect(xml, items))
        return {**agreement_with_reference(reference, self._detect(model_or_xml, items)), "n": n}
