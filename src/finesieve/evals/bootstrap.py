"""Bootstrap confidence intervals for binary metrics, and a paired bootstrap to compare two scorers.

Every function draws its resamples from `resample_indices`, so the same seed gives the same resamples
everywhere: a CI from `bootstrap_ci(roc_auc, ...)` equals the `roc_auc` CI of `bootstrap_cis(...)`.
Stratified resampling (the default) draws positives and negatives separately, keeping their counts
fixed, so an AUC stays defined when positives are rare. Resamples where a metric is undefined are
skipped. Intervals are percentile intervals: (alpha/2, 1 - alpha/2) quantiles of the resampled values.

    from finesieve.evals.bootstrap import bootstrap_cis, paired_bootstrap_diff
    from finesieve.evals.metrics import roc_auc
    cis = bootstrap_cis(y_true, scores, threshold=0.5)        # {"roc_auc": (lo, hi), ...}
    cmp = paired_bootstrap_diff(roc_auc, y_true, scores_new, scores_old)  # diff, ci, p_value

`mean_cis` gives intervals of per-item means (per query for ranking, per example for generation), resampling
the items.

`bootstrap_cis` computes all its metrics at once from resample weights (how many times each message
was drawn) instead of copying arrays per resample: 1,000 resamples of 2,000 items take well under a second.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from finesieve.evals.metrics import as_binary_inputs

Metric = Callable[[np.ndarray, np.ndarray], float]

BATCHED_METRICS = ("roc_auc", "pr_auc", "precision", "recall", "f1")


def _check_options(n_boot: int, alpha: float) -> None:
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}. Fix: e.g. n_boot=1000.")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}. Fix: alpha=0.05 gives a 95% interval.")


def resample_indices(y_true, n_boot: int, seed: int = 0, stratified: bool = True) -> Iterator[np.ndarray]:
    """Yield `n_boot` index arrays, each (n,), drawn with replacement.

    Stratified: positives are drawn from positives and negatives from negatives, so every resample has
    exactly the original number of each.
    """
    y = np.asarray(y_true).astype(bool)
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(y), np.flatnonzero(~y)] if stratified else [np.arange(len(y))]
    groups = [g for g in groups if len(g)]
    for _ in range(n_boot):
        yield np.concatenate([g[rng.integers(0, len(g), size=len(g))] for g in groups])


def _percentile_ci(values, alpha: float, what: str) -> tuple[float, float]:
    """Percentile interval of the finite values; ValueError when none is left."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        raise ValueError(
            f"{what} was undefined on every resample. Fix: check y_true holds both classes "
            "(or use stratified=True when positives are rare)."
        )
    lo, hi = np.quantile(v, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def bootstrap_ci(
    metric: Metric, y_true, scores, *, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0, stratified: bool = True
) -> tuple[float, float]:
    """Percentile CI of any `metric(y_true, scores) -> float`; resamples where it raises ValueError are skipped."""
    _check_options(n_boot, alpha)
    y, s = as_binary_inputs(y_true, scores)
    values = []
    for idx in resample_indices(y, n_boot, seed, stratified):
        try:
            values.append(metric(y[idx], s[idx]))
        except ValueError:
            continue
    return _percentile_ci(values, alpha, getattr(metric, "__name__", "the metric"))


# ----------------------------------------------------------------------------- batched metrics


def _weight_blocks(y: np.ndarray, n_boot: int, seed: int, stratified: bool) -> Iterator[np.ndarray]:
    """Yield (b, n) float blocks of resample weights: w[r, i] = times message i was drawn in resample r.

    Blocks hold about 2M cells (16 MB) whatever n is; rows follow `resample_indices` order.
    """
    n = len(y)
    rows = max(1, 2_000_000 // max(n, 1))
    indices = resample_indices(y, n_boot, seed, stratified)
    for start in range(0, n_boot, rows):
        block = np.stack([next(indices) for _ in range(min(rows, n_boot - start))])  # (b, n)
        flat = block + n * np.arange(len(block))[:, None]  # offset each row into its own slice
        yield np.bincount(flat.ravel(), minlength=len(block) * n).reshape(len(block), n).astype(float)


def _ranking_metrics(w: np.ndarray, y: np.ndarray, group_starts: np.ndarray, order: np.ndarray):
    """ROC AUC and average precision per resample, (b,) each, NaN where a class is missing.

    w: (b, n) weights. Items are visited by descending score (`order`), tied scores pooled into one group
    starting at `group_starts`: this is `counts_by_threshold` with weighted counts.
    """
    w_sorted, y_sorted = w[:, order], y[order]
    pos = np.add.reduceat(w_sorted * y_sorted, group_starts, axis=1)  # (b, d) positives per distinct score
    neg = np.add.reduceat(w_sorted * ~y_sorted, group_starts, axis=1)  # (b, d)
    tp, fp = np.cumsum(pos, axis=1), np.cumsum(neg, axis=1)  # (b, d) counts at score >= threshold
    n_pos, n_neg = tp[:, -1], fp[:, -1]
    with np.errstate(divide="ignore", invalid="ignore"):
        # Each negative beats the positives ranked above its group, and ties with half of those in it.
        auc = np.sum(neg * (tp - pos / 2), axis=1) / (n_pos * n_neg)
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        ap = np.sum(pos * precision, axis=1) / n_pos
    undefined = (n_pos == 0) | (n_neg == 0)
    return np.where(undefined, np.nan, auc), np.where(undefined, np.nan, ap)


def _threshold_metrics(w: np.ndarray, y: np.ndarray, pred: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 per resample, (b,) each; 0.0 where undefined like `metrics.precision_recall_f1`."""
    tp = w @ (y & pred).astype(float)
    fp = w @ (~y & pred).astype(float)
    fn = w @ (y & ~pred).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "precision": np.where(tp + fp > 0, tp / (tp + fp), 0.0),
            "recall": np.where(tp + fn > 0, tp / (tp + fn), 0.0),
            "f1": np.where(tp > 0, 2 * tp / (2 * tp + fp + fn), 0.0),
        }


def bootstrap_cis(
    y_true,
    scores,
    threshold: float,
    *,
    metrics: tuple[str, ...] = BATCHED_METRICS,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    stratified: bool = True,
) -> dict[str, tuple[float, float] | None]:
    """Percentile CIs of several metrics over the same resamples; precision/recall/F1 at `threshold`.

    An AUC undefined on every resample (y_true has one class) gets None, as in `binary_summary`.
    """
    unknown = sorted(set(metrics) - set(BATCHED_METRICS))
    if unknown:
        raise ValueError(
            f"unknown metric(s) {unknown}. Fix: choose from {list(BATCHED_METRICS)}, "
            "or use bootstrap_ci(metric, ...) for any other metric function."
        )
    _check_options(n_boot, alpha)
    y, s = as_binary_inputs(y_true, scores)
    order = np.argsort(-s, kind="mergesort")
    group_starts = np.r_[0, np.flatnonzero(np.diff(s[order])) + 1]  # (d,) first item of each distinct score
    pred = s >= threshold

    values: dict[str, list[np.ndarray]] = {m: [] for m in metrics}
    for w in _weight_blocks(y, n_boot, seed, stratified):
        block = _threshold_metrics(w, y, pred)
        if {"roc_auc", "pr_auc"} & set(metrics):
            block["roc_auc"], block["pr_auc"] = _ranking_metrics(w, y, group_starts, order)
        for m in metrics:
            values[m].append(block[m])
    cis: dict[str, tuple[float, float] | None] = {}
    for m in metrics:
        v = np.concatenate(values[m])
        cis[m] = _percentile_ci(v, alpha, m) if np.isfinite(v).any() else None
    return cis


# ----------------------------------------------------------------------------- means over items


def mean_cis(
    values: np.ndarray, *, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0
) -> list[tuple[float, float] | None]:
    """Percentile CI of the mean of each column of `values` (n_items, n_metrics), resampling items (rows:
    queries, or examples) with replacement; NaN cells (undefined) are left out of each resample's mean.
    A column with no value gets None; one item gives the degenerate interval (v, v); `n_boot=0` skips the
    intervals (None for every column). The bootstrap of per-query ranking metrics (`evals.ranking`) and of
    per-example generation metrics (`evals.generation`)."""
    values = np.asarray(values, dtype=float)
    if values.ndim != 2:
        raise ValueError(f"values must be (n_items, n_metrics), got shape {values.shape}")
    if n_boot == 0:
        return [None] * values.shape[1]
    if n_boot < 1 or not 0.0 < alpha < 1.0:
        raise ValueError(
            f"n_boot={n_boot}, alpha={alpha}: expected n_boot >= 1 and alpha in (0, 1), e.g. 1000 and 0.05"
        )
    n, n_metrics = values.shape
    if n == 0:
        return [None] * n_metrics
    draws = np.stack(list(resample_indices(np.zeros(n), n_boot, seed, stratified=False)))  # (n_boot, n)
    sampled = values[draws]  # (n_boot, n, n_metrics)
    defined = np.isfinite(sampled)
    with np.errstate(invalid="ignore"):
        means = np.where(defined, sampled, 0.0).sum(axis=1) / defined.sum(axis=1)  # (n_boot, n_metrics)
    out: list[tuple[float, float] | None] = []
    for j in range(n_metrics):
        v = means[:, j][np.isfinite(means[:, j])]
        out.append(None if len(v) == 0 else tuple(float(q) for q in np.quantile(v, [alpha / 2, 1 - alpha / 2])))
    return out


# ----------------------------------------------------------------------------- comparing two scorers


def paired_bootstrap_diff(
    metric: Metric,
    y_true,
    scores_a,
    scores_b,
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    stratified: bool = True,
) -> dict:
    """Compare two scorers on the same messages: metric(a) - metric(b), its CI and a two-sided p-value.

    Both scorers are evaluated on the same resamples, so the noise from which messages were drawn cancels.
    p_value = 2 * (fraction of resamples whose difference has the opposite sign to, or is zero against, the
    full-data difference), capped at 1; 1.0 when the full-data difference is 0.
    Returns {"diff", "ci": (lo, hi), "p_value", "n_used"} (n_used: resamples where both were defined).
    """
    _check_options(n_boot, alpha)
    y, a = as_binary_inputs(y_true, scores_a)
    _, b = as_binary_inputs(y_true, scores_b)
    diff = float(metric(y, a) - metric(y, b))
    diffs = []
    for idx in resample_indices(y, n_boot, seed, stratified):
        try:
            diffs.append(metric(y[idx], a[idx]) - metric(y[idx], b[idx]))
        except ValueError:
            continue
    ci = _percentile_ci(diffs, alpha, f"the difference in {getattr(metric, '__name__', 'the metric')}")
    d = np.asarray(diffs, dtype=float)
    d = d[np.isfinite(d)]
    flipped = np.mean(d <= 0) if diff > 0 else np.mean(d >= 0) if diff < 0 else 1.0
    return {"diff": diff, "ci": ci, "p_value": float(min(1.0, 2 * flipped)), "n_used": len(d)}
