"""`finesieve eval` notes evaluated rows that a run trained on or tuned its threshold on (real Davidson tweets).

A TF-IDF run is trained on 600 rows of the Davidson slice, each with an explicit id. Evaluation files are
built from its saved splits: some training and validation rows under new ids and in another order, plus rows
from outside the slice that the run never saw.
"""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from finesieve.data.load import load_dataset
from finesieve.data.spec import ColumnSpec
from finesieve.data.split import read_split_members, text_hash
from finesieve.evals.side_by_side import run_side_by_side
from finesieve.train.recipe import train_reference

N_RUN_ROWS = 600
SPEC = ColumnSpec(text_col="text", label_cols=("label",), id_col="id")
POSITIVE = ["hate_speech"]


@pytest.fixture(scope="module")
def run_rows(davidson_slice) -> pd.DataFrame:
    rows = davidson_slice.head(N_RUN_ROWS)[["text", "label"]]
    return rows.assign(id=[f"d-{i}" for i in range(len(rows))]).reset_index(drop=True)


@pytest.fixture(scope="module")
def run_dir(run_rows, tmp_path_factory):
    folder = tmp_path_factory.mktemp("overlap")
    run_rows.to_csv(folder / "run_data.csv", index=False)
    dataset = load_dataset(folder / "run_data.csv", SPEC)
    return train_reference("tfidf", dataset, positive=POSITIVE, out=folder / "run", n_boot=0).run_dir


@pytest.fixture(scope="module")
def by_split(run_rows, run_dir) -> dict[str, pd.DataFrame]:
    """The run's rows per saved split, as they are in its data file."""
    members = read_split_members(run_dir / "splits.json")
    return {name: run_rows[run_rows["id"].isin(ids)] for name, ids in members.ids.items()}


@pytest.fixture(scope="module")
def held_out(davidson_csv, davidson_slice, run_dir, tmp_path_factory) -> pd.DataFrame:
    """60 Davidson rows from outside the slice whose cleaned text is in none of the run's splits."""
    everything = pd.read_csv(davidson_csv, dtype=str, keep_default_na=False)
    candidates = everything[~everything["text"].isin(set(davidson_slice["text"]))].head(200)[["text", "label"]]
    candidates = candidates.assign(id=[f"h-{i}" for i in range(len(candidates))])
    path = tmp_path_factory.mktemp("held_out") / "candidates.csv"
    candidates.to_csv(path, index=False)
    known = set().union(*read_split_members(run_dir / "splits.json").text_hashes.values())
    fresh = {
        row_id
        for row_id, text in zip(*(load_dataset(path, SPEC).frame[c] for c in ("id", "text")))
        if text_hash(text) not in known
    }
    return candidates[candidates["id"].isin(fresh)].head(60)


def evaluation_file(folder, parts: list[pd.DataFrame], *, new_ids: bool = True):
    """The rows of `parts` shuffled into one labelled file, with fresh ids `e-N` unless `new_ids` is False."""
    rows = pd.concat(parts).sample(frac=1.0, random_state=3).reset_index(drop=True)
    if new_ids:
        rows = rows.assign(id=[f"e-{i}" for i in range(len(rows))])
    path = folder / "eval.csv"
    rows[["id", "text", "label"]].to_csv(path, index=False)
    return load_dataset(path, SPEC)


def evaluate(run, data):
    return run_side_by_side([str(run)], data, positive=POSITIVE, n_boot=0)


def test_training_and_validation_rows_under_new_ids_are_noted(run_dir, by_split, held_out, tmp_path):
    data = evaluation_file(tmp_path, [by_split["train"].head(30), by_split["val"].head(10), held_out.head(20)])
    result = evaluate(run_dir, data)

    [overlap] = result.overlaps
    assert (overlap.n_evaluated, overlap.n_train, overlap.n_val, overlap.n_seen) == (60, 30, 10, 40)
    assert overlap.compared_by == ["id", "text"]  # both files map an id column; the texts matched, not the ids
    [note] = [n for n in result.notes if "optimistic" in n]
    assert note.startswith(
        f"{run_dir}: 30 of the 60 evaluated rows are in the run's training split and 10 in "
        "its validation split (66.7% of the evaluated rows"
    )
    assert note.endswith("figures on these rows are optimistic; evaluate on held-out data")
    example = overlap.example
    seen_row = data.frame[data.frame["id"] == example["id"]].iloc[0]
    assert example["row"] == seen_row["row"] and example["id"].startswith("e-") and example["split"] == "train"
    assert f"e.g. row {example['row']}, id '{example['id']}', in train" in note
    assert result.comparison["split_overlap"][str(run_dir)]["n_train"] == 30
    assert json.loads(json.dumps(result.comparison["split_overlap"])) == result.comparison["split_overlap"]


def test_fully_held_out_rows_get_no_note(run_dir, held_out, tmp_path):
    result = evaluate(run_dir, evaluation_file(tmp_path, [held_out]))
    [overlap] = result.overlaps
    assert (overlap.n_evaluated, overlap.n_seen) == (len(held_out), 0)
    assert not any("optimistic" in n for n in result.notes)


def test_the_runs_own_data_is_still_evaluated_on_its_test_split_only(run_dir):
    data = load_dataset(run_dir.parent / "run_data.csv", SPEC)  # the very file: same content hash
    result = evaluate(run_dir, data)
    assert "evaluated on their saved test split only" in " ".join(result.notes)
    assert result.overlaps[0].n_seen == 0 and result.overlaps[0].n_evaluated == result.results[0].to_dict()["n"]
    assert not any("optimistic" in n for n in result.notes)


def test_old_splits_file_without_text_hashes_checks_ids_only(run_dir, by_split, held_out, tmp_path):
    old_run = tmp_path / "old_run"
    shutil.copytree(run_dir, old_run)
    payload = json.loads((old_run / "splits.json").read_text())
    del payload["text_hashes"]
    (old_run / "splits.json").write_text(json.dumps(payload, indent=2, sort_keys=True))

    # New ids: nothing can be matched without the text hashes, and nothing breaks.
    renamed = evaluate(old_run, evaluation_file(tmp_path, [by_split["train"].head(30), held_out.head(20)]))
    assert renamed.overlaps[0].compared_by == ["id"] and renamed.overlaps[0].n_seen == 0
    assert not any("optimistic" in n for n in renamed.notes)

    # The run's own ids, in another order: matched by id.
    same_ids = evaluate(
        old_run,
        evaluation_file(
            tmp_path, [by_split["train"].head(25), by_split["val"].head(5), held_out.head(20)], new_ids=False
        ),
    )
    [overlap] = same_ids.overlaps
    assert (overlap.n_train, overlap.n_val, overlap.n_evaluated, overlap.compared_by) == (25, 5, 50, ["id"])
    assert any(n.startswith(f"{old_run}: 25 of the 50 evaluated rows") for n in same_ids.notes)
