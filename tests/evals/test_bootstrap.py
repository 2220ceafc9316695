"""Bootstrap CIs: sensible on real data, narrowing with n, reproducible, stratified, fast, and consistent
between the generic per-resample path and the batched one; paired differences behave as a test should."""

from __future__ import annotations

import time

import numpy as np
import pytest

from finesieve.evals import metrics as M
from finesieve.evals.bootstrap import bootstrap_ci, bootstrap_cis, paired_bootstrap_diff, resample_indices


def synthetic(n: int, seed: int = 0, rate: float = 0.1, signal: float = 1.0):
    """(y bool (n,), scores (n,)) with some ties: positives score `signal` higher on average."""
    rng = np.random.default_rng(seed)
    y = rng.random(n) < rate
    return y, np.round(rng.normal(size=n) + signal * y, 2)


@pytest.fixture(scope="module")
def davidson_case(davidson_slice):
    """Hate speech vs a keyword-count score on the real Davidson slice (heavy ties, 15% positives)."""
    y = (davidson_slice["label"] == "hate_speech").to_numpy()
    text = davidson_slice["text"].str.lower()
    scores = text.str.count(r"n[i1]gg|f[a@]g|\bhate\b").to_numpy(dtype=float) + text.str.len().to_numpy() / 1000
    return y, scores


def test_ci_contains_point_estimate_on_real_data(davidson_case):
    y, s = davidson_case
    for metric in (M.roc_auc, M.pr_auc):
        lo, hi = bootstrap_ci(metric, y, s, n_boot=300)
        assert lo < metric(y, s) < hi
        assert hi - lo < 0.2


def test_ci_narrows_as_n_grows():
    widths = []
    for n in (300, 3000, 30000):
        lo, hi = bootstrap_ci(M.roc_auc, *synthetic(n), n_boot=200)
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2]
    assert widths[0] / widths[2] > 5  # ~sqrt(100) = 10 in theory


def test_same_seed_same_ci_other_seed_differs():
    y, s = synthetic(500)
    assert bootstrap_ci(M.pr_auc, y, s, n_boot=100, seed=7) == bootstrap_ci(M.pr_auc, y, s, n_boot=100, seed=7)
    assert bootstrap_ci(M.pr_auc, y, s, n_boot=100, seed=7) != bootstrap_ci(M.pr_auc, y, s, n_boot=100, seed=8)
    assert bootstrap_cis(y, s, 0.5, n_boot=100, seed=3) == bootstrap_cis(y, s, 0.5, n_boot=100, seed=3)


def test_stratified_resamples_keep_class_counts():
    y, _ = synthetic(1000, rate=0.01)
    n_pos = int(y.sum())
    strat = [int(y[idx].sum()) for idx in resample_indices(y, 200, seed=0, stratified=True)]
    plain = [int(y[idx].sum()) for idx in resample_indices(y, 200, seed=0, stratified=False)]
    assert set(strat) == {n_pos}
    assert len(set(plain)) > 1
    assert all(len(idx) == len(y) for idx in resample_indices(y, 5))


def test_unstratified_skips_resamples_without_positives():
    # One positive in 40: about 36% of plain resamples miss it, so the AUC is undefined there and skipped.
    y = np.zeros(40, dtype=bool)
    y[0] = True
    s = np.linspace(0, 1, 40)
    lo, hi = bootstrap_ci(M.roc_auc, y, s, n_boot=200, stratified=False)
    assert 0.0 <= lo <= hi <= 1.0


def test_batched_cis_equal_per_resample_cis():
    y, s = synthetic(400, seed=2)
    t = 0.8
    batched = bootstrap_cis(y, s, t, n_boot=200, seed=5)
    by_name = {
        "roc_auc": M.roc_auc,
        "pr_auc": M.pr_auc,
        "precision": lambda y, s: M.precision_recall_f1(y, s, t)[0],
        "recall": lambda y, s: M.precision_recall_f1(y, s, t)[1],
        "f1": lambda y, s: M.precision_recall_f1(y, s, t)[2],
    }
    for name, metric in by_name.items():
        assert batched[name] == pytest.approx(bootstrap_ci(metric, y, s, n_boot=200, seed=5), abs=1e-12), name
    # Also with plain resampling, where some rows are dropped and the weights differ more.
    plain = bootstrap_cis(y, s, t, n_boot=100, seed=1, stratified=False, metrics=("roc_auc", "f1"))
    assert plain["roc_auc"] == pytest.approx(bootstrap_ci(M.roc_auc, y, s, n_boot=100, seed=1, stratified=False))


def test_batched_cis_are_fast():
    y, s = synthetic(2000)
    start = time.perf_counter()
    bootstrap_cis(y, s, 0.5, n_boot=1000)
    assert time.perf_counter() - start < 2.0


def test_batched_cis_single_class_and_unknown_metric():
    cis = bootstrap_cis(np.zeros(20), np.linspace(0, 1, 20), 0.5, n_boot=50)
    assert cis["roc_auc"] is None and cis["pr_auc"] is None
    assert cis["precision"] == (0.0, 0.0)
    with pytest.raises(ValueError, match="undefined on every resample"):
        bootstrap_ci(M.roc_auc, np.zeros(20), np.linspace(0, 1, 20), n_boot=50)
    with pytest.raises(ValueError, match="unknown metric"):
        bootstrap_cis([0, 1], [0.1, 0.9], 0.5, metrics=("accuracy",))


def test_bad_options():
    with pytest.raises(ValueError, match="alpha"):
        bootstrap_ci(M.roc_auc, [0, 1], [0.1, 0.9], alpha=1.5)
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_cis([0, 1], [0.1, 0.9], 0.5, n_boot=0)


def test_paired_diff_with_itself_is_zero():
    y, s = synthetic(500)
    out = paired_bootstrap_diff(M.roc_auc, y, s, s, n_boot=200)
    assert out["diff"] == 0.0 and out["ci"] == (0.0, 0.0) and out["p_value"] == 1.0


def test_paired_diff_detects_a_better_scorer(davidson_case):
    y, s = davidson_case
    noisy = s + np.random.default_rng(0).normal(scale=2.0, size=len(s))  # same scorer, drowned in noise
    out = paired_bootstrap_diff(M.roc_auc, y, s, noisy, n_boot=300)
    assert out["diff"] == pytest.approx(M.roc_auc(y, s) - M.roc_auc(y, noisy))
    assert out["diff"] > 0 and out["ci"][0] > 0 and out["p_value"] < 0.05
    # Swapping the scorers flips the sign and keeps the p-value.
    back = paired_bootstrap_diff(M.roc_auc, y, noisy, s, n_boot=300)
    assert back["diff"] == pytest.approx(-out["diff"]) and back["p_value"] == out["p_value"]


def test_paired_diff_of_two_similar_scorers_is_not_significant():
    rng = np.random.default_rng(4)
    y, s = synthetic(400, seed=4)
    a = s + rng.normal(scale=0.05, size=len(s))
    b = s + rng.normal(scale=0.05, size=len(s))
    out = paired_bootstrap_diff(M.roc_auc, y, a, b, n_boot=300)
    assert out["ci"][0] < 0 < out["ci"][1] and out["p_value"] > 0.05
