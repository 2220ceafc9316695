"""The scorer contract (`finesieve.models.checks`) over every scorer kind and the cascade, on real data slices.

Each case builds a scorer the way its kind is used (tiny networks, fixed seeds, the packaged MiniLM for the
embedding scorer) and runs `check_scorer`, which checks every rule and names the ones that break. Tolerances
are what each kind declares: exact arithmetic for tfidf and rules, ~1e-6 for float32 networks that pad batches.
A case that breaks a rule because of a known bug is marked xfail(strict=True, raises=ScorerContractError) with a
reason naming the bug, so it flips to a failure once the bug is fixed and the mark must go (none is needed today).
The last section proves the checks can fail: a tiny correct scorer passes, and each broken variant of it is
caught under the rule it breaks.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import BaseModel, ConfigDict, Field

from finesieve.models.base import check_fit_inputs, check_is_fitted, check_texts
from finesieve.models.cascade import Cascade, CascadeThresholds
from finesieve.models.char_cnn import CharCNNScorer
from finesieve.models.checks import RULES, ScorerContractError, check_fitted_scorer, check_scorer
from finesieve.models.embedding_zero_shot import EmbeddingZeroShot
from finesieve.models.finetune_config import FinetuneConfig
from finesieve.models.finetuned import FineTunedScorer
from finesieve.models.prompt_baseline import PromptBaseline
from finesieve.models.rules import RulesScorer
from finesieve.models.tfidf import TfidfLogReg

N_FIT = 400
CLASSES = ["hate_speech", "neither", "offensive"]
TINY_CNN = dict(channels=16, embed_dim=8, max_chars=120, kernel_sizes=(3, 5), max_epochs=2, batch_size=64)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def davidson(davidson_slice):
    """(fit texts, fit labels, multi-label fit labels, probe texts): 400 real tweets; 12 held-out ones of
    lengths from the shortest to the longest (so batches pad), and three edge cases. Multi-label labels are every class at least one
    annotator voted for (the Davidson vote columns), a real multi-label view of the same tweets."""
    fit = davidson_slice.iloc[:N_FIT]
    rest = davidson_slice.iloc[N_FIT:].copy()
    rest = rest.assign(n=rest.text.str.len()).sort_values("n", kind="stable")
    probe = rest.iloc[np.linspace(0, len(rest) - 1, 12).round().astype(int)].text.tolist()
    probe += ["", "\N{GRINNING FACE}", "word " * 800]  # empty, one emoji, longer than any model reads
    votes = fit[["hate_speech", "offensive_language", "neither"]].astype(int).to_numpy()
    multi = [tuple(c for c, v in zip(("hate_speech", "offensive", "neither"), row) if v > 0) for row in votes]
    return fit.text.tolist(), fit.label.tolist(), multi, probe


# tiny LMs: tokenizer_dir, tiny_bert and tiny_llama are session fixtures in tests/conftest.py.


# ----------------------------------------------------------------------------------------------- every kind


def _tfidf(request):
    return dict(make_unfitted=lambda: TfidfLogReg(max_iter=500), batch_atol=1e-12, reload_atol=1e-12)


def _rules(request):
    return dict(make_unfitted=lambda: RulesScorer(policy="builtin:hate_speech"), batch_atol=0.0, reload_atol=0.0)


def _char_cnn(request):
    return dict(make_unfitted=lambda: CharCNNScorer(**TINY_CNN), batch_atol=1e-6, reload_atol=1e-7)


def _embedding(request):
    # Few texts to fit on: nothing is trained, and each encoding pass costs. batch_size 4: the probe spans batches.
    return dict(
        make_unfitted=lambda: EmbeddingZeroShot(prompt="builtin:davidson", batch_size=4, progress=False),
        n_fit=40,
        batch_atol=2e-6,
        reload_atol=1e-7,
    )


def _prompt_baseline(request):
    path = request.getfixturevalue("tiny_llama")
    return dict(
        make_unfitted=lambda: PromptBaseline(
            path, prompt="builtin:davidson", batch_size=4, max_message_chars=300, progress=False
        ),
        n_fit=40,
        batch_atol=1e-6,
        reload_atol=1e-7,
    )


def _finetune_config(model: str, method: str) -> FinetuneConfig:
    return FinetuneConfig(
        model=model,
        method=method,
        max_epochs=1,
        eval_every=10,
        learning_rate=1e-3,
        batch_size=32,
        tracking_uri="none",
        num_threads=1,
    )


def _finetuned(method):
    def case(request):
        config = _finetune_config(request.getfixturevalue("tiny_bert"), method)
        # batch_size 4 when scoring: the probe spans batches padded to different lengths.
        return dict(
            make_unfitted=lambda: FineTunedScorer(config, batch_size=4),
            rebuild=lambda c: FineTunedScorer(c, batch_size=4),
            fit_kwargs={"positive": ["hate_speech"]},
            batch_atol=1e-6,
            reload_atol=1e-6,
        )

    return case


CASES = {
    "tfidf": _tfidf,
    "rules": _rules,
    "char_cnn": _char_cnn,
    "embedding_zero_shot": _embedding,
    "prompt_baseline": _prompt_baseline,
    "finetuned_lora": _finetuned("lora"),
    "finetuned_full": _finetuned("full"),
}


@pytest.mark.parametrize("kind", list(CASES))
def test_single_label_contract(kind, request, davidson, tmp_path):
    texts, labels, _, probe = davidson
    case = CASES[kind](request)
    n = case.pop("n_fit", N_FIT)
    scorer = check_scorer(case.pop("make_unfitted"), texts[:n], labels[:n], probe, tmp_dir=tmp_path, name=kind, **case)
    assert scorer.classes_.tolist() == CLASSES


def test_tfidf_on_a_handful_of_texts(davidson, tmp_path):
    # Under 2 texts per class TF-IDF keeps every n-gram (min_df 1): fit once did so by rewriting its min_df argument.
    texts, labels, _, probe = davidson
    rows = [labels.index(c) for c in CLASSES] + [0, 1]  # one text of each class, and two more: 5 texts
    scorer = check_scorer(
        lambda: TfidfLogReg(max_iter=500),
        [texts[i] for i in rows],
        [labels[i] for i in rows],
        probe,
        tmp_dir=tmp_path,
        batch_atol=1e-12,
        reload_atol=1e-12,
    )
    assert scorer.min_df == 2 and scorer.min_df_ == 1


@pytest.mark.parametrize("kind", ["tfidf", "rules", "char_cnn"])
def test_multilabel_contract(kind, request, davidson, tmp_path):
    texts, _, multi, probe = davidson
    case = CASES[kind](request)
    case.pop("n_fit", None)
    scorer = check_scorer(
        case.pop("make_unfitted"),
        texts,
        multi,
        probe,
        tmp_dir=tmp_path,
        multilabel=True,
        name=f"{kind} (multi-label)",
        **case,
    )
    assert scorer.multilabel_ is True


# ----------------------------------------------------------------------------------------------- the cascade


@pytest.fixture(scope="module")
def cascade(davidson, tiny_bert):
    """rules (hate-speech lexicon) -> TF-IDF pre-filter -> tiny LoRA BERT, with thresholds that send some probe
    texts down each path (decided by a rule, delivered by the pre-filter, reviewed or blocked by the model)."""
    texts, labels, _, probe = davidson
    rules = RulesScorer(policy="builtin:hate_speech").fit(texts, labels)
    prefilter = TfidfLogReg(max_iter=500).fit(texts, labels)
    model = FineTunedScorer(_finetune_config(tiny_bert, "lora"), batch_size=4).fit(
        texts, labels, positive=["hate_speech"]
    )
    pre = prefilter.predict_proba(probe)[:, 0]
    hate = model.predict_proba(probe)[:, 0]
    thresholds = CascadeThresholds(
        escalate=float(np.median(pre)),
        review=float(np.quantile(hate, 0.3)),
        block={"hate_speech": float(np.quantile(hate, 0.8))},
        rule_modes={"racial-slurs": "block", "homophobic-slurs": "review"},
    )
    cascade = Cascade(model, positive=["hate_speech"], thresholds=thresholds, prefilter=prefilter, rules=rules)
    decided = cascade.decide(probe)
    assert set(decided.decided_by) == {"rules", "prefilter", "model"}, decided.to_frame()
    assert {"deliver", "review", "block"} <= set(decided.action), decided.to_frame()
    return cascade


def test_cascade_contract(cascade, davidson, tmp_path):
    probe = davidson[3]
    check_fitted_scorer(cascade, probe, tmp_dir=tmp_path, batch_atol=1e-6, reload_atol=1e-6)
    again = Cascade.load(_saved(cascade, tmp_path / "again"))
    np.testing.assert_array_equal(again.decide(probe).action, cascade.decide(probe).action)


def _saved(scorer, directory):
    scorer.save(directory)
    return directory


# ----------------------------------------------------------------------------------------------- the checks can fail


class TallyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    smoothing: float = Field(1.0, gt=0, description="Pseudo-count per class.")


class Tally:
    """A tiny correct scorer: class shares among training texts with the same first character, smoothed.
    Its kind is added to the kinds table by the `tally_kind` fixture, for these tests only."""

    kind = "tally"

    def __init__(self, smoothing: float = 1.0):
        self.smoothing = smoothing

    @classmethod
    def from_config(cls, config: TallyConfig) -> "Tally":
        return cls(**config.model_dump())

    def get_config(self) -> TallyConfig:
        return TallyConfig(smoothing=self.smoothing)

    def fit(self, texts, labels, multilabel=None):
        texts, tuples, multilabel = check_fit_inputs(texts, labels, multilabel)
        self.classes_ = np.array(sorted({c for t in tuples for c in t}))
        self.multilabel_ = multilabel
        self.counts_ = {}
        for text, t in zip(texts, tuples):
            row = self.counts_.setdefault(text[:1], [0.0] * len(self.classes_))
            for c in t:
                row[self.classes_.tolist().index(c)] += 1
        return self

    def predict_proba(self, texts):
        check_is_fitted(self)
        texts = check_texts(texts)
        zero = [0.0] * len(self.classes_)
        rows = np.array([self.counts_.get(t[:1], zero) for t in texts], dtype=float).reshape(
            len(texts), len(self.classes_)
        )
        rows += self.smoothing
        return rows / rows.sum(axis=1, keepdims=True)

    def save(self, directory):
        check_is_fitted(self)
        Path(directory).mkdir(parents=True, exist_ok=True)
        state = {
            "config": self.get_config().model_dump(),
            "classes": self.classes_.tolist(),
            "multilabel": self.multilabel_,
            "counts": self.counts_,
        }
        (Path(directory) / "tally.json").write_text(json.dumps(state))

    @classmethod
    def load(cls, directory):
        state = json.loads((Path(directory) / "tally.json").read_text())
        scorer = cls.from_config(TallyConfig(**state["config"]))
        scorer.classes_, scorer.multilabel_, scorer.counts_ = (
            np.array(state["classes"]),
            state["multilabel"],
            state["counts"],
        )
        return scorer


class NoCheckBeforeFit(Tally):
    def predict_proba(self, texts):
        return np.full((len(texts), len(self.classes_)), 1 / len(self.classes_))


class ScoresCharacters(Tally):
    def predict_proba(self, texts):
        check_is_fitted(self)
        return super().predict_proba([t for t in texts] if isinstance(texts, str) else texts)


class FitReturnsNone(Tally):
    def fit(self, texts, labels, multilabel=None):
        super().fit(texts, labels, multilabel)


class FitRewritesArgument(Tally):
    def fit(self, texts, labels, multilabel=None):
        self.smoothing = 0.5
        return super().fit(texts, labels, multilabel)


class LearnedWithoutUnderscore(Tally):
    def fit(self, texts, labels, multilabel=None):
        self.n_seen = len(texts)
        return super().fit(texts, labels, multilabel)


class UnsortedClasses(Tally):
    def fit(self, texts, labels, multilabel=None):
        super().fit(texts, labels, multilabel)
        self.classes_ = self.classes_[::-1]
        return self


class RowsDoNotSumToOne(Tally):
    def predict_proba(self, texts):
        return 0.9 * super().predict_proba(texts)


class EmptyInputIsFlat(Tally):
    def predict_proba(self, texts):
        return super().predict_proba(texts) if len(texts) else np.zeros(0)


class DependsOnTheBatch(Tally):
    def predict_proba(self, texts):
        proba = super().predict_proba(texts) + 0.01 * len(texts)  # e.g. a batch statistic leaking into scores
        return proba / proba.sum(axis=1, keepdims=True)


class DependsOnThePosition(Tally):
    def predict_proba(self, texts):
        proba = super().predict_proba(texts)
        proba[:, 0] += 1e-3 * np.arange(len(proba))  # e.g. rows written back in sorted order
        return proba / proba.sum(axis=1, keepdims=True)


class RemembersWhatItScored(Tally):
    def predict_proba(self, texts):
        self.last_batch_size_ = len(texts)  # e.g. label tokens resolved lazily on the first call
        return super().predict_proba(texts)


class LoadLosesSmoothing(Tally):
    @classmethod
    def load(cls, directory):
        scorer = super().load(directory)
        scorer.smoothing = 5.0
        return scorer


class ConfigTakesAnyKey(Tally):
    def get_config(self):
        return LaxConfig(smoothing=self.smoothing)


class LaxConfig(BaseModel):
    smoothing: float = 1.0


BROKEN = {
    NoCheckBeforeFit: "not-fitted",
    ScoresCharacters: "bare-string",
    FitReturnsNone: "fit-returns-self",
    FitRewritesArgument: "fit-keeps-arguments",
    LearnedWithoutUnderscore: "learned-attributes",
    UnsortedClasses: "classes",
    RowsDoNotSumToOne: "probabilities",
    EmptyInputIsFlat: "empty-input",
    DependsOnTheBatch: "batch-invariance",
    DependsOnThePosition: "order-invariance",
    RemembersWhatItScored: "predict-keeps-state",
    LoadLosesSmoothing: "save-load",
    ConfigTakesAnyKey: "config",
}


@pytest.fixture()
def tally_kind(monkeypatch):
    """Registers Tally and each broken variant as a kind, so the `kind` rule holds and the broken rule is alone."""
    from finesieve.models import kinds

    table = {**kinds.MODEL_KINDS}
    monkeypatch.setattr(kinds, "MODEL_KINDS", table)
    return lambda cls: table.update({"tally": cls})


def test_a_correct_scorer_passes(davidson, tally_kind, tmp_path):
    texts, labels, multi, probe = davidson
    tally_kind(Tally)
    check_scorer(Tally, texts, labels, probe, tmp_dir=tmp_path / "single")
    check_scorer(Tally, texts, multi, probe, tmp_dir=tmp_path / "multi", multilabel=True)


@pytest.mark.parametrize("cls", list(BROKEN), ids=lambda c: c.__name__)
def test_each_broken_rule_is_caught_and_named(cls, davidson, tally_kind, tmp_path):
    texts, labels, _, probe = davidson
    tally_kind(cls)
    with pytest.raises(ScorerContractError) as caught:
        check_scorer(cls, texts, labels, probe, tmp_dir=tmp_path)
    assert BROKEN[cls] in caught.value.broken, str(caught.value)
    assert set(caught.value.broken) <= set(RULES)
    assert str(caught.value).startswith(f"{cls.__name__} breaks") and BROKEN[cls] in str(caught.value)


def test_an_unregistered_kind_is_caught(davidson, tmp_path):
    texts, labels, _, probe = davidson
    with pytest.raises(ScorerContractError) as caught:
        check_scorer(Tally, texts, labels, probe, tmp_dir=tmp_path)
    assert list(caught.value.broken) == ["kind"]
