"""Post-hoc calibration: turn a trained scorer's raw scores into probabilities that mean what they say.

A classifier can rank messages well and still give the wrong probabilities: class weights skew them towards
the rare classes, training to a low loss makes them over-confident, and a zero-shot prompt's label-word
probabilities have no reason to be calibrated at all. Thresholds set from costs, and policies compared across
categories, need calibrated numbers. So each scorer fits a small monotone map on held-out (validation) data.

Logits of a trained network (the fine-tuned model, the char-CNN pre-filter) go through `Calibrator`:

    cal = Calibrator("temperature_bias", multilabel=False).fit(val_logits, val_targets)
    proba = cal.transform(test_logits)                              # (n, k)
    again = Calibrator.from_state_dict(cal.state_dict())            # the state dict is JSON-safe

  "temperature"       logits / T: one T for single-label softmax logits (Guo et al. 2017), one per category
                      for multi-label sigmoid logits.
  "temperature_bias"  logits / T + b: single-label, one T and one bias per class (the bias undoes the prior
                      shift of class weights); multi-label, per-category Platt scaling (T_j and b_j).
  "isotonic"          temperature scaling, then a monotone step map per class fitted on the scaled
                      probabilities (renormalised for single-label); more flexible, needs more data.
  "none"              softmax / sigmoid of the raw logits.

  T and b are fitted by LBFGS on the validation NLL with safeguards: a small L2 pull towards the identity
  (T = 1, b = 0) keeps them finite on a separable or small validation set; multi-label categories with one
  outcome only in validation stay at the identity; T is kept within [0.05, 20]; and when the fit does not
  lower the validation NLL the identity is kept. `report_` holds the validation NLL before and after.

Scores of a zero-shot scorer (label-token log-probabilities, cosine similarities) go through the pure
functions `fit_softmax_scaling` / `apply_softmax_scaling` (softmax of scores / T + b) and `fit_platt` (one
sigmoid(a * score + b) per class). Every one of these is fitted by the one temperature fitter, `fit_scaling`
(LBFGS on the NLL): no scorer fits a temperature its own way.

Ranking: every map is monotone per class, so a binary task's ROC AUC is unchanged. Temperature, bias and
Platt with a > 0 are strictly increasing in the margin (a binary softmax is a sigmoid of z_1 - z_0); isotonic
is non-decreasing and may tie scores that were apart. (`fit_platt` does not force a > 0: a score that ranks
backwards gets a negative slope and its ranking flipped. With three or more single-label classes, T and b
keep each row's order of classes up to the bias, but not necessarily one class's order across messages.)
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy.special import expit, log_softmax, softmax

from finesieve.data.errors import DataError
from finesieve.models.base import NotFittedError

Method = Literal["temperature", "temperature_bias", "isotonic", "none"]
METHODS = ("temperature", "temperature_bias", "isotonic", "none")
TEMPERATURE_RANGE = (0.05, 20.0)  # a degenerate validation set must not flatten or saturate every score
L2_TO_IDENTITY = 1e-4  # weight of the pull of log T and b towards 0 (the identity)
PROBA_EPS = 1e-12


class Calibrator:
    """Fit on validation logits, then map logits to calibrated probabilities (see the module docstring).

    Learned attributes: temperature_ ((1,) single-label, (k,) multi-label), bias_ ((k,); zero unless
    'temperature_bias'), isotonic_ (one IsotonicRegression per class, 'isotonic' only), report_ (method,
    val_nll_before, val_nll_after, n_val, identity_fallback; None when loaded from an older state dict).
    """

    def __init__(self, method: Method = "temperature", multilabel: bool = False):
        self.method = method
        self.multilabel = multilabel

    def fit(self, logits: np.ndarray, targets: np.ndarray) -> Calibrator:
        """`logits` (n, k); `targets` (n,) class indices, or (n, k) 0/1 for multi-label."""
        _check_method(self.method)
        z = np.asarray(logits, dtype=np.float64)
        y = self._check_targets(z, targets)
        n, k = z.shape
        if n == 0 and self.method != "none":
            raise DataError(
                f"Calibrator({self.method!r}) got no validation logits to fit on: pass some, or use method='none'"
            )
        self.temperature_ = np.ones(k if self.multilabel else 1)
        self.bias_ = np.zeros(k)
        # NLL is measured on the multi-label categories with both outcomes in validation (none else is defined).
        cols = np.arange(k)
        if self.multilabel:
            pos = y.sum(axis=0)
            cols = np.flatnonzero((pos > 0) & (pos < n))
        before = _nll(z, y, self.multilabel, cols) if n and len(cols) else None
        after, fell_back = before, False
        if self.method != "none" and before is not None:
            t, b = fit_scaling(z, y, self.multilabel, fit_bias=self.method == "temperature_bias", cols=cols)
            fitted = _nll(z / t + b, y, self.multilabel, cols)
            if np.isfinite(fitted) and fitted <= before:
                self.temperature_, self.bias_, after = t, b, fitted
            else:
                fell_back = True
        if self.method == "isotonic":
            from sklearn.isotonic import IsotonicRegression

            proba = self._scaled(z)
            y_ind = y if self.multilabel else np.eye(k)[y]
            self.isotonic_ = [
                IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(proba[:, j], y_ind[:, j])
                for j in range(k)
            ]
            if before is not None:
                after = _nll(_logits_of(self.transform(z), self.multilabel), y, self.multilabel, cols)
        self.report_ = {
            "method": self.method,
            "val_nll_before": before,
            "val_nll_after": after,
            "n_val": n,
            "identity_fallback": fell_back,
        }
        return self

    def _check_targets(self, z: np.ndarray, targets: np.ndarray) -> np.ndarray:
        y = np.asarray(targets)
        expected = "(n, k) 0/1 indicators" if self.multilabel else "(n,) class indices"
        if z.ndim != 2 or len(y) != len(z) or y.shape[1:] != ((z.shape[1],) if self.multilabel else ()):
            raise ValueError(
                f"Calibrator(multilabel={self.multilabel}) expects logits (n, k) and targets {expected}; "
                f"got logits {z.shape} and targets {y.shape}"
            )
        return y.astype(np.float64) if self.multilabel else y.astype(np.int64)

    def _scaled(self, z: np.ndarray) -> np.ndarray:
        z = z / self.temperature_ + self.bias_
        return expit(z) if self.multilabel else softmax(z, axis=1)

    def transform(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (n, k): rows sum to 1 (single-label) or one sigmoid per category."""
        if not hasattr(self, "temperature_"):
            raise NotFittedError(
                "This Calibrator is not fitted yet: call Calibrator.fit(val_logits, val_targets) "
                "or Calibrator.from_state_dict(state) first."
            )
        proba = self._scaled(np.asarray(logits, dtype=np.float64))
        if self.method != "isotonic" or not len(proba):  # IsotonicRegression.predict refuses 0 rows
            return proba
        out = np.column_stack([iso.predict(proba[:, j]) for j, iso in enumerate(self.isotonic_)])
        if not self.multilabel:
            total = out.sum(axis=1, keepdims=True)
            out = np.where(total > 0, out / np.where(total > 0, total, 1.0), 1.0 / out.shape[1])
        return out

    def state_dict(self) -> dict:
        if not hasattr(self, "temperature_"):
            raise NotFittedError(
                "This Calibrator is not fitted yet: call Calibrator.fit(val_logits, val_targets) first."
            )
        state = {
            "method": self.method,
            "multilabel": self.multilabel,
            "temperature": self.temperature_.tolist(),
            "bias": self.bias_.tolist(),
            "report": self.report_,
        }
        if self.method == "isotonic":
            state["isotonic"] = [
                {"x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist()} for iso in self.isotonic_
            ]
        return state

    @classmethod
    def from_state_dict(cls, state: dict) -> Calibrator:
        _check_method(state["method"])
        cal = cls(state["method"], state["multilabel"])
        cal.temperature_ = np.asarray(state["temperature"], dtype=np.float64)
        # State dicts written before 'temperature_bias' existed hold no bias: a zero broadcasts over the k columns.
        cal.bias_ = np.asarray(state.get("bias", [0.0]), dtype=np.float64)
        cal.report_ = state.get("report")
        if state["method"] == "isotonic":
            from sklearn.isotonic import IsotonicRegression

            # Refitting on the stored breakpoints (already monotone) reproduces the same piecewise-linear map.
            cal.isotonic_ = [
                IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p["x"], p["y"])
                for p in state["isotonic"]
            ]
        return cal


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"calibration method must be one of {list(METHODS)}, got {method!r}")


def _nll(z: np.ndarray, y: np.ndarray, multilabel: bool, cols: np.ndarray) -> float:
    """Mean NLL of logits z (n, k): cross-entropy on class indices y (n,), or the mean over the categories `cols`
    of the BCE on indicators y (n, k). `_nll_torch` is the same on tensors, for the fit."""
    if multilabel:
        return float((np.logaddexp(0.0, z) - y * z).mean(axis=0)[cols].mean())
    return float(-log_softmax(z, axis=1)[np.arange(len(y)), y].mean())


def _nll_torch(z, y, multilabel: bool, cols):
    import torch.nn.functional as F

    if multilabel:
        return F.binary_cross_entropy_with_logits(z, y, reduction="none").mean(dim=0)[cols].mean()
    return F.cross_entropy(z, y)


def _logits_of(proba: np.ndarray, multilabel: bool) -> np.ndarray:
    """Logits whose softmax / sigmoid gives `proba` (clipped away from 0 and 1), to measure its NLL with `_nll`."""
    p = np.clip(proba, PROBA_EPS, 1 - PROBA_EPS)
    return np.log(p) - np.log1p(-p) if multilabel else np.log(p)


def fit_scaling(
    z: np.ndarray,
    y: np.ndarray,
    multilabel: bool,
    *,
    fit_bias: bool,
    cols: np.ndarray | None = None,
    l2_log_t: float = L2_TO_IDENTITY,
    l2_bias: float = L2_TO_IDENTITY,
    l2_slope: float = 0.0,
    temperature_range: tuple[float, float] = TEMPERATURE_RANGE,
) -> tuple[np.ndarray, np.ndarray]:
    """(T, b) minimising the NLL of z / T + b by LBFGS: T (1,) single-label or (k,) multi-label, b (k,).

    The one temperature fitter of finesieve: `Calibrator` (trained networks' logits) and the score scalers below
    (zero-shot scorers) all call it. z (n, k) logits or scores; y (n,) class indices, or (n, k) 0/1 for
    multi-label. The L2 pulls on log T and b (towards the identity T = 1, b = 0) keep them finite when a small
    validation set is separable or lacks a class (the NLL then keeps falling as T -> 0 or b -> -inf); `l2_slope`
    instead pulls the slope 1 / T towards 0 (Platt scaling's usual ridge). T is clipped to `temperature_range`. Multi-label categories outside `cols` (one outcome only) stay at T = 1, b = 0.
    """
    import torch

    z = np.asarray(z, dtype=np.float64)
    k = z.shape[1]
    cols = np.arange(k) if cols is None else cols
    zt = torch.as_tensor(z, dtype=torch.float64)
    yt = torch.as_tensor(np.asarray(y), dtype=torch.float64 if multilabel else torch.int64)
    ct = torch.as_tensor(cols, dtype=torch.int64)
    log_t = torch.zeros(k if multilabel else 1, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(k, dtype=torch.float64, requires_grad=fit_bias)
    opt = torch.optim.LBFGS([log_t, bias] if fit_bias else [log_t], lr=1.0, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = (
            _nll_torch(zt / log_t.exp() + bias, yt, multilabel, ct)
            + l2_bias * (bias**2).sum()
            + l2_log_t * (log_t**2).sum()
            + l2_slope * (torch.exp(-2 * log_t)).sum()
        )
        loss.backward()
        return loss

    opt.step(closure)
    t = np.clip(log_t.detach().exp().numpy(), *temperature_range)
    b = bias.detach().numpy().copy()
    if multilabel:
        idle = np.ones(k, dtype=bool)
        idle[cols] = False
        t[idle], b[idle] = 1.0, 0.0
    return t, b


# ----------------------------------------------------------------------------------------------- score scaling


def apply_softmax_scaling(scores: np.ndarray, temperature: float, bias: np.ndarray | None = None) -> np.ndarray:
    """softmax(scores / temperature + bias) per row; scores (n, k) -> probabilities (n, k)."""
    z = np.asarray(scores, dtype=float) / temperature
    return softmax(z + (0.0 if bias is None else np.asarray(bias, dtype=float)), axis=-1)


def fit_softmax_scaling(
    scores: np.ndarray, y: np.ndarray, fit_bias: bool = True, l2: float = 1e-2
) -> tuple[float, np.ndarray]:
    """Temperature (and per-class bias, summing to 0) minimising the mean negative log-likelihood.

    scores (n, k) floats, y (n,) class indices; fitted by `fit_scaling`. The L2 penalty on the bias keeps a class
    absent from the data from being pushed to minus infinity; T is free within [e^-10, e^10] (cosine similarities
    need T well below `TEMPERATURE_RANGE`'s floor). Returns (temperature > 0, bias (k,)). Monotone per class: a
    binary task's ROC AUC does not change.
    """
    scores = np.asarray(scores, dtype=float)
    t, bias = fit_scaling(
        scores,
        np.asarray(y, dtype=int),
        False,
        fit_bias=fit_bias,
        l2_log_t=0.0,
        l2_bias=l2,
        temperature_range=(float(np.exp(-10.0)), float(np.exp(10.0))),
    )
    return float(t[0]), bias - bias.mean()  # softmax ignores a shared shift: report the centred bias


def fit_platt(score: np.ndarray, y: np.ndarray, l2: float = 1e-3) -> tuple[float, float]:
    """Slope and intercept of sigmoid(a * score + b) fitted by log loss; score (n,), y (n,) bool.

    `fit_scaling` on one sigmoid logit (a = 1 / T), once on the score and once on its negation: a score that
    ranks backwards gets the negative slope, whichever fits the log loss better.
    """
    z = np.asarray(score, dtype=float)[:, None]
    target = np.asarray(y, dtype=float)[:, None]
    best = None
    for sign in (1.0, -1.0):
        t, b = fit_scaling(
            sign * z,
            target,
            True,
            fit_bias=True,
            l2_log_t=0.0,
            l2_bias=0.0,
            l2_slope=l2,
            temperature_range=(float(np.exp(-10.0)), float(np.exp(10.0))),
        )
        a, c = sign / float(t[0]), float(b[0])
        logit = a * z[:, 0] + c
        loss = float(np.mean(np.logaddexp(0.0, logit) - target[:, 0] * logit)) + l2 * a**2
        if best is None or loss < best[0]:
            best = (loss, a, c)
    return best[1], best[2]


def fit_platt_per_class(scores: np.ndarray, y: np.ndarray) -> dict:
    """One `fit_platt` per class: scores (n, k), y (n, k) 0/1 -> {"kind": "platt", "a": [k], "b": [k]} (JSON-safe)."""
    params = [fit_platt(scores[:, j], y[:, j]) for j in range(scores.shape[1])]
    return {"kind": "platt", "a": [a for a, _ in params], "b": [b for _, b in params]}


def apply_platt_per_class(scores: np.ndarray, calibration: dict) -> np.ndarray:
    """sigmoid(a_j * score_j + b_j) per class; scores (n, k) -> probabilities (n, k)."""
    a, b = np.asarray(calibration["a"], dtype=float), np.asarray(calibration["b"], dtype=float)
    return expit(np.asarray(scores, dtype=float) * a + b)
