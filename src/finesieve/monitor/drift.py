"""Score drift: how a window of production scores differs from the validation scores saved with the run.

    from finesieve.monitor.drift import score_drift
    drift = score_drift(run.manifest.reference, {"spam": window_scores})
    drift["spam"]        # ScoreDrift(psi=0.31, ks=0.18, ks_pvalue=1e-9, n=5000)

The reference is what `ReferenceStats` keeps of the validation split: per class, the counts of messages per score
bin (equal-width bins on [0, 1]). A window's scores are counted in the same bins, and the two histograms compared:

    PSI   population stability index, sum over bins of (cur - ref) x ln(cur / ref) on the shares (each share
          floored at 1e-4 so an empty bin stays finite). The usual reading: < 0.1 stable, 0.1-0.25 moderate
          shift, > 0.25 large shift.
    KS    the largest gap between the two cumulative distributions, read at the bin edges (the reference keeps
          no raw scores, so this is the binned statistic: it never exceeds the exact one), and its asymptotic
          two-sample p-value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import kstwobign

from finesieve.data.errors import ConfigError
from finesieve.manifest import ReferenceStats

SHARE_FLOOR = 1e-4


@dataclass(frozen=True)
class ScoreDrift:
    psi: float
    ks: float
    ks_pvalue: float
    n: int  # scores in the window


def histogram(scores: Sequence[float] | np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Counts of `scores` per bin of `edges` (the last bin includes 1.0); NaN scores are not counted."""
    values = np.asarray(scores, dtype=float)
    values = values[~np.isnan(values)]
    counts, _ = np.histogram(np.clip(values, edges[0], edges[-1]), bins=np.asarray(edges, dtype=float))
    return counts


def psi(reference: Sequence[float] | np.ndarray, current: Sequence[float] | np.ndarray) -> float:
    """PSI between two histograms, given as counts or as shares (each is normalised to shares first)."""
    ref, cur = _shares(reference), _shares(current)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def ks_binned(reference: Sequence[int] | np.ndarray, current: Sequence[int] | np.ndarray) -> tuple[float, float]:
    """(the largest gap between the binned cumulative distributions, its asymptotic two-sample p-value)."""
    ref, cur = np.asarray(reference, dtype=float), np.asarray(current, dtype=float)
    n, m = ref.sum(), cur.sum()
    if n == 0 or m == 0:
        raise ConfigError("a score histogram is empty: drift needs scores in both the reference and the window")
    gap = float(np.max(np.abs(np.cumsum(ref) / n - np.cumsum(cur) / m)))
    return gap, float(kstwobign.sf(gap * math.sqrt(n * m / (n + m))))


def score_drift(reference: ReferenceStats, scores: Mapping[str, Sequence[float] | np.ndarray]) -> dict[str, ScoreDrift]:
    """Drift of each class's scores in `scores` (class -> the window's probabilities of that class)."""
    unknown = sorted(set(scores) - set(reference.score_histograms))
    if unknown:
        raise ConfigError(
            f"no reference scores for {unknown}: the run's reference statistics hold {sorted(reference.score_histograms)}"
        )
    out = {}
    for name, values in scores.items():
        current = histogram(values, reference.score_bins)
        ref = np.asarray(reference.score_histograms[name])
        if current.sum() == 0:
            continue  # nothing scored in the window for this class
        ks, p = ks_binned(ref, current)
        out[name] = ScoreDrift(psi=psi(ref, current), ks=ks, ks_pvalue=p, n=int(current.sum()))
    return out


def _shares(counts: Sequence[float] | np.ndarray) -> np.ndarray:
    counts = np.asarray(counts, dtype=float)
    if counts.sum() == 0:
        raise ConfigError("a score histogram is empty: drift needs scores in both the reference and the window")
    return np.maximum(counts / counts.sum(), SHARE_FLOOR)
