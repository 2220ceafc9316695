"""What the service loads: run files checked against their recorded hashes, and LoRA runs sharing one base.

    source /tmp/pg.env && OMP_NUM_THREADS=1 .venv/bin/pytest -q -p no:randomly tests/serve/test_serving_models.py

Tampering is done on copies of the small SMS TF-IDF run of tests/serve/conftest.py: one byte changed, a file
removed, a file added, and the hashes removed from the manifest (a run saved before they were recorded). The
shared-base case trains two LoRA runs for a few steps on the tiny random BERT of tests/conftest.py and real SMS
rows, serves them together, and compares every decision with each run served alone (merged, its own base).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from finesieve.data.errors import ConfigError
from finesieve.data.load import load_dataset
from finesieve.data.spec import ColumnSpec
from finesieve.data.split import SplitConfig, make_splits
from finesieve.models.adapters import AdapterBody
from finesieve.models.finetune_config import FinetuneConfig
from finesieve.runs import MANIFEST, hash_model_files, run_manifest, verify_run_files
from finesieve.serve.app import create_app
from finesieve.serve.db import connect
from finesieve.serve.moderation import MessageIn, Moderator, load_models
from finesieve.serve.settings import ServiceSettings
from finesieve.train.finetune import train_finetune

ATOL = 1e-5  # unmerged adapters on a shared base against a merged copy: float32 sums in another order


@pytest.fixture
def run_copy(service_tfidf_run, tmp_path) -> Path:
    return Path(shutil.copytree(service_tfidf_run, tmp_path / "tfidf"))


def largest_model_file(run_dir: Path) -> Path:
    return max((p for p in (run_dir / "model").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


# ----------------------------------------------------------------------------------------------- file hashes


def test_a_saved_run_records_the_hash_of_every_model_file(service_tfidf_run):
    recorded = run_manifest(service_tfidf_run).files
    on_disk = sorted(p.relative_to(service_tfidf_run).as_posix() for p in service_tfidf_run.rglob("model/**/*"))
    assert recorded is not None and sorted(recorded) == [n for n in on_disk if (service_tfidf_run / n).is_file()]
    assert all(len(digest) == 64 for digest in recorded.values())
    assert recorded == hash_model_files(service_tfidf_run)


def test_an_untouched_run_is_verified_and_served(run_copy):
    assert verify_run_files(run_copy) is True
    models = load_models({"tfidf": run_copy})
    assert models["tfidf"].verified


def test_one_changed_byte_refuses_the_service_naming_the_file(run_copy, tmp_path):
    target = largest_model_file(run_copy)
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    name = target.relative_to(run_copy).as_posix()
    with pytest.raises(ConfigError) as err:
        load_models({"tfidf": run_copy})
    message = str(err.value)
    assert f"{name}: changed since the run was saved" in message and "model 'tfidf'" in message
    assert "Fix: restore the run directory from a trusted copy" in message
    assert message.count(": changed") == 1  # only that file
    with pytest.raises(ConfigError, match="changed since the run was saved"):
        create_app(ServiceSettings(database_url=f"sqlite:///{tmp_path / 's.db'}", runs={"tfidf": run_copy}))


def test_a_missing_or_an_extra_file_is_refused_naming_it(run_copy):
    removed = largest_model_file(run_copy)
    removed.unlink()
    (run_copy / "model" / "extra.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(ConfigError) as err:
        verify_run_files(run_copy)
    assert f"{removed.relative_to(run_copy).as_posix()}: missing" in str(err.value)
    assert "model/extra.safetensors: not among the files saved with the run" in str(err.value)


def test_a_run_saved_before_hashes_were_recorded_is_served_with_a_warning(run_copy):
    manifest = json.loads((run_copy / MANIFEST).read_text())
    del manifest["files"]
    (run_copy / MANIFEST).write_text(json.dumps(manifest))
    assert run_manifest(run_copy).files is None and verify_run_files(run_copy) is False
    with pytest.warns(UserWarning, match="cannot be verified"):
        models = load_models({"old": run_copy})
    assert not models["old"].verified


# ----------------------------------------------------------------------------------------------- one base, two runs


@pytest.fixture(scope="module")
def lora_runs(tmp_path_factory, sms_csv, tiny_bert) -> list[Path]:
    root = tmp_path_factory.mktemp("lora")
    dataset = load_dataset(sms_csv, ColumnSpec(text_col="text", label_cols=("label",)), max_rows=300)
    splits = make_splits(dataset, SplitConfig(seed=0))
    runs = []
    for name, seed in (("lora_one", 0), ("lora_two", 1)):
        # lr 1e-3 for a few steps moves LoRA's B matrices off zero: each adapter scores its own way.
        config = FinetuneConfig(
            model=tiny_bert,
            method="lora",
            max_steps=4,
            batch_size=16,
            eval_every=4,
            learning_rate=1e-3,
            max_length=48,
            tracking_uri="none",
            num_threads=1,
            seed=seed,
        )
        result = train_finetune(config, dataset, positive=["spam"], splits=splits, out=root / name, n_boot=0)
        runs.append(result.run_dir)
    return runs


def test_lora_runs_served_together_share_one_base_and_decide_as_served_alone(lora_runs, db_url, sms_unseen):
    shared = load_models({"one": lora_runs[0], "two": lora_runs[1]})
    bodies = [shared[n].cascade.model.model_.body for n in ("one", "two")]
    assert all(isinstance(b, AdapterBody) for b in bodies) and bodies[0].adapters is bodies[1].adapters
    alone = {"one": load_models({"one": lora_runs[0]}), "two": load_models({"two": lora_runs[1]})}
    assert not isinstance(alone["one"]["one"].cascade.model.model_.body, AdapterBody)  # alone: merged

    texts = sms_unseen["text"].head(30).tolist()
    engine = connect(db_url)
    settings = ServiceSettings(database_url=db_url, audit_rate=0.0)
    moderators = [Moderator(shared, engine, settings)] + [Moderator(m, engine, settings) for m in alone.values()]
    try:
        together = {n: moderators[0].moderate(n, [MessageIn(t) for t in texts]) for n in ("one", "two")}
        for name, moderator in zip(("one", "two"), moderators[1:]):
            own = moderator.moderate(name, [MessageIn(t) for t in texts])
            assert [o.action for o in together[name]] == [o.action for o in own]
            assert all(o.failure is None for o in together[name])
            np.testing.assert_allclose(
                [o.category_scores["spam"] for o in together[name]],
                [o.category_scores["spam"] for o in own],
                atol=ATOL,
                err_msg=name,
            )
        one, two = ([o.category_scores["spam"] for o in together[n]] for n in ("one", "two"))
        assert not np.allclose(one, two, atol=1e-4)  # each served its own adapter and head
    finally:
        for moderator in moderators:
            moderator.close()
        engine.dispose()


def test_requests_for_adapters_on_one_base_are_batched_together_in_one_forward_pass(lora_runs, db_url, sms_unseen):
    shared = load_models({"one": lora_runs[0], "two": lora_runs[1]})
    alone = {"one": load_models({"one": lora_runs[0]}), "two": load_models({"two": lora_runs[1]})}
    adapters = shared["one"].cascade.model.model_.body.adapters
    passes: list[list[str]] = []
    forward_mixed = adapters.forward_mixed

    def counted(names, **inputs):
        passes.append(list(names))
        return forward_mixed(names, **inputs)

    adapters.forward_mixed = counted  # type: ignore[method-assign]
    texts = {"one": sms_unseen["text"].head(10).tolist(), "two": sms_unseen["text"].iloc[10:22].tolist()}
    engine = connect(db_url)
    # batch_max is both requests together: the worker takes the first and waits (at most 30 s) for the second,
    # then decides them as one batch at once, so the test does not depend on timing.
    settings = ServiceSettings(database_url=db_url, audit_rate=0.0, batch_max=22, batch_wait_ms=30_000)
    moderator = Moderator(shared, engine, settings)
    own = [
        Moderator(models, engine, settings.model_copy(update={"batch_max": 64, "batch_wait_ms": 0}))
        for models in alone.values()
    ]
    try:
        assert moderator.batchers["one"] is moderator.batchers["two"]  # one queue for the models on one base
        _, first = moderator.submit("one", [MessageIn(t, id=f"one-{i}") for i, t in enumerate(texts["one"])])
        _, second = moderator.submit("two", [MessageIn(t, id=f"two-{i}") for i, t in enumerate(texts["two"])])
        together = {"one": first.result(timeout=120), "two": second.result(timeout=120)}
        assert moderator.batchers["one"].calls == 1
        assert len(passes) == 1 and sorted(set(passes[0])) == sorted(adapters.names)  # one pass, both adapters
        assert len(passes[0]) == 22
        for (name, outcomes), alone_moderator in zip(together.items(), own):
            expected = alone_moderator.moderate(
                name, [MessageIn(t, id=f"alone-{name}-{i}") for i, t in enumerate(texts[name])]
            )
            assert [o.action for o in outcomes] == [o.action for o in expected]
            assert all(o.failure is None and o.model == name for o in outcomes)
            np.testing.assert_allclose(
                [o.category_scores["spam"] for o in outcomes],
                [o.category_scores["spam"] for o in expected],
                atol=ATOL,
                err_msg=name,
            )
    finally:
        for m in (moderator, *own):
            m.close()
        engine.dispose()


def test_lora_runs_served_together_read_their_base_once(lora_runs, monkeypatch):
    from transformers import AutoModel

    reads: list[str] = []
    original = AutoModel.from_pretrained

    def counted(path, *args, **kwargs):
        reads.append(str(path))
        return original(path, *args, **kwargs)

    monkeypatch.setattr(AutoModel, "from_pretrained", counted)  # every base is read through it (shared or merged)
    load_models({"one": lora_runs[0], "two": lora_runs[1]})
    assert len(reads) == 1  # one base for both adapters (each run was once also loaded merged first: 3 reads)
    reads.clear()
    load_models({"one": lora_runs[0]})
    assert len(reads) == 1  # alone: merged onto its own copy, as before
