"""Calibrate a trained classifier's logits on the validation split, so that thresholds mean something.

    cal = Calibrator("temperature", multilabel=False).fit(val_logits, val_targets)
    proba = cal.transform(test_logits)

"temperature": one scalar T for single-label softmax logits (Guo et al. 2017), one per class for
multi-label sigmoid logits; it rescales confidence without changing the ranking, so AUCs are untouched.
"isotonic": a monotone map per class fitted on the temperature-scaled validation probabilities (then
renormalised for single-label tasks); more flexible, needs more validation data, and can create ties.
"none": softmax / sigmoid of the raw logits.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from scipy.special import expit, softmax

Method = Literal["temperature", "isotonic", "none"]


class Calibrator:
    def __init__(self, method: Method = "temperature", multilabel: bool = False):
        self.method = method
        self.multilabel = multilabel

    def _raw(self, logits: np.ndarray, temperature) -> np.ndarray:
        scaled = logits / temperature
        return expit(scaled) if self.multilabel else softmax(scaled, axis=1)

    def fit(self, logits: np.ndarray, targets: np.ndarray) -> "Calibrator":
        """`logits` (n, k); `targets` (n,) class indices, or (n, k) 0/1 for multi-label."""
        logits = np.asarray(logits, dtype=np.float64)
        k = logits.shape[1]
        self.temperature_ = np.ones(k if self.multilabel else 1)
        if self.method in ("temperature", "isotonic"):
            self.temperature_ = self._fit_temperature(logits, targets)
        if self.method == "isotonic":
            from sklearn.isotonic import IsotonicRegression

            proba = self._raw(logits, self.temperature_)
            y = np.asarray(targets) if self.multilabel else np.eye(k)[np.asarray(targets)]
            self.isotonic_ = [IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(proba[:, j], y[:, j])
                              for j in range(k)]
        return self

    def _fit_temperature(self, logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
        z = torch.tensor(logits)
        log_t = torch.zeros(z.shape[1] if self.multilabel else 1, dtype=torch.float64, requires_grad=True)
        if self.multilabel:
            y = torch.tensor(np.asarray(targets), dtype=torch.float64)
            nll = lambda: torch.nn.functional.binary_cross_entropy_with_logits(z / log_t.exp(), y)  # noqa: E731
        else:
            y = torch.tensor(np.asarray(targets), dtype=torch.long)
            nll = lambda: torch.nn.functional.cross_entropy(z / log_t.exp(), y)  # noqa: E731
        opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = nll()
            loss.backward()
            return loss

        opt.step(closure)
        # Kept in a sane range: a degenerate validation set must not flatten or saturate every score.
        return np.clip(log_t.detach().exp().numpy(), 0.05, 20.0)

    def transform(self, logits: np.ndarray) -> np.ndarray:
        proba = self._raw(np.asarray(logits, dtype=np.float64), getattr(self, "temperature_", 1.0))
        if self.method != "isotonic":
            return proba
        out = np.column_stack([iso.predict(proba[:, j]) for j, iso in enumerate(self.isotonic_)])
        if not self.multilabel:
            total = out.sum(axis=1, keepdims=True)
            out = np.where(total > 0, out / np.where(total > 0, total, 1.0), 1.0 / out.shape[1])
        return out

    def state_dict(self) -> dict:
        state = {"method": self.method, "multilabel": self.multilabel,
                 "temperature": np.asarray(getattr(self, "temperature_", [1.0])).tolist()}
        if self.method == "isotonic":
            state["isotonic"] = [{"x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist()} for iso in self.isotonic_]
        return state

    @classmethod
    def from_state_dict(cls, state: dict) -> "Calibrator":
        from sklearn.isotonic import IsotonicRegression

        cal = cls(state["method"], state["multilabel"])
        cal.temperature_ = np.asarray(state["temperature"])
        if state["method"] == "isotonic":
            # Refitting on the stored breakpoints (already monotone) reproduces the same piecewise-linear map.
            cal.isotonic_ = [IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p["x"], p["y"])
                             for p in state["isotonic"]]
        return cal
