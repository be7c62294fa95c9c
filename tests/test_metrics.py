"""The benchmark's metrics on small cases whose answers are known exactly."""

import math

import numpy as np
import pytest

from models.metrics import (agreement, character_error_rate, ctc_greedy_decode, detection_scores, edit_distance,
                            iou, match_boxes, output_match, pearson, ranks, softmax, spearman)

CLASSES = ["blank", "a", "b", "Ｃ", " "]


def one_hot(indices, classes=len(CLASSES)):
    return np.eye(classes)[indices]


@pytest.mark.parametrize("steps, text", [
    ([1, 1, 0, 1, 2, 2], "aab"),           # repeats merge, a blank separates a real double letter
    ([0, 0, 0], ""),
    ([4, 1, 4, 4, 0, 4, 2, 4], "a b"),     # leading/trailing spaces dropped, runs of spaces collapse
    ([3, 0, 3], "CC"),                     # NFKC folds the full-width C
])
def test_ctc_greedy_decode(steps, text):
    assert ctc_greedy_decode(one_hot(steps), CLASSES) == text


@pytest.mark.parametrize("a, b, distance", [
    ("kitten", "sitting", 3), ("", "abc", 3), ("abc", "", 3), ("flaw", "lawn", 2), ("same", "same", 0),
])
def test_edit_distance(a, b, distance):
    assert edit_distance(a, b) == edit_distance(b, a) == distance


def test_character_error_rate_weighs_by_ground_truth_length():
    # 1 edit in "ab" + 0 in "cdef" over 6 characters, not the mean of per-word rates (0.25)
    assert character_error_rate(["ax", "cdef"], ["ab", "cdef"]) == pytest.approx(1 / 6)


def test_iou():
    assert iou((0, 0, 2, 2), (1, 1, 3, 3)) == pytest.approx(1 / 7)
    assert iou((0, 0, 1, 1), (0, 0, 1, 1)) == 1.0
    assert iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0
    assert iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0


def test_boxes_match_one_to_one_best_first():
    gt = [(0, 0, 10, 10), (20, 0, 30, 10)]
    # two predictions overlap the first truth; only the better one counts; the second truth is matched too
    pred = [(0, 0, 10, 9), (0, 0, 10, 8), (21, 0, 30, 10)]
    assert match_boxes(pred, gt) == 2
    assert match_boxes([(0, 0, 10, 4)], gt) == 0           # IoU 0.4 < 0.5
    assert match_boxes([(0, 0, 10, 5)], gt) == 1           # IoU exactly 0.5 counts
    scores = detection_scores(hits=2, predicted=3, truths=2)
    assert scores["precision"] == pytest.approx(2 / 3) and scores["recall"] == 1.0
    assert scores["fscore"] == pytest.approx(0.8)
    assert detection_scores(0, 0, 5) == {"fscore": 0.0, "precision": 0.0, "recall": 0.0}


def test_agreement_against_the_reference():
    reference = np.array([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25]])
    probs = np.array([[0.6, 0.3, 0.1], [0.3, 0.45, 0.25]])
    result = agreement(reference, probs)
    assert result["top1_agreement"] == 0.5
    assert result["agreement_confident"] == 1.0 and result["n_confident"] == 1   # only row 0 has p > 0.5
    assert result["top5_overlap"] == 1.0                                          # 3 classes: all in the top k
    kl = np.mean([sum(p * math.log(p / q) for p, q in zip(r, m)) for r, m in zip(reference, probs)])
    assert result["kl_divergence"] == pytest.approx(kl)
    assert agreement(reference, reference)["kl_divergence"] == pytest.approx(0.0, abs=1e-15)


def test_softmax_is_shift_invariant_and_stable():
    logits = np.array([[1000.0, 1000.0, 998.0]])
    np.testing.assert_allclose(softmax(logits), softmax(logits - 1000.0))
    assert softmax(logits).sum() == pytest.approx(1.0)


def test_output_match():
    ref = [[np.array([1.0, 0.0]), np.array([0.0])], [np.array([0.0, 0.0]), np.array([0.0])]]
    out = [[np.array([1.0, 1.0]), np.array([0.0])], [np.array([0.0, 0.0]), np.array([0.0])]]
    result = output_match(ref, out)
    assert result["output_cosine"] == pytest.approx((1 / math.sqrt(2) + 1.0) / 2)   # zero vs zero counts as 1
    assert result["output_max_abs_err"] == 1.0


def test_pearson_and_spearman():
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert pearson([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    np.testing.assert_allclose(ranks([10, 20, 20, 5]), [2, 3.5, 3.5, 1])
    assert spearman([1, 2, 3, 4], [1, 8, 27, 64]) == pytest.approx(1.0)   # monotone, not linear
    # ties: ranks [1, 2.5, 2.5, 4] against [1, 2, 3, 4]
    assert spearman([1, 5, 5, 9], [1, 2, 3, 4]) == pytest.approx(pearson([1, 2.5, 2.5, 4], [1, 2, 3, 4]))
