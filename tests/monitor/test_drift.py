"""Score drift against a run's reference statistics (`finesieve.monitor.drift`), on reference statistics made by
`manifest.reference_stats` as every run saves them. Scores are drawn with fixed seeds: the same distribution must
read as stable, a shifted one as drift."""

from __future__ import annotations

import numpy as np
import pytest

from finesieve.data.errors import ConfigError
from finesieve.manifest import reference_stats
from finesieve.monitor.drift import histogram, ks_binned, psi, score_drift


@pytest.fixture
def reference():
    rng = np.random.default_rng(0)
    spam = rng.beta(2, 5, 5_000)
    proba = np.column_stack([1 - spam, spam])
    return reference_stats(proba, ["ham", "spam"], ["a text"] * 5_000)


def test_the_same_distribution_reads_as_stable(reference):
    window = np.random.default_rng(1).beta(2, 5, 2_000)
    drift = score_drift(reference, {"spam": window})["spam"]
    assert drift.n == 2_000 and drift.psi < 0.05 and drift.ks_pvalue > 0.01


def test_a_shifted_distribution_reads_as_drift(reference):
    rng = np.random.default_rng(2)
    mild = score_drift(reference, {"spam": rng.beta(2.6, 5, 2_000)})["spam"]
    large = score_drift(reference, {"spam": rng.beta(5, 2, 2_000)})["spam"]
    assert large.psi > 0.25 and large.ks > 0.5 and large.ks_pvalue < 1e-6
    assert 0.02 < mild.psi < large.psi and mild.ks < large.ks


def test_psi_and_ks_on_hand_counted_histograms():
    assert psi([50, 50], [50, 50]) == 0.0
    expected = (0.8 - 0.5) * np.log(0.8 / 0.5) + (0.2 - 0.5) * np.log(0.2 / 0.5)
    assert psi([50, 50], [80, 20]) == pytest.approx(expected)
    gap, p = ks_binned([50, 50], [80, 20])
    assert gap == pytest.approx(0.3) and 0 < p < 0.05
    assert list(histogram([0.0, 0.5, 1.0, float("nan")], [0.0, 0.5, 1.0])) == [1, 2]  # 1.0 in the last bin


def test_unknown_classes_and_empty_histograms_are_refused(reference):
    with pytest.raises(ConfigError, match=r"no reference scores for \['abuse'\]"):
        score_drift(reference, {"abuse": [0.1]})
    with pytest.raises(ConfigError, match="empty"):
        psi([0, 0], [1, 1])
    assert score_drift(reference, {"spam": []}) == {}  # nothing scored: nothing to compare
