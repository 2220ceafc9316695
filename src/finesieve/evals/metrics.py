"""Evaluation metrics in plain NumPy: ranking (ROC and PR), thresholded counts, threshold choice and cost.

Binary inputs everywhere are `y_true`, shape (n,), 0/1 or bool, and `scores`, shape (n,), floats where
higher means more likely positive. A message is predicted positive when `score >= threshold`.

The functions agree with scikit-learn (`roc_auc_score`, `average_precision_score`, `roc_curve`,
`precision_recall_curve`, `precision_recall_fscore_support(zero_division=0)`, `confusion_matrix`) but
are written here so that one call costs about a sort of the scores: `evals/bootstrap.py` calls them
thousands of times. Each raises ValueError with the fix when inputs are malformed (lengths differ,
NaN scores, labels other than 0/1) and when an AUC is undefined because `y_true` holds one class only.

    from finesieve.evals.metrics import binary_summary, threshold_for_precision
    t = threshold_for_precision(y_true, scores, 0.9)
    print(binary_summary(y_true, scores, t))
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

# ----------------------------------------------------------------------------- input checks


def as_binary_inputs(y_true, scores) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert binary inputs: returns (y bool (n,), scores float64 (n,))."""
    y = np.asarray(y_true)
    s = np.asarray(scores, dtype=float)
    if y.ndim != 1 or s.ndim != 1:
        raise ValueError(
            f"y_true and scores must be 1-D, got shapes {y.shape} and {s.shape}. "
            "Fix: pass one label and one score per message (for a (n, 2) predict_proba, use proba[:, 1])."
        )
    if len(y) != len(s):
        raise ValueError(
            f"y_true has {len(y)} items but scores has {len(s)}. Fix: pass one score per labelled message."
        )
    if np.isnan(s).any():
        raise ValueError(
            f"scores contain {int(np.isnan(s).sum())} NaN value(s), first at index {int(np.flatnonzero(np.isnan(s))[0])}. "
            "Fix: find why the scorer returned NaN (empty text? failed call?) and score those messages again."
        )
    if y.dtype != bool:
        bad = ~((y == 0) | (y == 1))
        if bad.any():
            raise ValueError(
                f"y_true must hold only 0/1 or booleans, got {np.unique(y[bad])[:5].tolist()}. "
                "Fix: binarise the labels first, e.g. y_true = (labels == 'hate_speech')."
            )
    return y.astype(bool), s


def _require_both_classes(y: np.ndarray, metric: str) -> None:
    """Raise when `y` (bool (n,)) lacks a class, which makes a ranking metric undefined."""
    if y.all() or not y.any():
        missing = "negative (0)" if y.all() else "positive (1)"
        raise ValueError(
            f"{metric} is undefined: y_true has no {missing} examples among {len(y)} items. "
            "Fix: evaluate on data holding both classes (callers may catch this and report None)."
        )


def _require_positives(y: np.ndarray) -> None:
    """Raise when `y` has no positives: recall, and so every threshold search below, is undefined."""
    if not y.any():
        raise ValueError(
            f"y_true has no positive (1) examples among {len(y)} items, so recall is undefined. "
            "Fix: choose thresholds on data holding at least one positive."
        )


def _check_fraction(value: float, name: str) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, got {value}. Fix: pass a fraction, e.g. 0.9.")


# ----------------------------------------------------------------------------- ranking metrics


def counts_by_threshold(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds, tp, fp) at each distinct score, thresholds descending; shapes (d,).

    tp[i], fp[i] count items with score >= thresholds[i]. Expects validated inputs (`as_binary_inputs`).
    """
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    # Last index of each run of equal scores: cumulative counts there include every tied item.
    last = np.r_[np.flatnonzero(np.diff(s_sorted)), len(s_sorted) - 1]
    tp = np.cumsum(y_sorted)[last]
    fp = (last + 1) - tp
    return s_sorted[last], tp, fp


def roc_curve(y_true, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds), like sklearn's roc_curve(drop_intermediate=False): starts at (0, 0), threshold inf."""
    y, s = as_binary_inputs(y_true, scores)
    _require_both_classes(y, "ROC curve")
    thresholds, tp, fp = counts_by_threshold(y, s)
    fpr = np.r_[0.0, fp / fp[-1]]
    tpr = np.r_[0.0, tp / tp[-1]]
    return fpr, tpr, np.r_[np.inf, thresholds]


def roc_auc(y_true, scores) -> float:
    """Area under the ROC curve, exact: the Mann-Whitney U statistic, a tie between classes counting half."""
    y, s = as_binary_inputs(y_true, scores)
    _require_both_classes(y, "ROC AUC")
    # Average ranks (1-based) so that tied scores share their rank.
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = (ends - (counts - 1) / 2.0)[inverse]
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def pr_curve(y_true, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, thresholds) like sklearn's precision_recall_curve: thresholds ascending, (1, 0) appended."""
    y, s = as_binary_inputs(y_true, scores)
    _require_positives(y)
    thresholds, tp, fp = counts_by_threshold(y, s)
    precision = tp / (tp + fp)  # every distinct threshold flags at least one item
    recall = tp / tp[-1]
    return np.r_[precision[::-1], 1.0], np.r_[recall[::-1], 0.0], thresholds[::-1]


def pr_auc(y_true, scores) -> float:
    """Average precision, sum_k (R_k - R_{k-1}) * P_k over distinct thresholds: sklearn's average_precision_score."""
    y, s = as_binary_inputs(y_true, scores)
    _require_both_classes(y, "PR AUC (average precision)")
    _, tp, fp = counts_by_threshold(y, s)
    precision = tp / (tp + fp)
    recall_gain = np.diff(tp, prepend=0) / tp[-1]
    return float(np.sum(recall_gain * precision))


# ----------------------------------------------------------------------------- thresholded metrics


def confusion_at(y_true, scores, threshold: float) -> dict[str, int]:
    """Counts tp, fp, tn, fn when predicting positive for score >= threshold."""
    y, s = as_binary_inputs(y_true, scores)
    pred = s >= threshold
    tp = int(np.sum(pred & y))
    fp = int(np.sum(pred & ~y))
    fn = int(np.sum(~pred & y))
    return {"tp": tp, "fp": fp, "tn": len(y) - tp - fp - fn, "fn": fn}


def _prf(tp, fp, fn):
    """Precision, recall, F1 from counts (scalars or arrays); 0.0 where undefined (sklearn's zero_division=0)."""
    tp, fp, fn = (np.asarray(x, dtype=float) for x in (tp, fp, fn))
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        recall = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
        # F1 = 2tp / (2tp + fp + fn): equal to 2PR/(P+R) and 0 when tp == 0.
        f1 = np.where(tp > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
    return precision, recall, f1


def precision_recall_f1(y_true, scores, threshold: float) -> tuple[float, float, float]:
    """(precision, recall, F1) of the positive class at `threshold`; 0.0 when a ratio is undefined."""
    c = confusion_at(y_true, scores, threshold)
    return tuple(float(v) for v in _prf(c["tp"], c["fp"], c["fn"]))


# ----------------------------------------------------------------------------- choosing a threshold
# Candidates are the distinct scores: any other threshold flags the same items as the next score up.


def _candidates(y_true, scores):
    """(thresholds descending, precision, recall, f1), each (d,), at every distinct score."""
    y, s = as_binary_inputs(y_true, scores)
    _require_positives(y)
    thresholds, tp, fp = counts_by_threshold(y, s)
    precision, recall, f1 = _prf(tp, fp, tp[-1] - tp)
    return thresholds, precision, recall, f1


def threshold_for_precision(y_true, scores, target: float) -> float | None:
    """Threshold with the highest recall among those with precision >= target; None if no threshold reaches it.

    Ties in recall go to the highest such threshold (fewest false positives).
    """
    _check_fraction(target, "target precision")
    thresholds, precision, recall, _ = _candidates(y_true, scores)
    ok = np.flatnonzero(precision >= target)
    if len(ok) == 0:
        return None
    # Thresholds run descending, so argmax returns the first, i.e. highest, threshold of the best recall.
    return float(thresholds[ok[np.argmax(recall[ok])]])


def threshold_for_recall(y_true, scores, target: float) -> float:
    """Highest threshold whose recall >= target: the best precision at that recall.

    Always found for target in [0, 1]: the lowest score flags every message (recall 1).
    """
    _check_fraction(target, "target recall")
    thresholds, _, recall, _ = _candidates(y_true, scores)
    # recall is non-decreasing as thresholds descend; the first index reaching target is the highest threshold.
    return float(thresholds[np.argmax(recall >= target)])


def threshold_for_best_f1(y_true, scores) -> float:
    """Threshold maximising F1 on the given data; ties go to the highest threshold."""
    thresholds, _, _, f1 = _candidates(y_true, scores)
    return float(thresholds[np.argmax(f1)])


# ----------------------------------------------------------------------------- multi-class and cost


def confusion_matrix(y_true_idx, y_pred_idx, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) int counts: rows are true classes, columns predicted classes (sklearn's layout)."""
    t, p = np.asarray(y_true_idx), np.asarray(y_pred_idx)
    if t.shape != p.shape or t.ndim != 1:
        raise ValueError(
            f"y_true_idx and y_pred_idx must be 1-D of equal length, got shapes {t.shape} and {p.shape}. "
            "Fix: pass one class index per message (e.g. proba.argmax(axis=1))."
        )
    for name, a in (("y_true_idx", t), ("y_pred_idx", p)):
        bad = (a < 0) | (a >= n_classes) | (a != np.round(a))
        if bad.any():
            raise ValueError(
                f"{name} must hold integer class indices in [0, {n_classes}), got {np.unique(a[bad])[:5].tolist()}. "
                "Fix: map labels to indices in classes_ order, or raise n_classes."
            )
    flat = t.astype(int) * n_classes + p.astype(int)
    return np.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def accuracy(y_true_idx, y_pred_idx) -> float:
    """Share of messages whose predicted class (e.g. `proba.argmax(axis=1)`) is the true one."""
    t, p = np.asarray(y_true_idx), np.asarray(y_pred_idx)
    if t.shape != p.shape or t.ndim != 1 or len(t) == 0:
        raise ValueError(f"accuracy needs two 1-D arrays of equal, non-zero length, got {t.shape} and {p.shape}")
    return float((t == p).mean())


def macro_f1(y_true_idx, y_pred_idx, n_classes: int) -> float:
    """Unweighted mean over classes of one-vs-rest F1 (scikit-learn's f1_score(average="macro")): every class
    weighs the same however rare. A class neither present nor predicted counts as F1 0, as scikit-learn's
    zero_division=0 does, so a class the data lacks drags the mean down: pass the classes the data holds."""
    m = confusion_matrix(y_true_idx, y_pred_idx, n_classes)
    tp = np.diag(m).astype(float)
    denom = m.sum(axis=0) + m.sum(axis=1)  # predicted + true = 2tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros(n_classes), where=denom > 0)
    return float(f1.mean())


def _as_indicator(a, name: str) -> np.ndarray:
    """0/1 indicator matrix as bool (n, k); a 1-D input is one binary class, (n, 1)."""
    m = np.asarray(a)
    m = m.reshape(-1, 1) if m.ndim == 1 else m
    if m.ndim != 2 or not np.isin(m, (0, 1)).all():
        raise ValueError(
            f"{name} must be a 0/1 indicator matrix of shape (n, k), got shape {np.shape(a)} "
            f"with values {np.unique(m)[:5].tolist()}. Fix: one row per message, one 0/1 column per class."
        )
    return m.astype(bool)


def _as_costs(costs, k: int, name: str) -> np.ndarray:
    """Per-class costs as float (k,); a scalar applies to every class."""
    c = np.asarray(costs, dtype=float)
    c = np.full(k, float(c)) if c.ndim == 0 else c
    if c.shape != (k,) or np.isnan(c).any() or (c < 0).any():
        raise ValueError(
            f"{name} must be {k} non-negative cost(s), one per class, got {np.asarray(costs).tolist()}. "
            "Fix: give one cost per class, in classes_ order."
        )
    return c


def expected_cost(y_true_ind, y_pred_ind, miss_cost, false_alarm_cost) -> float:
    """Mean cost per message: sum_c (FN_c * miss_c + FP_c * false_alarm_c) / n.

    y_true_ind, y_pred_ind: (n, k) 0/1 indicators (k = 1, or 1-D, for binary); costs: length k (or scalars).
    """
    t, p = _as_indicator(y_true_ind, "y_true_ind"), _as_indicator(y_pred_ind, "y_pred_ind")
    if t.shape != p.shape:
        raise ValueError(
            f"y_true_ind has shape {t.shape} but y_pred_ind has {p.shape}. Fix: same messages, same classes."
        )
    k = t.shape[1]
    miss, fa = _as_costs(miss_cost, k, "miss_cost"), _as_costs(false_alarm_cost, k, "false_alarm_cost")
    fn = (t & ~p).sum(axis=0)  # (k,)
    fp = (~t & p).sum(axis=0)  # (k,)
    return float((fn @ miss + fp @ fa) / len(t))


def cost_optimal_threshold(y_true, scores, miss_cost: float, false_alarm_cost: float) -> float:
    """Binary threshold minimising expected cost on the given data; ties go to the highest threshold.

    May return inf (flag nothing) when every false alarm costs more than the misses it would save.
    """
    miss = _as_costs(miss_cost, 1, "miss_cost")[0]
    fa = _as_costs(false_alarm_cost, 1, "false_alarm_cost")[0]
    y, s = as_binary_inputs(y_true, scores)
    thresholds, tp, fp = counts_by_threshold(y, s)
    # Candidate inf first: flag nothing, so every positive is a miss.
    thresholds, tp, fp = np.r_[np.inf, thresholds], np.r_[0, tp], np.r_[0, fp]
    cost = (y.sum() - tp) * miss + fp * fa
    return float(thresholds[np.argmin(cost)])


def bayes_threshold(miss_cost: float, false_alarm_cost: float) -> float:
    """Cost-minimising threshold on a calibrated P(positive): flag when p * miss >= (1 - p) * fa, i.e. p >= fa / (fa + miss)."""
    if miss_cost < 0 or false_alarm_cost < 0 or miss_cost + false_alarm_cost == 0:
        raise ValueError(
            f"costs must be non-negative and not both zero, got miss_cost={miss_cost}, "
            f"false_alarm_cost={false_alarm_cost}. Fix: e.g. miss_cost=10, false_alarm_cost=1."
        )
    return false_alarm_cost / (false_alarm_cost + miss_cost)


# ----------------------------------------------------------------------------- report


def _or_none(metric, y, s) -> float | None:
    """The metric, or None when it is undefined (one class only)."""
    try:
        return metric(y, s)
    except ValueError:
        return None


def binary_summary(y_true, scores, threshold: float) -> dict:
    """Every binary metric at once, as JSON-ready Python numbers; AUCs are None when y_true has one class."""
    y, s = as_binary_inputs(y_true, scores)
    c = confusion_at(y, s, threshold)
    precision, recall, f1 = precision_recall_f1(y, s, threshold)
    n = len(y)
    return {
        "n": n,
        "n_positive": int(y.sum()),
        "prevalence": float(y.mean()) if n else 0.0,
        "roc_auc": _or_none(roc_auc, y, s),
        "pr_auc": _or_none(pr_auc, y, s),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "threshold": float(threshold),
        **c,
        "flag_rate": (c["tp"] + c["fp"]) / n if n else 0.0,
    }


# ----------------------------------------------------------------------------- shares


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of the share successes / n (sound at small n and near 0 or 1)."""
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n > 0, got successes={successes}, n={n}")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # At 0 or n the bound is exactly 0 or 1 in theory; say so rather than leave rounding dust (1e-18).
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high
