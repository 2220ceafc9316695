"""Matched operating points, checked by hand on a small example."""

import numpy as np
import pytest

from finesieve.evals.operating_points import at_recall, at_volume, matched_operating_points

Y = np.array([1, 0, 1, 0, 0, 1, 0, 0, 0, 1])  # 4 violations in 10
GOOD = np.array([0.9, 0.1, 0.8, 0.2, 0.3, 0.7, 0.1, 0.2, 0.1, 0.4])  # the 4 violations score highest
LEGACY = np.array([1, 1, 0, 1, 0, 1, 0, 0, 0, 0], dtype=bool)  # flags 4, catches 2


def test_at_volume_counts_violations_in_the_top_k():
    assert at_volume(Y, GOOD, 4) == {"flagged": 4, "caught": 4, "precision": 1.0, "recall": 1.0}
    v = at_volume(Y, GOOD, 2)
    assert (v["caught"], v["recall"]) == (2, 0.5)
    worst = at_volume(Y, -GOOD, 4)
    assert worst["caught"] == 0


def test_at_recall_finds_the_fewest_messages():
    r = at_recall(Y, GOOD, 0.5)
    assert (r["flagged"], r["caught"], r["precision"]) == (2, 2, 1.0)
    r = at_recall(Y, -GOOD, 0.5)  # reversed: six clean messages first, the 2nd violation at rank 8
    assert r["flagged"] == 8 and r["caught"] == 2
    assert at_recall(Y, GOOD, 0.0)["flagged"] == 0


def test_matched_points_against_the_reference():
    points = matched_operating_points(Y, {"good": GOOD}, reference_flagged=LEGACY, reference="legacy")
    ref = points["reference"]
    assert (ref["flagged"], ref["caught"], ref["recall"]) == (4, 2, 0.5)
    good = points["systems"]["good"]
    assert good["at_volume"]["caught"] == 4 and good["at_volume"]["more_caught"] == 2
    assert good["at_volume"]["caught_ratio"] == pytest.approx(2.0)
    assert good["at_recall"]["flagged"] == 2 and good["at_recall"]["review_saved"] == pytest.approx(0.5)
