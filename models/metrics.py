"""The metrics of the model zoo, in plain numpy so they can be tested without any model or optional package.

OCR: greedy CTC decoding, edit distance and character error rate; detection: IoU, one-to-one box matching and
precision / recall / F-score; classifiers without labels: agreement with the FP32 probabilities (top-1, top-5,
KL divergence); anything else: cosine similarity of the outputs with FP32's.
"""

from __future__ import annotations

import unicodedata
from typing import Dict, List, Sequence, Tuple

import numpy as np

Box = Tuple[float, float, float, float]  # x0, y0, x1, y1


def ctc_greedy_decode(probs: np.ndarray, classes: Sequence[str]) -> str:
    """Argmax per time step, merge repeats, drop blanks (class 0); NFKC folds full-width forms to ASCII and runs
    of spaces collapse to one."""
    best = probs.argmax(axis=-1)
    keep = np.ones(len(best), bool)
    keep[1:] = best[1:] != best[:-1]
    text = "".join(classes[k] for k in best[keep] if k != 0)
    return " ".join(unicodedata.normalize("NFKC", text).split())


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions all cost 1)."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def character_error_rate(predictions: Sequence[str], truths: Sequence[str]) -> float:
    """Total edit distance over total ground-truth characters (so long texts weigh more)."""
    return sum(edit_distance(p, t) for p, t in zip(predictions, truths)) / sum(len(t) for t in truths)


def iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match_boxes(pred: Sequence[Box], gt: Sequence[Box], iou_thresh: float = 0.5) -> int:
    """Number of one-to-one matches between predicted and ground-truth boxes at IoU >= iou_thresh (greedy,
    highest IoU first)."""
    pairs = sorted(((iou(p, g), i, j) for i, p in enumerate(pred) for j, g in enumerate(gt)), reverse=True)
    used_p, used_g, hits = set(), set(), 0
    for overlap, i, j in pairs:
        if overlap < iou_thresh:
            break
        if i not in used_p and j not in used_g:
            used_p.add(i)
            used_g.add(j)
            hits += 1
    return hits


def detection_scores(hits: int, predicted: int, truths: int) -> Dict[str, float]:
    """precision = hits / predicted, recall = hits / truths, fscore = their harmonic mean (0 without hits)."""
    precision = hits / predicted if predicted else 0.0
    recall = hits / truths if truths else 0.0
    fscore = 2 * precision * recall / (precision + recall) if hits else 0.0
    return {"fscore": fscore, "precision": precision, "recall": recall}


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def agreement(reference: np.ndarray, probs: np.ndarray, confident: float = 0.5) -> Dict[str, float]:
    """Class probabilities [samples, classes] of a model against the FP32 reference's: top1_agreement = share of
    samples with the same top-1 class; top5_overlap = mean share of the reference's top-5 classes also in the
    model's top 5; kl_divergence = mean KL(reference || model) in nats; agreement_confident = top-1 agreement on
    the samples where the reference's top-1 probability exceeds `confident`."""
    p, q = reference.astype(np.float64), probs.astype(np.float64)
    same = p.argmax(1) == q.argmax(1)
    k = min(5, p.shape[1])
    top_p, top_q = np.argsort(-p, 1)[:, :k], np.argsort(-q, 1)[:, :k]
    overlap = [len(set(a) & set(b)) / k for a, b in zip(top_p, top_q)]
    kl = np.sum(p * (np.log(np.clip(p, 1e-12, None)) - np.log(np.clip(q, 1e-12, None))), axis=1)
    sure = p.max(1) > confident
    return {"top1_agreement": float(same.mean()), "top5_overlap": float(np.mean(overlap)),
            "kl_divergence": float(kl.mean()),
            "agreement_confident": float(same[sure].mean()) if sure.any() else float("nan"),
            "n_confident": int(sure.sum())}


def output_match(references: List[List[np.ndarray]], outputs: List[List[np.ndarray]]) -> Dict[str, float]:
    """output_cosine: mean over samples of the cosine between the model's and the reference's outputs (all outputs
    of a sample flattened together; two all-zero outputs count as 1); output_max_abs_err: the largest absolute
    difference seen."""
    cosines, max_err = [], 0.0
    for ref, out in zip(references, outputs):
        a = np.concatenate([r.ravel() for r in ref]).astype(np.float64)
        b = np.concatenate([o.ravel() for o in out]).astype(np.float64)
        denom = np.linalg.norm(a) * np.linalg.norm(b)
        cosines.append(float(a @ b / denom) if denom > 0 else float(np.array_equal(a, b)))
        max_err = max(max_err, float(np.max(np.abs(a - b))))
    return {"output_cosine": float(np.mean(cosines)), "output_max_abs_err": max_err}


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation coefficient."""
    a, b = np.asarray(x, np.float64), np.asarray(y, np.float64)
    a, b = a - a.mean(), b - b.mean()
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def ranks(values: Sequence[float]) -> np.ndarray:
    """Ranks from 1, ties sharing the mean of the ranks they span."""
    values = np.asarray(values, np.float64)
    order = np.argsort(values, kind="stable")
    result = np.empty(len(values))
    sorted_values = values[order]
    start = 0
    for end in range(1, len(values) + 1):
        if end == len(values) or sorted_values[end] != sorted_values[start]:
            result[order[start:end]] = (start + end + 1) / 2
            start = end
    return result


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation: Pearson of the ranks (ties averaged)."""
    return pearson(ranks(x), ranks(y))
