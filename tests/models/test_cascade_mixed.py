"""Several cascades decided together (`finesieve.models.mixed`), and the cascade's two phases, `screen` and `finish`.

    OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q -p no:randomly tests/models/test_cascade_mixed.py

The models are test_adapters' two tiny LoRA runs (trained on 600 real Davidson rows), loaded on one base three times
over (runs A, B and A again under a third adapter name), plus run B merged, on no shared base. Their cascades differ:
one behind a slur lexicon, one behind a TF-IDF pre-filter, one preparing raw text, each with thresholds of its own
placed between its model's scores. Decided together, each cascade decides exactly as it does alone (probabilities
within float32 sums), while the shared base runs once per chunk of rows for all of them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import test_adapters
from test_adapters import ATOL, N_ROWS, POSITIVE

from finesieve.models.adapters import AdapterSet, load_shared
from finesieve.models.base import set_preprocessing
from finesieve.models.cascade import Cascade, CascadeThresholds, Decisions
from finesieve.models.finetuned import FineTunedScorer
from finesieve.models.mixed import base_group_key, decide_mixed
from finesieve.models.rules import RulesScorer
from finesieve.models.tfidf import TfidfLogReg

# The adapter tests' fixtures, used here too (assigned, not imported by name: parameters named after them would read
# to the linter as redefined imports). Module-scoped: the two tiny runs are trained once for this module.
root, data, texts = test_adapters.root, test_adapters.data, test_adapters.texts
run_a, run_b = test_adapters.run_a, test_adapters.run_b

HATE = "hate_speech"
RULE_MODES = {"racial-slurs": "block", "homophobic-slurs": "review", "religious-ethnic-slurs": "review"}


@pytest.fixture(scope="module")
def models(run_a, run_b) -> list[FineTunedScorer]:
    """Runs A, B and A again on one base (three adapters, three heads), then run B merged: no shared base."""
    a, b = run_a.run_dir / "model", run_b.run_dir / "model"
    return [*load_shared([a, b, a]), FineTunedScorer.load(b)]


@pytest.fixture(scope="module")
def raw_texts(davidson_slice) -> list[str]:
    """Rows no run trained on, as they come (HTML entities, mentions, links): a cascade prepares them itself."""
    return davidson_slice["text"].iloc[N_ROWS : N_ROWS + 40].tolist()


def _between(scores: np.ndarray, q: float) -> float:
    """A threshold near the q-quantile of `scores`, midway across the widest gap nearby: float32 sums in another
    order (a mixed pass against a single one) cannot move a score across it."""
    s = np.unique(scores)
    k = int(q * (len(s) - 1))
    i = max(range(max(k - 3, 0), min(k + 3, len(s) - 1)), key=lambda j: s[j + 1] - s[j])
    assert s[i + 1] - s[i] > 1e-4, "the scores crowd every threshold near this quantile"
    return float((s[i] + s[i + 1]) / 2)


def _cascade(model, texts, quantiles, *, escalate=None, preprocessing=None, **stages) -> Cascade:
    """A cascade over `model` whose review and block thresholds lie between its model's scores of the texts the
    cascade leaves open, near the two `quantiles`: the model reviews some, blocks some and delivers the rest."""

    def build(review: float, block: dict[str, float]) -> Cascade:
        thresholds = CascadeThresholds(escalate=escalate, review=review, block=block, rule_modes=RULE_MODES)
        cascade = Cascade(model, positive=POSITIVE, thresholds=thresholds, **stages)
        set_preprocessing(cascade, preprocessing)
        return cascade

    open_texts = build(0.5, {}).screen(texts).open_texts
    scores = model.predict_proba(open_texts)[:, list(model.classes_).index(HATE)]
    review, block = (_between(scores, q) for q in quantiles)
    return build(review, {HATE: block})


@pytest.fixture(scope="module")
def cascades(data, models, texts, raw_texts) -> dict[str, Cascade]:
    """Four cascades, three of them on the shared base: behind rules, behind a pre-filter, on raw text; and one over
    the merged run."""
    train = data[1].dataset("train")
    rules = RulesScorer(policy="builtin:hate_speech").fit(train.texts, train.labels)
    prefilter = TfidfLogReg(max_iter=500).fit(train.texts, train.labels)
    escalate = float(np.median(prefilter.predict_proba(texts)[:, list(prefilter.classes_).index(HATE)]))
    # The raw-text cascade prepares what it is given, and its model does too, as stages loaded from their own runs.
    preprocessing = data[0].preprocessing
    set_preprocessing(models[2], preprocessing)
    return {
        "rules": _cascade(models[0], texts, (0.3, 0.8), rules=rules),
        "prefilter": _cascade(models[1], texts, (0.5, 0.9), escalate=escalate, prefilter=prefilter),
        "raw": _cascade(models[2], raw_texts, (0.2, 0.6), preprocessing=preprocessing),
        "merged": _cascade(models[3], texts, (0.4, 0.7)),
    }


@pytest.fixture(scope="module")
def requests(cascades, texts, raw_texts) -> list[tuple[Cascade, list[str]]]:
    c = cascades
    return [(c["rules"], texts), (c["prefilter"], texts[5:]), (c["raw"], raw_texts), (c["merged"], texts[:30])]


@contextmanager
def _counting_passes(adapters: AdapterSet) -> Iterator[dict[str, list]]:
    """The shared base's passes while inside: "single" one entry per `forward` (one adapter for all rows), "mixed"
    the adapter names of each `forward_mixed` pass (one per row)."""
    passes: dict[str, list] = {"single": [], "mixed": []}
    hook = adapters.register_forward_hook(lambda *_: passes["single"].append(1))  # `forward` only, via __call__
    forward_mixed = adapters.forward_mixed

    def counted(names, **inputs):
        passes["mixed"].append(list(names))
        return forward_mixed(names, **inputs)

    adapters.forward_mixed = counted  # type: ignore[method-assign]
    try:
        yield passes
    finally:
        hook.remove()
        del adapters.forward_mixed


def _shared_set(cascades) -> AdapterSet:
    return cascades["rules"].model.model_.body.adapters


def _assert_same(got: Decisions, want: Decisions, name: str) -> None:
    for field in ("action", "category", "decided_by"):
        assert list(getattr(got, field)) == list(getattr(want, field)), f"{name}: {field}"
    assert got.rules_fired == want.rules_fired, name
    assert set(got.stage_scores) == set(want.stage_scores) and set(got.seconds) == set(want.seconds), name
    for stage, scores in want.stage_scores.items():
        np.testing.assert_allclose(got.stage_scores[stage], scores, atol=ATOL, err_msg=f"{name}: {stage}")
    np.testing.assert_allclose(got.proba, want.proba, atol=ATOL, err_msg=name)


# ----------------------------------------------------------------------------------------------- screen and finish


def test_screen_leaves_the_model_stage_to_finish(cascades, texts):
    cascade = cascades["prefilter"]
    with _counting_passes(_shared_set(cascades)) as passes:
        screened = cascade.screen(texts)
    assert passes == {"single": [], "mixed": []}  # the model did not run
    pre = screened.stage_scores["prefilter"]
    assert list(screened.open) == list(pre >= cascade.thresholds.escalate)
    assert 0 < screened.open.sum() < len(texts)
    assert screened.open_texts == [t for t, is_open in zip(texts, screened.open) if is_open]
    assert np.isnan(screened.stage_scores["model"]).all() and "model" not in screened.seconds

    want = cascade.decide(texts)
    _assert_same(cascade.finish(screened), want, "finish")
    # The model's probabilities scored elsewhere give the same decisions; screened was left as it was.
    given = cascade.model.predict_proba(screened.open_texts)
    got = cascade.finish(screened, model_proba=given, model_seconds=1.5)
    _assert_same(got, want, "finish with model_proba")
    assert got.seconds["model"] == 1.5
    assert np.isnan(screened.stage_scores["model"]).all() and "model" not in screened.seconds
    with pytest.raises(ValueError, match="open texts"):
        cascade.finish(screened, model_proba=given[1:])


def test_the_base_group_key_names_the_shared_base(cascades, data):
    keys = {name: base_group_key(c) for name, c in cascades.items()}
    assert keys["rules"] == keys["prefilter"] == keys["raw"] == id(_shared_set(cascades))
    assert keys["merged"] is None
    train = data[1].dataset("train")
    tfidf = TfidfLogReg(max_iter=200).fit(train.texts, train.labels)
    assert base_group_key(Cascade(tfidf, positive=POSITIVE, thresholds=CascadeThresholds(review=0.5))) is None


# ----------------------------------------------------------------------------------------------- decided together


def test_each_cascade_decides_together_as_alone(requests, cascades, raw_texts):
    want = [cascade.decide(texts) for cascade, texts in requests]
    got = decide_mixed(requests)
    assert len(got) == len(requests)
    for g, w, name in zip(got, want, ["rules", "prefilter", "raw", "merged"]):
        _assert_same(g, w, name)

    # Every path was taken, so the equality covers each: rules and the pre-filter decide some messages before the
    # model, and each model reviews, blocks and delivers some.
    rules, prefilter, raw, _ = want
    assert {"rules", "model"} <= set(rules.decided_by) and {"prefilter", "model"} <= set(prefilter.decided_by)
    for decided in want:
        by_model = decided.action[decided.decided_by == "model"]
        assert {"deliver", "review", "block"} <= set(by_model), decided.to_frame()
    # The raw-text cascade prepared the texts (cleaned, redacted): the model saw other texts than it was given.
    assert cascades["raw"].screen(raw_texts).texts != raw_texts

    # The three on the shared base record one pass's time; the merged one its own.
    assert got[0].seconds["model"] == got[1].seconds["model"] == got[2].seconds["model"]
    assert got[3].seconds["model"] != got[0].seconds["model"]


def test_the_shared_base_runs_once_per_chunk_for_every_cascade(requests, cascades):
    shared = _shared_set(cascades)
    grouped = requests[:3]
    n_open = sum(len(c.screen(t).open_texts) for c, t in grouped)
    adapter_names = {c.model.model_.body.name for c, _ in grouped}
    assert len(adapter_names) == 3

    with _counting_passes(shared) as alone:
        want = [cascade.decide(texts) for cascade, texts in requests]
    assert alone["mixed"] == [] and len(alone["single"]) >= len(grouped)  # one pass at least per cascade

    with _counting_passes(shared) as one_chunk:
        decide_mixed(requests, batch_size=n_open)
    assert one_chunk["single"] == [] and len(one_chunk["mixed"]) == 1  # three cascades, one pass
    assert len(one_chunk["mixed"][0]) == n_open and set(one_chunk["mixed"][0]) == adapter_names

    with _counting_passes(shared) as chunks:
        got = decide_mixed(requests, batch_size=16)
    assert chunks["single"] == [] and len(chunks["mixed"]) == math.ceil(n_open / 16)
    assert sum(len(names) for names in chunks["mixed"]) == n_open
    for g, w in zip(got, want):
        _assert_same(g, w, "batch_size=16")


def test_requests_with_nothing_for_the_model(cascades, texts, raw_texts):
    prefilter = cascades["prefilter"]
    delivered = [t for t, is_open in zip(texts, prefilter.screen(texts).open) if not is_open]
    assert delivered
    requests = [
        (prefilter, delivered),  # every text stopped by the pre-filter
        (cascades["rules"], []),
        (cascades["rules"], texts[:12]),
        (cascades["raw"], raw_texts[:12]),
    ]
    with _counting_passes(_shared_set(cascades)) as passes:
        got = decide_mixed(requests)
    assert passes["single"] == [] and len(passes["mixed"]) == 1
    names = {cascades[name].model.model_.body.name for name in ("rules", "raw")}
    assert set(passes["mixed"][0]) == names  # the pre-filter cascade's adapter had no row to run
    for (cascade, batch), g in zip(requests, got):
        _assert_same(g, cascade.decide(batch), f"{len(batch)} texts")
    assert set(got[0].decided_by) == {"prefilter"} and "model" not in got[0].seconds
    assert len(got[1].action) == 0 and got[1].proba.shape == (0, 3) and "model" not in got[1].seconds
    assert decide_mixed([]) == []


def test_a_cascade_alone_on_its_base_scores_with_its_own_model(cascades, texts):
    requests = [(cascades["rules"], texts[:12]), (cascades["merged"], texts[:12]), (cascades["prefilter"], [])]
    with _counting_passes(_shared_set(cascades)) as passes:
        got = decide_mixed(requests)
    assert passes["mixed"] == [] and len(passes["single"]) >= 1  # nothing to share a pass with
    for (cascade, batch), g in zip(requests, got):
        _assert_same(g, cascade.decide(batch), "alone")
