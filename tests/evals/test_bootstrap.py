"""Bootstrap CIs: sensible on real data, narrowing with n, covering the true value at the stated rate,
reproducible, stratified, vectorised, and consistent between the generic per-resample path and the batched one;
paired differences behave as a test should."""

from __future__ import annotations

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


def test_ci_covers_the_true_auc_at_about_the_stated_rate():
    """200 simulated data sets with a known ROC AUC (positives N(1, 1), negatives N(0, 1): AUC = Phi(1/sqrt 2)).
    The 95% interval must contain it in about 95% of them (measured 93.5%), and its width must match the spread
    of the AUC across the data sets (measured ratio 1.00): too narrow, too wide or off-centre all fail."""
    from scipy.stats import norm

    true_auc = norm.cdf(1 / np.sqrt(2))
    y = np.arange(200) < 40  # 20% positives
    hits, widths, points = 0, [], []
    for seed in range(200):
        s = np.random.default_rng(seed).normal(size=200) + y
        lo, hi = bootstrap_cis(y, s, 0.5, n_boot=200, seed=seed, metrics=("roc_auc",))["roc_auc"]
        hits += lo <= true_auc <= hi
        widths.append(hi - lo)
        points.append(M.roc_auc(y, s))
    assert 0.88 <= hits / 200 <= 0.99, hits / 200
    # A 95% interval spans about 2 x 1.96 standard deviations of the estimate.
    assert 0.85 < np.mean(widths) / (2 * 1.96 * np.std(points)) < 1.15


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
    # One positive in 40, ranked in the middle: (39/40)^40 = 36% of plain resamples miss it, so the AUC is
    # undefined there. The interval is the percentile interval of the defined resamples only: counting the
    # skipped ones as 0 or 0.5 (or failing on them) would move it.
    y = np.zeros(40, dtype=bool)
    y[20] = True
    s = np.linspace(0, 1, 40)
    lo, hi = bootstrap_ci(M.roc_auc, y, s, n_boot=400, stratified=False, seed=3)
    defined = [M.roc_auc(y[idx], s[idx]) for idx in resample_indices(y, 400, seed=3, stratified=False) if y[idx].any()]
    assert 400 * 0.64 - 3 * 9.6 < len(defined) < 400 * 0.64 + 3 * 9.6  # binomial(400, 0.64): mean 256, sd 9.6
    assert (lo, hi) == pytest.approx(tuple(np.quantile(defined, [0.025, 0.975])), abs=1e-12)
    point = M.roc_auc(y, s)
    assert point == pytest.approx(20 / 39) and lo < point < hi


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


def test_batched_cis_score_all_resamples_in_one_vectorised_pass(monkeypatch):
    """What makes `bootstrap_cis` fast, checked without a clock: it never calls the per-resample metric
    functions, and 1,000 resamples of 2,000 items go through the ranking code as one (1000, 2000) weight block
    (blocks hold at most ~2M cells, whatever n is)."""
    import finesieve.evals.bootstrap as B

    y, s = synthetic(2000)
    expected = bootstrap_cis(y, s, 0.5, n_boot=1000)

    def per_resample(*args, **kwargs):
        raise AssertionError("bootstrap_cis called a per-resample metric function")

    blocks = []
    ranking = B._ranking_metrics

    def spy(w, *args):
        blocks.append(w.shape)
        return ranking(w, *args)

    for name in ("roc_auc", "pr_auc", "precision_recall_f1"):
        monkeypatch.setattr(M, name, per_resample)
    monkeypatch.setattr(B, "_ranking_metrics", spy)
    assert bootstrap_cis(y, s, 0.5, n_boot=1000) == expected
    assert blocks == [(1000, 2000)]
    blocks.clear()
    bootstrap_cis(*synthetic(30_000), 0.5, n_boot=200, metrics=("roc_auc",))
    assert blocks == [(66, 30_000)] * 3 + [(2, 30_000)]  # 2M // 30k = 66 rows a block: 16 MB, not 48 MB at once


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
