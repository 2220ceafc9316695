"""Several cascades decided together: the models that are LoRA adapters on one shared base run in one pass of it.

    spam_model, abuse_model = load_shared(["runs/spam/model", "runs/abuse/model"])   # one base, two adapters
    spam = Cascade(spam_model, positive=["spam"], thresholds=spam_thresholds, rules=spam_rules)
    abuse = Cascade(abuse_model, positive=["abuse"], thresholds=abuse_thresholds, prefilter=cnn)
    spam_decisions, abuse_decisions = decide_mixed([(spam, texts_1), (abuse, texts_2)])
    # each as cascade.decide(texts) gives it: the same actions, probabilities equal within float32 sums
    base_group_key(spam) == base_group_key(abuse)   # True: a service may queue their requests together

Each cascade screens its own texts (`Cascade.screen`: its preprocessing, rules and pre-filter). The texts left open
for the model stage of every cascade whose model is an adapter of one `AdapterSet` then go through the base together
(`predict_proba_mixed`: each chunk of rows in one forward pass, each row with its own run's adapter, head and
calibrator), and each cascade decides them with its own thresholds (`Cascade.finish`). A cascade whose model has no
shared base, or that is the only request of its base with open texts, scores them with its own model, as `decide`.

Equal to `decide` because the model sees the same texts either way: `Screened.open_texts` is the plain list `decide`
hands its model, and `predict_proba_mixed` prepares each request's texts by its own scorer (`prepare_inputs`, the
scorer's `preprocessing_`) as the scorer's own `predict_proba` does.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from finesieve.models.adapters import AdapterBody, predict_proba_mixed
from finesieve.models.cascade import Cascade, Decisions
from finesieve.models.finetuned import FineTunedScorer


def base_group_key(cascade: Cascade) -> int | None:
    """The id of the `AdapterSet` the cascade's model stage is an adapter of, None when its model has no shared base
    (not a fine-tuned scorer, a merged LoRA run, a full fine-tune). Cascades with the same key (not None) can have
    their model stages scored in one pass of that base; a key is valid as long as the cascade lives."""
    model = cascade.model
    body = getattr(getattr(model, "model_", None), "body", None)
    return id(body.adapters) if isinstance(model, FineTunedScorer) and isinstance(body, AdapterBody) else None


def decide_mixed(requests: Sequence[tuple[Cascade, Sequence[str]]], batch_size: int = 64) -> list[Decisions]:
    """Each request's decisions, as `cascade.decide(texts)` gives them, with the model stages of the requests that
    share a base (`base_group_key`) scored in one `predict_proba_mixed` call (`batch_size` rows a pass of the
    base). Those requests record the shared call's wall time as their `seconds["model"]`."""
    screened = [cascade.screen(texts) for cascade, texts in requests]  # every request's texts checked first
    groups: dict[int, list[int]] = {}  # base key -> indices of the requests with texts for the model
    for r, ((cascade, _), s) in enumerate(zip(requests, screened)):
        key = base_group_key(cascade)
        if key is not None and s.open.any():
            groups.setdefault(key, []).append(r)

    model_proba: dict[int, np.ndarray] = {}
    model_seconds: dict[int, float] = {}
    for members in groups.values():
        if len(members) < 2:
            continue  # alone on its base: nothing to share a pass with, so its own predict_proba (`finish`)
        start = time.perf_counter()
        probas = predict_proba_mixed(
            [(requests[r][0].model, screened[r].open_texts) for r in members], batch_size=batch_size
        )
        elapsed = time.perf_counter() - start
        for r, p in zip(members, probas):
            model_proba[r], model_seconds[r] = p, elapsed
    return [
        cascade.finish(s, model_proba.get(r), model_seconds.get(r))
        for r, ((cascade, _), s) in enumerate(zip(requests, screened))
    ]
