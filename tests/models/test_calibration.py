"""Post-hoc calibration: every method lowers the NLL of mis-calibrated logits on fresh data, temperature and
bias keep the ranking, multi-label is calibrated per category, the identity fallback, and state-dict round
trips (including state dicts written before 'temperature_bias' existed)."""

import json

import numpy as np
import pytest
from scipy.special import expit, softmax

from finesieve.evals.metrics import roc_auc
from finesieve.models.base import NotFittedError
from finesieve.models.calibration import METHODS, Calibrator, apply_softmax_scaling, fit_platt, fit_softmax_scaling

FITTED = ["temperature", "temperature_bias", "isotonic"]


def binary_logits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits (n, 2) that are over-confident (x4) and shifted towards class 1 (+3), and labels (n,).

    The margin m | y ~ N(+-1, 1.5^2) has true log-odds 0.89 m, so T ~ 4.5 and a bias of ~ -0.67 undo it.
    """
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=n)
    margin = (2 * y - 1) + rng.normal(0, 1.5, n)
    return np.column_stack([np.zeros(n), 4 * margin + 3]), y


def multilabel_logits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits (n, 3), targets (n, 3): category 0 over-confident (and without the prior), 1 under-confident,
    2 calibrated."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 3)) < 0.3).astype(float)
    margin = (2 * y - 1) + rng.normal(0, 1.5, (n, 3))
    true = 0.889 * margin + np.log(0.3 / 0.7)  # the calibrated log-odds
    return np.column_stack([4 * margin[:, 0], 0.3 * true[:, 1], true[:, 2]]), y


def nll(proba: np.ndarray, y: np.ndarray) -> float:
    """Mean NLL of single-label probabilities (n, k) for class indices y (n,)."""
    return float(-np.mean(np.log(np.clip(proba[np.arange(len(y)), y], 1e-12, None))))


def bce(p: np.ndarray, y: np.ndarray) -> float:
    """Mean binary NLL of probabilities p (n,) for 0/1 targets y (n,)."""
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


@pytest.mark.parametrize("method", FITTED)
def test_each_method_lowers_nll_on_fresh_data(method):
    val_z, val_y = binary_logits(2000, seed=0)
    test_z, test_y = binary_logits(2000, seed=1)
    cal = Calibrator(method).fit(val_z, val_y)
    raw = Calibrator("none").fit(val_z, val_y)
    assert nll(cal.transform(test_z), test_y) < 0.8 * nll(raw.transform(test_z), test_y)
    report = cal.report_
    assert report["method"] == method and report["n_val"] == 2000 and not report["identity_fallback"]
    assert report["val_nll_after"] < report["val_nll_before"] == pytest.approx(nll(raw.transform(val_z), val_y))
    assert raw.report_["val_nll_after"] == raw.report_["val_nll_before"]
    np.testing.assert_allclose(cal.transform(test_z).sum(axis=1), 1.0)


def test_temperature_bias_undoes_a_shift_that_temperature_alone_cannot():
    val_z, val_y = binary_logits(4000, seed=0)
    test_z, test_y = binary_logits(4000, seed=1)
    t_only = Calibrator("temperature").fit(val_z, val_y)
    t_bias = Calibrator("temperature_bias").fit(val_z, val_y)
    assert t_only.temperature_.shape == t_bias.temperature_.shape == (1,)
    assert t_bias.temperature_[0] == pytest.approx(4.5, rel=0.15)
    assert t_bias.bias_[1] - t_bias.bias_[0] == pytest.approx(-3 / 4.5, abs=0.15)  # the shift, in calibrated units
    np.testing.assert_array_equal(t_only.bias_, [0.0, 0.0])
    assert nll(t_bias.transform(test_z), test_y) < nll(t_only.transform(test_z), test_y)


@pytest.mark.parametrize("method", ["temperature", "temperature_bias"])
def test_temperature_and_bias_leave_a_binary_ranking_unchanged(method):
    val_z, val_y = binary_logits(2000, seed=0)
    test_z, test_y = binary_logits(2000, seed=1)
    proba = Calibrator(method).fit(val_z, val_y).transform(test_z)[:, 1]
    margin = test_z[:, 1] - test_z[:, 0]
    assert roc_auc(test_y, proba) == pytest.approx(roc_auc(test_y, margin))
    assert np.all(np.diff(proba[np.argsort(margin)]) >= 0)  # monotone in the raw margin


def test_temperature_bias_fits_a_shifted_class_among_three():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=3000)
    z = 3 * np.eye(3)[y] + rng.normal(0, 1.0, (3000, 3)) + np.array([0.0, 0.0, 2.5])  # class 2 pushed up
    cal = Calibrator("temperature_bias").fit(z[:1500], y[:1500])
    b = cal.bias_ - cal.bias_.mean()
    assert b[2] < b[0] - 1.5 and b[2] < b[1] - 1.5
    assert nll(cal.transform(z[1500:]), y[1500:]) < nll(
        Calibrator("temperature").fit(z[:1500], y[:1500]).transform(z[1500:]), y[1500:]
    )


@pytest.mark.parametrize("method", FITTED)
def test_multilabel_is_calibrated_per_category(method):
    val_z, val_y = multilabel_logits(3000, seed=0)
    test_z, test_y = multilabel_logits(3000, seed=1)
    cal = Calibrator(method, multilabel=True).fit(val_z, val_y)
    raw = expit(test_z)
    proba = cal.transform(test_z)
    assert proba.shape == (3000, 3) and not np.allclose(proba.sum(axis=1), 1.0)  # independent sigmoids
    assert cal.temperature_.shape == (3,)
    assert cal.temperature_[0] > 2 and cal.temperature_[1] < 0.6  # sharpened and softened, each on its own
    for j in (0, 1):  # the mis-calibrated categories improve
        assert bce(proba[:, j], test_y[:, j]) < 0.95 * bce(raw[:, j], test_y[:, j])
    assert bce(proba[:, 2], test_y[:, 2]) < bce(raw[:, 2], test_y[:, 2]) + 0.02  # the calibrated one stays near
    if method != "isotonic":
        for j in range(3):  # a monotone map per category: each category's ranking is unchanged
            assert roc_auc(test_y[:, j], proba[:, j]) == pytest.approx(roc_auc(test_y[:, j], test_z[:, j]))


@pytest.mark.parametrize("method", ["temperature", "temperature_bias"])
def test_multilabel_category_with_one_outcome_stays_at_identity(method):
    z, y = multilabel_logits(1000, seed=0)
    z = np.column_stack([z, np.random.default_rng(1).normal(-3, 1, 1000)])
    y = np.column_stack([y, np.zeros(1000)])  # category 3 never happens in validation
    cal = Calibrator(method, multilabel=True).fit(z, y)
    assert cal.temperature_[3] == 1.0 and cal.bias_[3] == 0.0
    np.testing.assert_allclose(cal.transform(z)[:, 3], expit(z[:, 3]))
    assert cal.temperature_[0] != 1.0


def test_multilabel_with_no_category_defined_is_the_identity():
    z = np.random.default_rng(0).normal(size=(50, 2))
    cal = Calibrator("temperature_bias", multilabel=True).fit(z, np.zeros((50, 2)))
    assert cal.report_["val_nll_before"] is None and not cal.report_["identity_fallback"]
    np.testing.assert_allclose(cal.transform(z), expit(z))


def test_falls_back_to_identity_when_the_fit_does_not_lower_nll():
    # A tiny validation set that the logits separate at a tiny scale, around a threshold away from 0: the fit
    # wants T -> 0 with a bias moving the threshold, T is kept >= 0.05, and with that T the bias only hurts.
    y = np.array([0, 1] * 10)
    z = np.column_stack([np.zeros(20), np.where(y == 1, 0.003, 0.001)])
    raw = softmax(z, axis=1)
    cal = Calibrator("temperature_bias").fit(z, y)
    assert cal.report_["identity_fallback"]
    assert cal.report_["val_nll_after"] == cal.report_["val_nll_before"] == pytest.approx(nll(raw, y))
    np.testing.assert_array_equal(cal.temperature_, [1.0])
    np.testing.assert_array_equal(cal.bias_, [0.0, 0.0])
    np.testing.assert_allclose(cal.transform(z), raw)
    # Temperature alone at its bound still beats T = 1 here: kept, no fallback.
    t_only = Calibrator("temperature").fit(z, y)
    assert t_only.temperature_[0] == 0.05 and not t_only.report_["identity_fallback"]


@pytest.mark.parametrize("multilabel", [False, True])
@pytest.mark.parametrize("method", METHODS)
def test_state_dict_round_trips_through_json(method, multilabel):
    z, y = multilabel_logits(500, seed=0) if multilabel else binary_logits(500, seed=0)
    cal = Calibrator(method, multilabel).fit(z, y)
    again = Calibrator.from_state_dict(json.loads(json.dumps(cal.state_dict())))
    assert (again.method, again.multilabel, again.report_) == (method, multilabel, cal.report_)
    probe_z, _ = multilabel_logits(200, seed=1) if multilabel else binary_logits(200, seed=1)
    np.testing.assert_allclose(again.transform(probe_z), cal.transform(probe_z), rtol=0, atol=1e-12)


@pytest.mark.parametrize("multilabel", [False, True])
@pytest.mark.parametrize("method", METHODS)
def test_no_logits_give_no_rows(method, multilabel):
    # A scorer asked to score [] passes (0, k) logits; isotonic once failed there (sklearn refuses 0 samples).
    z, y = multilabel_logits(300, seed=0) if multilabel else binary_logits(300, seed=0)
    out = Calibrator(method, multilabel).fit(z, y).transform(np.zeros((0, z.shape[1])))
    assert out.shape == (0, z.shape[1]) and out.dtype == np.float64


def test_state_dicts_without_bias_still_load():
    # What a fine-tuned run saved before 'temperature_bias' existed: method, multilabel, temperature.
    z, _ = binary_logits(100, seed=0)
    old = Calibrator.from_state_dict({"method": "temperature", "multilabel": False, "temperature": [2.0]})
    np.testing.assert_allclose(old.transform(z), softmax(z / 2.0, axis=1))
    assert old.report_ is None
    old_ml = Calibrator.from_state_dict({"method": "none", "multilabel": True, "temperature": [1.0, 1.0]})
    np.testing.assert_allclose(old_ml.transform(z), expit(z))
    iso = Calibrator("isotonic").fit(*binary_logits(500, seed=0))
    state = iso.state_dict()
    del state["bias"], state["report"]
    np.testing.assert_allclose(Calibrator.from_state_dict(state).transform(z), iso.transform(z), rtol=0, atol=1e-12)


def test_clear_errors():
    z, y = binary_logits(20, seed=0)
    with pytest.raises(NotFittedError, match="Calibrator.fit"):
        Calibrator("temperature").transform(z)
    with pytest.raises(ValueError, match="one of"):
        Calibrator("platt").fit(z, y)
    with pytest.raises(ValueError, match=r"targets \(n, k\) 0/1"):
        Calibrator("temperature", multilabel=True).fit(z, y)
    with pytest.raises(ValueError, match="no validation logits"):
        Calibrator("temperature").fit(np.zeros((0, 2)), np.zeros(0, dtype=int))
    empty = Calibrator("none").fit(np.zeros((0, 2)), np.zeros(0, dtype=int))
    assert empty.report_["val_nll_before"] is None and empty.report_["n_val"] == 0


def test_score_scaling_functions_lower_nll_and_keep_the_ranking():
    z, y = binary_logits(2000, seed=0)
    t, b = fit_softmax_scaling(z, y)
    assert t > 2 and b.sum() == pytest.approx(0.0, abs=1e-9)
    proba = apply_softmax_scaling(z, t, b)
    assert nll(proba, y) < nll(softmax(z, axis=1), y)
    assert roc_auc(y, proba[:, 1]) == pytest.approx(roc_auc(y, z[:, 1]))
    a, c = fit_platt(z[:, 1], y.astype(bool))
    assert 0 < a < 0.5
    assert bce(expit(a * z[:, 1] + c), y) < bce(expit(z[:, 1]), y)
