"""Metrics checked against scikit-learn on seeded random data (several sizes, heavy ties, rare positives),
threshold finders against brute force, cost against hand arithmetic, and once on the real Davidson slice."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from sklearn import metrics as sk

from finesieve.evals import metrics as M


def random_cases():
    """Yield (name, y_true bool (n,), scores (n,)) holding both classes, over sizes x ties x prevalence."""
    rng = np.random.default_rng(0)
    sizes = (2, 7, 50, 1000)
    ties = {"none": lambda s: s, "decile": lambda s: np.round(s, 1), "three_values": lambda s: np.floor(s * 3)}
    for n, (tie_name, tie), rate in itertools.product(sizes, ties.items(), (0.5, 0.05, 0.0)):
        for rep in range(3):
            y = rng.random(n) < rate
            y[rng.choice(n, 2, replace=False)] = [True, False]  # rate 0.0: exactly one positive
            scores = tie(rng.random(n) + 0.4 * y)  # informative but overlapping
            yield f"n{n}-{tie_name}-p{rate}-{rep}", y, scores


CASES = list(random_cases())
IDS = [c[0] for c in CASES]


@pytest.mark.parametrize("name,y,s", CASES, ids=IDS)
def test_ranking_metrics_match_sklearn(name, y, s):
    assert M.roc_auc(y, s) == pytest.approx(sk.roc_auc_score(y, s), abs=1e-12)
    assert M.pr_auc(y, s) == pytest.approx(sk.average_precision_score(y, s), abs=1e-12)


@pytest.mark.parametrize("name,y,s", CASES, ids=IDS)
def test_curves_match_sklearn(name, y, s):
    fpr, tpr, thr = M.roc_curve(y, s)
    sk_fpr, sk_tpr, sk_thr = sk.roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    np.testing.assert_array_equal(thr, sk_thr)
    assert sk.auc(fpr, tpr) == pytest.approx(M.roc_auc(y, s), abs=1e-12)

    precision, recall, thr = M.pr_curve(y, s)
    sk_p, sk_r, sk_thr = sk.precision_recall_curve(y, s)
    np.testing.assert_allclose(precision, sk_p)
    np.testing.assert_allclose(recall, sk_r)
    np.testing.assert_array_equal(thr, sk_thr)


@pytest.mark.parametrize("name,y,s", CASES[::3], ids=IDS[::3])
def test_thresholded_metrics_match_sklearn(name, y, s):
    # Thresholds at, between and beyond the scores, including one that flags nothing (precision 0 by convention).
    for t in (*np.quantile(s, [0.0, 0.3, 0.9]), s.max() + 1, s.min() - 1):
        pred = s >= t
        p, r, f, _ = sk.precision_recall_fscore_support(y, pred, average="binary", zero_division=0)
        assert M.precision_recall_f1(y, s, t) == pytest.approx((p, r, f), abs=1e-12)
        tn, fp, fn, tp = sk.confusion_matrix(y, pred, labels=[False, True]).ravel()
        assert M.confusion_at(y, s, t) == {"tp": tp, "fp": fp, "tn": tn, "fn": fn}


def test_multiclass_confusion_matrix_matches_sklearn():
    rng = np.random.default_rng(1)
    for n, k in ((1, 2), (30, 3), (500, 5)):
        t, p = rng.integers(0, k, n), rng.integers(0, k, n)
        np.testing.assert_array_equal(M.confusion_matrix(t, p, k), sk.confusion_matrix(t, p, labels=range(k)))
    # A class never seen still gets its row and column.
    assert M.confusion_matrix([0, 0], [0, 2], 4).shape == (4, 4)


def test_int_and_bool_labels_agree():
    y = np.array([0, 1, 1, 0, 1])
    s = np.array([0.1, 0.9, 0.4, 0.4, 0.3])
    assert M.roc_auc(y, s) == M.roc_auc(y.astype(bool), s) == M.roc_auc(y.astype(float), s)
    assert M.roc_auc([0, 1, 1, 0, 1], [0.1, 0.9, 0.4, 0.4, 0.3]) == M.roc_auc(y, s)


# ----------------------------------------------------------------------------- threshold finders by brute force


def brute_force_table(y, s):
    """[(threshold, precision, recall, f1)] at every distinct score, straight from confusion_at."""
    rows = []
    for t in np.unique(s):
        c = M.confusion_at(y, s, t)
        p = c["tp"] / (c["tp"] + c["fp"])
        r = c["tp"] / (c["tp"] + c["fn"])
        rows.append((t, p, r, 2 * p * r / (p + r) if p + r else 0.0))
    return rows


@pytest.mark.parametrize("name,y,s", CASES[::2], ids=IDS[::2])
def test_threshold_finders_match_brute_force(name, y, s):
    table = brute_force_table(y, s)
    for target in (0.0, 0.3, 0.5, 0.8, 0.95, 1.0):
        ok = [row for row in table if row[1] >= target]
        expected = max(ok, key=lambda row: (row[2], row[0]))[0] if ok else None  # best recall, then highest t
        assert M.threshold_for_precision(y, s, target) == expected

        expected = max(row[0] for row in table if row[2] >= target)
        assert M.threshold_for_recall(y, s, target) == expected

    best = max(table, key=lambda row: (round(row[3], 12), row[0]))[0]
    assert M.threshold_for_best_f1(y, s) == best


def test_threshold_for_precision_unreachable_is_none():
    y = [1, 0, 0, 1]
    s = [0.1, 0.9, 0.8, 0.2]  # the top scores are negatives: precision never exceeds 0.5
    assert M.threshold_for_precision(y, s, 0.6) is None
    assert M.threshold_for_precision(y, s, 0.5) == 0.1


@pytest.mark.parametrize("target", [-0.1, 1.5])
def test_threshold_target_out_of_range(target):
    with pytest.raises(ValueError, match="between 0 and 1"):
        M.threshold_for_recall([0, 1], [0.2, 0.8], target)


# ----------------------------------------------------------------------------- cost


def test_expected_cost_hand_computed():
    # 3 classes, 4 messages. Class 0: one miss (msg 1). Class 1: one false alarm (msg 0).
    # Class 2: one miss (msg 3) and one false alarm (msg 2).
    y_true = np.array([[1, 0, 0], [1, 0, 0], [0, 0, 0], [0, 1, 1]])
    y_pred = np.array([[1, 1, 0], [0, 0, 0], [0, 0, 1], [0, 1, 0]])
    miss, fa = [10.0, 5.0, 2.0], [1.0, 3.0, 0.5]
    # (1*10 + 0*5 + 1*2) misses + (0*1 + 1*3 + 1*0.5) false alarms = 15.5, over 4 messages.
    assert M.expected_cost(y_true, y_pred, miss, fa) == pytest.approx(15.5 / 4)


def test_expected_cost_binary_as_vectors():
    # 1-D indicators are one class: 2 misses at 5, 1 false alarm at 1, over 5 messages.
    assert M.expected_cost([1, 1, 1, 0, 0], [1, 0, 0, 1, 0], 5.0, 1.0) == pytest.approx(11 / 5)


def test_expected_cost_rejects_bad_inputs():
    with pytest.raises(ValueError, match="one per class"):
        M.expected_cost([[1, 0]], [[1, 0]], [1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="0/1 indicator"):
        M.expected_cost([[2, 0]], [[1, 0]], [1.0, 1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="shape"):
        M.expected_cost([[1, 0]], [[1, 0, 0]], [1.0, 1.0], [1.0, 1.0])


@pytest.mark.parametrize("name,y,s", CASES[::4], ids=IDS[::4])
def test_cost_optimal_threshold_matches_brute_force(name, y, s):
    for miss, fa in ((1.0, 1.0), (10.0, 1.0), (1.0, 50.0)):
        candidates = [np.inf, *np.unique(s)]
        costs = [M.expected_cost(y.astype(int), (s >= t).astype(int), miss, fa) for t in candidates]
        best = min(costs)
        expected = max(t for t, c in zip(candidates, costs) if c <= best + 1e-12)  # ties: highest threshold
        assert M.cost_optimal_threshold(y, s, miss, fa) == expected


def test_cost_optimal_threshold_can_flag_nothing():
    assert M.cost_optimal_threshold([1, 0, 0], [0.9, 0.8, 0.7], miss_cost=1.0, false_alarm_cost=100.0) == 0.9
    assert M.cost_optimal_threshold([0, 1, 0], [0.9, 0.8, 0.7], miss_cost=1.0, false_alarm_cost=100.0) == np.inf


def test_bayes_threshold_is_near_optimal_on_calibrated_scores():
    assert M.bayes_threshold(miss_cost=4.0, false_alarm_cost=1.0) == pytest.approx(0.2)
    rng = np.random.default_rng(3)
    p = rng.random(200_000)
    y = rng.random(200_000) < p  # p is calibrated by construction
    t = M.cost_optimal_threshold(y, p, 4.0, 1.0)
    assert t == pytest.approx(0.2, abs=0.02)
    with pytest.raises(ValueError, match="not both zero"):
        M.bayes_threshold(0.0, 0.0)


# ----------------------------------------------------------------------------- summary and errors


def test_binary_summary():
    y = [1, 1, 0, 0, 0]
    s = [0.9, 0.4, 0.6, 0.2, 0.1]
    out = M.binary_summary(y, s, 0.5)
    assert out == {
        "n": 5,
        "n_positive": 2,
        "prevalence": 0.4,
        "roc_auc": pytest.approx(sk.roc_auc_score(y, s)),
        "pr_auc": pytest.approx(sk.average_precision_score(y, s)),
        "precision": 0.5,
        "recall": 0.5,
        "f1": 0.5,
        "threshold": 0.5,
        "tp": 1,
        "fp": 1,
        "tn": 2,
        "fn": 1,
        "flag_rate": 0.4,
    }
    single = M.binary_summary([0, 0, 0], [0.1, 0.7, 0.3], 0.5)
    assert single["roc_auc"] is None and single["pr_auc"] is None
    assert single["precision"] == 0.0 and single["flag_rate"] == pytest.approx(1 / 3)


@pytest.mark.parametrize("metric", [M.roc_auc, M.pr_auc, M.roc_curve])
@pytest.mark.parametrize("y,missing", [([1, 1, 1], "negative"), ([0, 0, 0], "positive")])
def test_single_class_is_undefined(metric, y, missing):
    with pytest.raises(ValueError, match=f"undefined: y_true has no {missing}"):
        metric(y, [0.1, 0.2, 0.3])


@pytest.mark.parametrize("fn", [M.roc_auc, M.pr_auc, M.pr_curve, M.threshold_for_best_f1])
def test_input_errors(fn):
    with pytest.raises(ValueError, match="3 items but scores has 2"):
        fn([0, 1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="NaN"):
        fn([0, 1, 1], [0.1, np.nan, 0.3])
    with pytest.raises(ValueError, match="only 0/1"):
        fn([0, 1, 2], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="1-D"):
        fn([0, 1], [[0.1, 0.9], [0.2, 0.8]])


def test_confusion_matrix_errors():
    with pytest.raises(ValueError, match=r"in \[0, 3\)"):
        M.confusion_matrix([0, 3], [0, 1], 3)
    with pytest.raises(ValueError, match="equal length"):
        M.confusion_matrix([0, 1], [0], 3)


# ----------------------------------------------------------------------------- real data


def test_davidson_trivial_scores_match_sklearn(davidson_slice):
    y = (davidson_slice["label"] == "hate_speech").to_numpy()
    text = davidson_slice["text"].str.lower()
    for scores in (
        text.str.len().to_numpy(dtype=float),  # many ties among short tweets
        text.str.count(r"\b(?:hate|kill|die)\b|n[i1]gg|f[a@]g").to_numpy(dtype=float),  # mostly 0: huge ties
    ):
        assert M.roc_auc(y, scores) == pytest.approx(sk.roc_auc_score(y, scores), abs=1e-12)
        assert M.pr_auc(y, scores) == pytest.approx(sk.average_precision_score(y, scores), abs=1e-12)


def test_accuracy_and_macro_f1_match_sklearn():
    rng = np.random.default_rng(3)
    true = rng.integers(0, 5, 400)
    pred = np.where(rng.random(400) < 0.6, true, rng.integers(0, 5, 400))
    pred[pred == 4] = 3  # class 4 is never predicted: its F1 is 0 and still counts in the mean
    assert M.accuracy(true, pred) == pytest.approx(sk.accuracy_score(true, pred))
    assert M.macro_f1(true, pred, 5) == pytest.approx(sk.f1_score(true, pred, average="macro", zero_division=0))
    with pytest.raises(ValueError, match="equal"):
        M.accuracy(true, pred[:-1])
