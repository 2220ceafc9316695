"""Every kind of run, and every kind of cascade, round-trips through disk with equal scores.

    OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q tests/test_run_roundtrip.py

Each run kind (tfidf, rules, char_cnn, embedding_zero_shot, prompt_baseline, fine-tuned LoRA and full) is trained on
600 real Davidson rows with the recipes and tiny models (random BERT and Llama, hidden size 32), saved, then:
load -> same probabilities as the scorer in memory; load -> save -> load -> the same again. Cascades of every shape
are fitted with `fit_cascade` from those runs and checked the same way, decision by decision. A LoRA cascade is
also loaded in a fresh process by `finesieve score` and `finesieve eval` (a merged adapter written back as full
weights under `adapter/` loads in no process at all: PITFALLS "Saving and loading adapters").
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from finesieve.cascade.build import fit_cascade
from finesieve.cascade.fit import CascadeConfig, ValidationScores, fit_thresholds
from finesieve.data.load import load_dataset
from finesieve.data.preprocess import Preprocessing, prepare
from finesieve.data.spec import ColumnSpec
from finesieve.data.split import SplitConfig, make_splits
from finesieve.evals import metrics as M
from finesieve.models.base import positive_scores
from finesieve.models.cascade import Cascade
from finesieve.models.char_cnn import CharCNNConfig, CharCNNScorer
from finesieve.models.embedding_zero_shot import EmbeddingZeroShot
from finesieve.models.finetune_config import FinetuneConfig
from finesieve.models.finetuned import FineTunedScorer
from finesieve.models.prompt_baseline import PromptBaseline
from finesieve.models.text_classifier import is_peft_model
from finesieve.runs import Run, load_run, load_scorer, save_run
from finesieve.train.finetune import train_finetune
from finesieve.train.recipe import fit_and_save, train_reference

POSITIVE = ["hate_speech"]
SPEC = ColumnSpec(text_col="text", label_cols=("label",))
N_ROWS, N_HELD_OUT = 600, 60  # rows trained on (split 80/10/10), and unseen rows for the fresh-process check
ODD_TEXTS = [
    "",
    "ok",
    "you people are all the same, get out \N{POUTING FACE}",
    "word " * 300,
    # raw text that training's cleaning and redaction change: a loaded run must change it the same way
    "mail me at john.doe@gmail.com or call 555 123 4567",
    "you are a f\u200bool, go h\u043eme",
]
# Equal within float32 noise. A LoRA model scored unmerged (as trained) and merged (as loaded) differs by ~1e-7.
TOL = dict(rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------- data and models


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("roundtrip")


@pytest.fixture(scope="module")
def data(root, davidson_slice):
    """(dataset, splits) of 600 real Davidson rows: every run and cascade below shares this one split."""
    path = root / "davidson.csv"
    davidson_slice.iloc[:N_ROWS][["text", "label"]].to_csv(path, index=False)
    dataset = load_dataset(path, SPEC)
    return dataset, make_splits(dataset, SplitConfig(seed=0))


@pytest.fixture(scope="module")
def held_out(data) -> list[str]:
    """Texts no scorer was fitted or thresholded on: the test split, plus empty, short, emoji and over-long ones."""
    return data[1].dataset("test").texts + ODD_TEXTS


# tokenizer_dir, tiny_bert and tiny_llama: the shared tiny models of tests/conftest.py


# ----------------------------------------------------------------------------------------------- runs, one per kind


@pytest.fixture(scope="module")
def tfidf_run(root, data):
    return train_reference("tfidf", data[0], positive=POSITIVE, splits=data[1], out=root / "tfidf", n_boot=0)


@pytest.fixture(scope="module")
def rules_run(root, data):
    return train_reference(
        "rules:builtin:hate_speech", data[0], positive=POSITIVE, splits=data[1], out=root / "rules", n_boot=0
    )


@pytest.fixture(scope="module")
def char_cnn_run(root, data):
    val = data[1].dataset("val")
    cnn = CharCNNScorer.from_config(CharCNNConfig(channels=16, max_epochs=2, seed=0))
    return fit_and_save(
        cnn,
        "char_cnn",
        data[1],
        positive=POSITIVE,
        out=root / "char_cnn",
        fit_kwargs={"val_texts": val.texts, "val_labels": val.labels},
        n_boot=0,
    )


@pytest.fixture(scope="module")
def embedding_zero_shot_run(root, data):
    # The packaged MiniLM. Small batches: one over-long text pads only its own batch to 256 tokens.
    scorer = EmbeddingZeroShot(prompt="builtin:davidson", progress=False, batch_size=8)
    return fit_and_save(scorer, "embedding_zero_shot", data[1], positive=POSITIVE, out=root / "embedding", n_boot=0)


@pytest.fixture(scope="module")
def prompt_baseline_run(root, data, tiny_llama):
    scorer = PromptBaseline(tiny_llama, prompt="builtin:davidson", progress=False, batch_size=16)
    return fit_and_save(scorer, "prompt_baseline", data[1], positive=POSITIVE, out=root / "prompt", n_boot=0)


def _finetune(root, data, model, method):
    # lr 1e-3 for a few steps moves LoRA's B matrices off zero, so the adapter changes the scores.
    config = FinetuneConfig(
        model=model,
        method=method,
        max_steps=6,
        batch_size=16,
        eval_every=3,
        learning_rate=1e-3,
        max_length=64,
        tracking_uri="none",
        num_threads=2,
        seed=0,
    )
    return train_finetune(config, data[0], positive=POSITIVE, splits=data[1], out=root / f"ft_{method}", n_boot=0)


@pytest.fixture(scope="module")
def lora_run(root, data, tiny_bert):
    return _finetune(root, data, tiny_bert, "lora")


@pytest.fixture(scope="module")
def full_run(root, data, tiny_bert):
    return _finetune(root, data, tiny_bert, "full")


RUN_KINDS = {
    "tfidf": "tfidf_run",
    "rules": "rules_run",
    "char_cnn": "char_cnn_run",
    "embedding_zero_shot": "embedding_zero_shot_run",
    "prompt_baseline": "prompt_baseline_run",
    "finetuned LoRA": "lora_run",
    "finetuned full": "full_run",
}


def resave(run: Run, out: Path) -> Run:
    """Save a loaded run to a new directory and load that: load -> save -> load."""
    m = run.manifest
    save_run(
        out,
        run.scorer,
        kind=m.kind,
        task=m.task,
        data=m.data,
        metrics=m.metrics,
        parent_run=str(run.path),
        preprocessing=m.preprocessing,
        base_model=m.base_model,
        reference=m.reference,
        extra={"cascade": run.section("cascade")} if run.section("cascade") else None,
    )
    return load_run(out)


def test_odd_texts_are_changed_by_the_training_preprocessing(data):
    assert data[0].preprocessing == Preprocessing(text_field="text")
    prepared = prepare(ODD_TEXTS, data[0].preprocessing)[0]
    assert prepared[-2] == "mail me at <EMAIL> or call <PHONE>" and prepared[-1] == "you are a fool, go home"


@pytest.mark.parametrize("kind", RUN_KINDS)
def test_every_run_kind_round_trips_with_equal_scores(kind, request, data, held_out, tmp_path):
    """The scorer in memory was fitted on prepared texts and is given prepared texts; the loaded one is given the
    raw texts and prepares them itself, as its manifest records (what a Python caller of `load_scorer` gets)."""
    fitted = request.getfixturevalue(RUN_KINDS[kind])
    expected = fitted.scorer.predict_proba(prepare(held_out, data[0].preprocessing)[0])
    assert expected.shape == (len(held_out), 3)

    scorer, run = load_scorer(fitted.run_dir)
    assert type(scorer) is type(fitted.scorer)
    assert run.preprocessing == data[0].preprocessing
    np.testing.assert_allclose(scorer.predict_proba(held_out), expected, **TOL)
    again = resave(run, tmp_path / "again")
    np.testing.assert_allclose(again.scorer.predict_proba(held_out), expected, **TOL)
    third = resave(again, tmp_path / "third")  # a copy of a copy: nothing drifts
    np.testing.assert_allclose(third.scorer.predict_proba(held_out), expected, **TOL)


# ----------------------------------------------------------------------------------------------- fine-tuned LoRA


def test_lora_adapter_is_written_back_byte_for_byte(lora_run, tmp_path):
    original = lora_run.run_dir / "model" / "adapter"
    scorer = FineTunedScorer.load(lora_run.run_dir / "model")
    assert not is_peft_model(scorer.model_.body)  # merged: the fast path for one model
    scorer.save(tmp_path / "copy")
    copy = tmp_path / "copy" / "adapter"
    assert (copy / "adapter_config.json").is_file() and not (copy / "config.json").exists()
    assert _tree_bytes(copy) == _tree_bytes(original)
    again = FineTunedScorer.load(tmp_path / "copy")
    np.testing.assert_allclose(again.predict_proba(ODD_TEXTS), scorer.predict_proba(ODD_TEXTS), **TOL)


def test_lora_unmerged_load_scores_as_merged_and_saves_an_adapter(lora_run, held_out, tmp_path):
    merged = FineTunedScorer.load(lora_run.run_dir / "model", merge=True)
    unmerged = FineTunedScorer.load(lora_run.run_dir / "model", merge=False)
    assert is_peft_model(unmerged.model_.body) and not is_peft_model(merged.model_.body)
    lora_b = [p for n, p in unmerged.model_.body.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().max() > 0 for p in lora_b)  # the adapter was trained: merging changes weights
    np.testing.assert_allclose(unmerged.predict_proba(held_out), merged.predict_proba(held_out), atol=1e-5)

    unmerged.save(tmp_path / "unmerged")
    assert (tmp_path / "unmerged" / "adapter" / "adapter_config.json").is_file()
    again = FineTunedScorer.load(tmp_path / "unmerged")
    np.testing.assert_allclose(again.predict_proba(held_out), merged.predict_proba(held_out), atol=1e-5)


def test_a_merged_body_is_never_saved_as_an_adapter(lora_run, tmp_path):
    scorer = FineTunedScorer.load(lora_run.run_dir / "model")
    scorer.adapter_files_ = None  # as if the adapter's files had not been kept
    with pytest.raises(ValueError, match="merge=False"):
        scorer.save(tmp_path / "lost")
    assert not (tmp_path / "lost" / "adapter").exists()


def test_full_finetune_saves_its_body(full_run, tmp_path):
    scorer = FineTunedScorer.load(full_run.run_dir / "model", merge=False)  # merge means nothing without adapters
    scorer.save(tmp_path / "copy")
    assert (tmp_path / "copy" / "body" / "config.json").is_file() and not (tmp_path / "copy" / "adapter").exists()


def _tree_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------------------------- cascades

# shape -> (model run, pre-filter run, rules: a policy or a rules run)
SHAPES = {
    "model": ("lora_run", None, None),
    "model + prefilter": ("lora_run", "char_cnn_run", None),
    "model + prefilter + rules": ("lora_run", "char_cnn_run", "builtin:hate_speech"),
    "rules + model": ("lora_run", None, "rules_run"),
    "full model + LoRA prefilter": ("full_run", "lora_run", None),
}


@pytest.fixture(scope="module")
def cascades(request, root, data):
    """shape -> the CascadeRun `fit_cascade` wrote (built on first use, once per module)."""
    built = {}

    def get(shape: str):
        if shape not in built:
            model, prefilter, rules = SHAPES[shape]
            run_dir = lambda name: request.getfixturevalue(name).run_dir if name else None  # noqa: E731
            built[shape] = fit_cascade(
                data[0],
                model_run=run_dir(model),
                prefilter_run=run_dir(prefilter),
                rules=run_dir(rules) if rules == "rules_run" else rules,
                config=CascadeConfig(budget=0.5),
                out=root / f"cascade-{len(built)}",
                n_boot=0,
            )
        return built[shape]

    return get


def assert_same_decisions(got, expected) -> None:
    assert list(got.action) == list(expected.action)
    assert list(got.decided_by) == list(expected.decided_by)
    assert list(got.category) == list(expected.category)
    assert got.rules_fired == expected.rules_fired
    assert set(got.stage_scores) == set(expected.stage_scores)
    for stage, scores in expected.stage_scores.items():
        np.testing.assert_allclose(got.stage_scores[stage], scores, **TOL, err_msg=stage)
    np.testing.assert_allclose(got.proba, expected.proba, **TOL)


@pytest.mark.parametrize("shape", SHAPES)
def test_every_cascade_shape_round_trips_with_equal_decisions(shape, cascades, held_out, tmp_path):
    built = cascades(shape)
    model, prefilter, rules = SHAPES[shape]
    stages = {"model"} | ({"prefilter"} if prefilter else set()) | ({"rules"} if rules else set())
    assert set(built.cascade.stages()) == stages
    expected = built.cascade.decide(held_out)

    cascade, run = load_scorer(built.run_dir)
    assert isinstance(cascade, Cascade) and cascade.thresholds == built.cascade.thresholds
    assert_same_decisions(cascade.decide(held_out), expected)
    np.testing.assert_allclose(cascade.predict_proba(held_out), built.cascade.predict_proba(held_out), **TOL)

    again = resave(run, tmp_path / "again")  # load -> save -> load
    assert again.scorer.thresholds == built.cascade.thresholds
    assert_same_decisions(again.scorer.decide(held_out), expected)
    # A LoRA stage is copied as its adapter, whichever stage it is and however often it is copied.
    for stage, source in (("model", model), ("prefilter", prefilter)):
        if source == "lora_run":
            adapter = again.path / "model" / stage / "adapter"
            assert (adapter / "adapter_config.json").is_file(), stage
            assert _tree_bytes(adapter) == _tree_bytes(built.run_dir / "model" / stage / "adapter")


def test_cascade_without_prefilter_routes_every_undecided_message_to_the_model(cascades):
    for shape in ("model", "rules + model"):
        built = cascades(shape)
        assert built.fit.thresholds.escalate is None
        assert built.fit.targets["budget_applies"] is False
        assert any("no pre-filter" in m and "does not apply" in m for m in built.fit.messages)
        decisions = built.decisions
        assert set(decisions.decided_by) <= {"rules", "model"}
        assert (decisions.decided_by == "model").mean() == pytest.approx(decisions.route_fraction())


@pytest.mark.parametrize("on_infeasible", ["recall", "budget", "error"])
def test_fit_thresholds_without_prefilter_does_not_apply_the_budget(on_infeasible):
    """The IndexError of `cascade fit` without --prefilter: the only routing level (everything, 1.0) lies above
    any budget, so filtering levels by the budget left none. Without a pre-filter the budget cannot be enforced."""
    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.2).astype(int)
    model = 0.6 * y + 0.3 * rng.random(400)  # violations in [0.6, 0.9), the rest in [0, 0.3): every target is met
    v = ValidationScores(y=y, model=model, y_category={"hate_speech": y}, model_category={"hate_speech": model})
    fit = fit_thresholds(v, model_threshold=0.5, config=CascadeConfig(budget=0.2, on_infeasible=on_infeasible))
    assert fit.feasible and fit.thresholds.escalate is None and not fit.targets["budget_applies"]
    assert fit.chosen["route"] == 1.0 and fit.reachable["at_budget"]["route"] == 1.0
    assert fit.chosen["recall"] == 1.0 and fit.chosen["precision"] == 1.0


# ----------------------------------------------------------------------------------------------- a fresh process


def test_lora_cascade_scores_and_evaluates_in_a_fresh_process(cascades, davidson_slice, tmp_path):
    """`finesieve score` and `finesieve eval` load the saved LoRA cascade anew and agree with it in memory."""
    built = cascades("model + prefilter + rules")
    raw = davidson_slice.iloc[N_ROWS : N_ROWS + N_HELD_OUT][["text", "label"]].reset_index(drop=True)
    data_file = tmp_path / "held_out.csv"
    raw.to_csv(data_file, index=False)
    exe = str(Path(sys.executable).with_name("finesieve"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    score_cmd = [
        exe,
        "score",
        str(built.run_dir),
        "--data",
        str(data_file),
        "--out",
        str(tmp_path / "scores.csv"),
        "--text-col",
        "text",
        "--no-progress",
    ]
    eval_cmd = [
        exe,
        "eval",
        str(built.run_dir),
        "--data",
        str(data_file),
        "--json",
        "--n-boot",
        "0",
        "--positive",
        POSITIVE[0],
    ]
    # Both at once: each pays its own start-up (imports, model load), which is most of the time.
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for cmd in (score_cmd, eval_cmd)
    ]
    (score_out, score_err), (eval_out, eval_err) = [p.communicate(timeout=300) for p in procs]
    assert procs[0].returncode == 0, score_err[-3000:]
    assert procs[1].returncode == 0, eval_err[-3000:]

    # In memory, on the texts as `score` sees them: cleaned and redacted as for training.
    texts, _ = prepare(raw["text"])
    expected = built.cascade.decide(texts)
    scores = pd.read_csv(tmp_path / "scores.csv", keep_default_na=True)
    assert len(scores) == len(raw)
    assert scores["action"].tolist() == list(expected.action)
    assert scores["decided_by"].tolist() == list(expected.decided_by)
    for stage, values in expected.stage_scores.items():
        np.testing.assert_allclose(scores[f"score_{stage}"].to_numpy(dtype=float), values, **TOL, err_msg=stage)
    positive = positive_scores(expected.proba, built.cascade.classes_, POSITIVE, built.cascade.multilabel_)
    np.testing.assert_allclose(scores["score"].to_numpy(dtype=float), positive, **TOL)

    result = json.loads(eval_out.strip().splitlines()[-1])
    held_out = load_dataset(data_file, SPEC)
    assert result["n"] == len(held_out) == len(raw)
    proba = built.cascade.decide(held_out.texts).proba
    y = held_out.violation(POSITIVE)
    score = positive_scores(proba, built.cascade.classes_, POSITIVE, built.cascade.multilabel_)
    assert result["roc_auc"] == pytest.approx(M.roc_auc(y, score), abs=1e-9)
    assert math.isfinite(result["pr_auc"])
