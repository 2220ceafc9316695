"""Group-aware stratified splits on real Davidson tweets: fractions, strata, reproducibility, no leakage."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from pydantic import ValidationError

from finesieve.data.dataset import from_records
from finesieve.data.dedupe import _dedupe_key, check_leakage, near_duplicate_clusters
from finesieve.data.errors import ConfigError, DataError
from finesieve.data.split import (
    SplitConfig,
    exclude_near_duplicates,
    load_splits,
    make_splits,
    read_split_members,
    text_hash,
)


def typo(text: str) -> str:
    """A near-duplicate: one character in the middle dropped."""
    mid = len(text) // 2
    return text[:mid] + text[mid + 1 :]


def long_plain(texts: list[str], n: int) -> list[int]:
    """Rows whose normalised text is long (a typo keeps Jaccard well above 0.8) and free of HTML entities
    (a typo inside '&#128514;' would leave a stray number behind)."""
    return [i for i, t in enumerate(texts) if "&" not in t and len(_dedupe_key(t)) >= 100][:n]


@pytest.fixture(scope="module")
def dataset(davidson_slice):
    return from_records(davidson_slice["text"].tolist(), davidson_slice["label"].tolist())


@pytest.fixture(scope="module")
def splits(dataset):
    return make_splits(dataset, SplitConfig(test_frac=0.1, val_frac=0.1, seed=0))


@pytest.fixture(scope="module")
def with_copies(davidson_slice):
    """The slice plus 3 near-duplicates (typo, upper case, retweet) of each of its first 100 long tweets."""
    texts = davidson_slice["text"].tolist()
    labels = davidson_slice["label"].tolist()
    picked = long_plain(texts, 100)
    assert len(picked) == 100
    for i in picked:
        for copy in (typo(texts[i]), texts[i].upper(), "RT @copy_cat: " + texts[i]):
            texts.append(copy)
            labels.append(labels[i])
    return from_records(texts, labels), picked


def test_fractions_are_close_to_the_config(splits, dataset):
    sizes = splits.sizes()
    assert sum(sizes.values()) == len(dataset)
    assert abs(sizes["test"] / len(dataset) - 0.1) < 0.01
    assert abs(sizes["val"] / len(dataset) - 0.1) < 0.01


def test_class_proportions_match_in_every_split(splits, dataset):
    overall = {c: n / len(dataset) for c, n in dataset.class_counts().items()}
    for name, counts in splits.class_counts().items():
        total = sum(counts.values())
        for c, share in overall.items():
            assert abs(counts[c] / total - share) < 0.02, (name, c)


def test_same_seed_same_split_and_different_seed_different_split(dataset, splits):
    again = make_splits(dataset, SplitConfig(seed=0))
    assert again.split_hash == splits.split_hash
    assert (again.assignment == splits.assignment).all()
    assert make_splits(dataset, SplitConfig(seed=1)).split_hash != splits.split_hash


def test_shuffled_row_order_gives_the_same_assignment_by_id(dataset, splits):
    order = np.random.default_rng(7).permutation(len(dataset))
    frame = dataset.frame.iloc[order]
    shuffled = from_records(frame["text"].tolist(), [lbl[0] for lbl in frame["labels"]], ids=frame["id"].tolist())
    assert shuffled.content_hash != dataset.content_hash  # row order is part of the content hash...
    other = make_splits(shuffled, SplitConfig(seed=0))
    assert other.split_hash == splits.split_hash  # ...but not of the split
    by_id = dict(zip(dataset.ids, splits.assignment))
    assert all(by_id[i] == s for i, s in zip(shuffled.ids, other.assignment))


def test_near_duplicates_never_straddle_splits(with_copies):
    data, picked = with_copies
    result = make_splits(data, SplitConfig(test_frac=0.2, val_frac=0.1, seed=3))
    clusters = near_duplicate_clusters(data.texts)
    report = check_leakage(clusters, result.assignment, protected=("train", "val", "test"))
    assert report.n_leaking_clusters == 0
    n_base = len(data) - 3 * len(picked)
    for k, i in enumerate(picked):
        copies = result.assignment[n_base + 3 * k : n_base + 3 * (k + 1)]
        assert (copies == result.assignment[i]).all()
    # Some copied groups did land in test: the check above is not vacuous.
    assert any(result.assignment[i] == "test" for i in picked)


def test_group_col_keeps_each_thread_in_one_split(davidson_slice):
    data = from_records(davidson_slice["text"].tolist(), davidson_slice["label"].tolist())
    rng = np.random.default_rng(0)
    data.frame["thread"] = [f"t{k}" for k in rng.integers(0, 300, size=len(data))]
    data.frame.loc[:9, "thread"] = ""  # rows without a thread are not lumped together
    result = make_splits(data, SplitConfig(group_col="thread", seed=0))
    per_thread = data.frame.assign(split=result.assignment).groupby("thread")["split"].nunique()
    assert (per_thread.drop("") == 1).all()
    sizes = result.sizes()
    assert 0.05 < sizes["test"] / len(data) < 0.15  # whole threads of ~7 rows still get near the target


def test_unknown_group_col_names_the_column_and_the_fix(dataset):
    with pytest.raises(ConfigError, match="group_col='thread'.*not a column"):
        make_splits(dataset, SplitConfig(group_col="thread"))


@pytest.mark.parametrize(
    "kwargs, fields",
    [
        ({"test_frac": 0.0}, ["test_frac"]),
        ({"test_frac": 1.0}, ["test_frac"]),
        ({"val_frac": -0.1}, ["val_frac"]),
        ({"test_frac": 0.6, "val_frac": 0.5}, ["test_frac", "val_frac"]),
        ({"near_dup_threshold": 1.5}, ["near_dup_threshold"]),
        ({"test_fraction": 0.2}, ["test_fraction"]),  # unknown keys are refused
    ],
)
def test_config_errors_name_the_fields(kwargs, fields):
    with pytest.raises(ValidationError) as err:
        SplitConfig(**kwargs)
    for name in fields:
        assert name in str(err.value)


def test_splits_give_ids_subdatasets_and_a_summary(splits, dataset):
    test = splits.dataset("test")
    assert len(test) == splits.sizes()["test"]
    assert test.ids == splits.ids("test")
    assert set(splits.ids("train")) | set(splits.ids("val")) | set(splits.ids("test")) == set(dataset.ids)
    d = splits.to_dict()
    json.dumps(d)
    assert d["seed"] == 0 and d["test_frac"] == 0.1 and d["val_frac"] == 0.1
    assert d["data_hash"] == dataset.content_hash and d["split_hash"] == splits.split_hash
    assert set(d["class_counts"]["test"]) == {"hate_speech", "neither", "offensive"}
    with pytest.raises(ConfigError, match="use one of train, val, test"):
        splits.ids("dev")


def test_save_and_load_round_trip(splits, dataset, tmp_path):
    path = splits.save(tmp_path / "run" / "splits.json")
    saved = json.loads(path.read_text())
    assert sorted(saved["ids"]["test"]) == sorted(splits.ids("test"))
    assert saved["split_hash"] == splits.split_hash and "finesieve_version" in saved

    loaded = load_splits(path, dataset)
    assert loaded.split_hash == splits.split_hash
    assert (loaded.assignment == splits.assignment).all()
    assert loaded.config == splits.config


def test_load_refuses_changed_data(splits, davidson_slice, tmp_path):
    path = splits.save(tmp_path / "splits.json")
    texts = davidson_slice["text"].tolist()
    texts[5] = texts[5] + " (edited)"
    changed = from_records(texts, davidson_slice["label"].tolist())
    with pytest.raises(DataError, match="content hash.*Fix: load the exact file"):
        load_splits(path, changed)


def test_multilabel_split_lumps_rare_combinations(davidson_slice):
    as_tuples = {"hate_speech": ("hate", "offensive"), "offensive": ("offensive",), "neither": ()}
    labels = [as_tuples[lbl] for lbl in davidson_slice["label"]]
    labels[0] = ("hate", "spam")  # a combination seen once: it cannot be stratified on its own
    data = from_records(davidson_slice["text"].tolist(), labels, multilabel=True)
    result = make_splits(data, SplitConfig(seed=0))
    sizes = result.sizes()
    assert abs(sizes["test"] / len(data) - 0.1) < 0.01
    test_counts = result.dataset("test").class_counts()
    assert abs(test_counts["hate"] / sizes["test"] - 300 / 2000) < 0.02


def test_corner_cases_push_their_near_duplicates_out_of_the_data(dataset):
    texts = dataset.texts
    picked = long_plain(texts, 10)
    corner = [typo(texts[i]) for i in picked] + ["a hand-written corner case that matches nothing in the data"]
    kept, n_removed = exclude_near_duplicates(dataset, corner)
    assert kept.dtype == bool and kept.shape == (len(dataset),)
    assert not kept[picked].any()
    # Exactly the picked rows and their exact copies already in the data (10 on this slice): the corner case
    # that matches nothing removes nothing, and no unrelated row goes.
    picked_keys = {_dedupe_key(texts[i]) for i in picked}
    assert np.flatnonzero(~kept).tolist() == [i for i, t in enumerate(texts) if _dedupe_key(t) in picked_keys]
    assert n_removed == int((~kept).sum())
    assert len(dataset.subset(kept)) == len(dataset) - n_removed


def test_saved_split_records_a_text_hash_per_row_and_old_files_still_load(splits, dataset, tmp_path):
    path = splits.save(tmp_path / "splits.json")
    saved = json.loads(path.read_text())
    by_id = dict(zip(dataset.ids, dataset.texts))
    for name in ("train", "val", "test"):
        assert saved["text_hashes"][name] == [text_hash(by_id[i]) for i in saved["ids"][name]]
    assert text_hash("a tweet") == hashlib.sha256(b"a tweet").hexdigest()[:16]
    members = read_split_members(path)
    assert members.data_hash == dataset.content_hash and members.ids["val"] == set(splits.ids("val"))
    assert members.text_hashes["train"] == {text_hash(t) for t in splits.dataset("train").texts}

    del saved["text_hashes"]  # a splits.json written before text hashes were saved
    path.write_text(json.dumps(saved))
    assert (load_splits(path, dataset).assignment == splits.assignment).all()
    old = read_split_members(path)
    assert old.text_hashes is None and old.ids["test"] == set(splits.ids("test"))
