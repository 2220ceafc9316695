"""The typed Task of each kind, the column spec of each kind, and loading ranking and generation files: the row
checks (place, value, fix; read = accepted + rejected), cleaning and redaction, formats, and splits.

The files are built from real SMS messages (always present); the HR-scored resume pairs are exercised end to end
in tests/evals/test_ranking.py.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from pydantic import BaseModel, ValidationError

from finesieve.data.errors import ConfigError, DataError
from finesieve.data.load import load_dataset, load_generation_dataset, load_ranking_dataset
from finesieve.data.spec import ColumnSpec, GenerationSpec, RankingSpec, spec_from_dict
from finesieve.data.split import SplitConfig, make_splits
from finesieve.data.task import ClassificationTask, GenerationTask, RankingTask, Task, parse_task, task_from_manifest

# A run manifest's task as train/recipe.py and cascade/build.py write it today.
LEGACY_TASK = {
    "classes": ["hate_speech", "neither", "offensive"],
    "multilabel": False,
    "positive": ["hate_speech"],
    "threshold": 0.31,
    "threshold_source": "best F1 on the validation split",
}
RANKING_SPEC = RankingSpec(
    query_col="query_id",
    candidate_col="message_id",
    query_text_col="query",
    candidate_text_col="message",
    relevance_col="grade",
)
GRADED = RankingTask(relevance="graded", min_grade=0, max_grade=3, relevant_grade=2, k_values=(1, 3))


@pytest.fixture(scope="module")
def sms(sms_csv) -> pd.DataFrame:
    """120 real SMS messages (40 spam), in a fixed order."""
    df = pd.read_csv(sms_csv, dtype=str, keep_default_na=False)
    parts = [df[df["label"] == "spam"].head(40), df[df["label"] == "ham"].head(80)]
    return pd.concat(parts).sample(frac=1.0, random_state=0).reset_index(drop=True)


def pairs_frame(sms: pd.DataFrame) -> pd.DataFrame:
    """Real messages as candidates for two made-up queries: 'find spam' grades spam 3 and ham 0, 'find ham' the
    reverse; 60 messages per query, each message judged for one query."""
    rows = []
    for i, msg in sms.iterrows():
        query = "q-spam" if i % 2 == 0 else "q-ham"
        wanted = "spam" if query == "q-spam" else "ham"
        rows.append(
            {
                "query_id": query,
                "query": f"find {wanted}",
                "message_id": f"m{i}",
                "message": msg["text"],
                "grade": "3" if msg["label"] == wanted else "0",
            }
        )
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- tasks


@pytest.mark.parametrize(
    "task",
    [
        ClassificationTask(classes=("ham", "spam"), positive=("spam",)),
        ClassificationTask(
            classes=("scam", "spam"),
            multilabel=True,
            positive=("scam", "spam"),
            threshold=0.4,
            threshold_source="given",
        ),
        GRADED,
        RankingTask(),
        GenerationTask(metrics=("token_f1", "chrf")),
    ],
)
def test_every_task_kind_round_trips_through_json_and_the_kind_picks_the_class(task):
    saved = json.loads(json.dumps(task.model_dump(mode="json")))
    assert saved["kind"] == task.kind
    back = parse_task(saved)
    assert type(back) is type(task) and back == task


@pytest.mark.parametrize("model", [ClassificationTask, RankingTask, GenerationTask, RankingSpec, GenerationSpec])
def test_every_field_of_every_task_and_spec_has_a_description(model):
    missing = [name for name, f in model.model_fields.items() if not f.description]
    assert missing == []


def test_each_kind_names_its_metrics():
    assert ClassificationTask(classes=("a", "b"), positive=("b",)).metrics == (
        "roc_auc",
        "pr_auc",
        "precision",
        "recall",
        "f1",
    )
    assert GRADED.metrics == ("ndcg@1", "ndcg@3", "map", "mrr", "precision@1", "precision@3", "recall@1", "recall@3")
    assert GenerationTask().metrics == ("exact_match", "token_f1", "chrf", "rouge_l")


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"classes": ["ham", "spam"], "positive": ["scam"]}, "positive names ['scam'], which are not in classes"),
        ({"classes": ["spam"], "positive": ["spam"]}, "a single-label task needs at least two classes"),
        ({"classes": ["a", "b", "a"], "positive": ["a"]}, "classes lists ['a'] more than once"),
        ({"classes": ["a", "b"], "positive": []}, "positive is empty"),
        (
            {"classes": ["a", "b"], "positive": ["b"], "threshold": 1.5, "threshold_source": "given"},
            "expected a score in [0, 1]",
        ),
        ({"classes": ["a", "b"], "positive": ["b"], "threshold": 0.5}, "set both or neither"),
    ],
)
def test_classification_task_refuses_inconsistent_fields_naming_them(fields, message):
    with pytest.raises(ValidationError, match=message.replace("[", r"\[").replace("]", r"\]")):
        ClassificationTask(**fields)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"relevance": "binary", "max_grade": 7}, "relevance='binary' takes grades 0 and 1"),
        (
            {"relevance": "graded", "min_grade": 7, "max_grade": 1, "relevant_grade": 5},
            "min_grade=7 is not below max_grade=1",
        ),
        (
            {"relevance": "graded", "min_grade": 1, "max_grade": 7, "relevant_grade": 1},
            "relevant_grade=1 must lie above min_grade=1",
        ),
        ({"relevance": "graded", "min_grade": 1, "max_grade": 7, "relevant_grade": 8}, "at most max_grade=7"),
        ({"k_values": [0, 5]}, "each cut-off is a number of top candidates"),
        ({"k_values": [5, 5]}, "k_values lists \\[5\\] more than once"),
        ({"k_values": []}, "k_values is empty"),
    ],
)
def test_ranking_task_refuses_inconsistent_grades_and_cutoffs(fields, message):
    with pytest.raises(ValidationError, match=message):
        RankingTask(**fields)


def test_generation_task_refuses_unknown_or_repeated_metrics():
    with pytest.raises(ValidationError, match="exact_match"):
        GenerationTask(metrics=("bleu",))
    with pytest.raises(ValidationError, match="more than once"):
        GenerationTask(metrics=("chrf", "chrf"))


def test_task_as_a_field_of_another_model_picks_its_class_by_kind():
    """How a typed run manifest holds its task: `task: Task`."""

    class Manifest(BaseModel):
        task: Task

    assert Manifest.model_validate({"task": GRADED.model_dump(mode="json")}).task == GRADED
    assert isinstance(Manifest.model_validate({"task": {"kind": "generation"}}).task, GenerationTask)
    with pytest.raises(ValidationError, match="k_value"):
        Manifest.model_validate({"task": {"kind": "ranking", "k_value": [5]}})


def test_parse_task_names_a_misspelt_setting_and_an_unknown_kind():
    with pytest.raises(ConfigError, match="unknown setting k_value \\(did you mean k_values\\?\\)"):
        parse_task({"kind": "ranking", "k_value": [5]})
    with pytest.raises(ConfigError, match="kind='retrieval' is not a task kind"):
        parse_task({"kind": "retrieval"})


def test_task_from_manifest_reads_todays_untyped_task_and_typed_ones():
    task = task_from_manifest(LEGACY_TASK)
    assert task == ClassificationTask(
        classes=("hate_speech", "neither", "offensive"),
        positive=("hate_speech",),
        threshold=0.31,
        threshold_source="best F1 on the validation split",
    )
    # Written without a chosen threshold, or before multilabel was recorded: defaults, not an error.
    bare = task_from_manifest(
        {"classes": ["ham", "spam"], "positive": ["spam"], "threshold": None, "threshold_source": None}
    )
    assert bare.threshold is None and bare.multilabel is False
    assert task_from_manifest(GRADED.model_dump(mode="json")) == GRADED
    assert task_from_manifest(task.model_dump(mode="json")) == task


def test_task_from_manifest_refuses_a_broken_task_with_the_fields_named():
    with pytest.raises(ConfigError, match="run manifest task: .*positive names \\['spam'\\]"):
        task_from_manifest({**LEGACY_TASK, "positive": ["spam"]})
    with pytest.raises(ConfigError, match="unknown setting positve \\(did you mean positive\\?\\)"):
        task_from_manifest({"classes": ["a", "b"], "positve": ["b"]})


def test_with_threshold_is_validated_like_a_new_task():
    task = ClassificationTask(classes=("ham", "spam"), positive=("spam",))
    chosen = task.with_threshold(0.42, "best F1 on the validation split")
    assert (chosen.threshold, chosen.threshold_source, task.threshold) == (
        0.42,
        "best F1 on the validation split",
        None,
    )
    with pytest.raises(ValidationError, match="expected a score in"):
        task.with_threshold(2.0, "given")


# ----------------------------------------------------------------------------- column specs


def test_ranking_and_generation_specs_refuse_a_column_in_two_roles_naming_both():
    with pytest.raises(ValidationError, match="column 'id' is both query_col and candidate_col"):
        RankingSpec(query_col="id", candidate_col="id")
    with pytest.raises(ValidationError, match="column 'text' is both input_col and reference_col"):
        GenerationSpec(input_col="text", reference_col="text")
    with pytest.raises(ValidationError, match="column 'grade' is both relevance_col and meta_cols"):
        RankingSpec(relevance_col="grade", meta_cols=("grade",))
    # ColumnSpec keeps its own message, which its callers and tests know.
    with pytest.raises(ValidationError, match="are mapped to more than one role"):
        ColumnSpec(text_col="label")


def test_spec_from_dict_picks_the_kind_and_defaults_to_classification():
    assert spec_from_dict({"text_col": "message", "label_cols": ["flag"]}) == ColumnSpec(
        text_col="message", label_cols=("flag",)
    )
    assert spec_from_dict(RANKING_SPEC.model_dump(mode="json")) == RANKING_SPEC
    assert spec_from_dict({"kind": "generation", "input_col": "resume"}) == GenerationSpec(input_col="resume")
    with pytest.raises(ConfigError, match="unknown setting query_column \\(did you mean query_col\\?\\)"):
        spec_from_dict({"kind": "ranking", "query_column": "job"})


def test_missing_ranking_column_is_named_with_a_suggestion(tmp_path, sms):
    path = tmp_path / "pairs.csv"
    pairs_frame(sms).rename(columns={"grade": "grades"}).to_csv(path, index=False)
    with pytest.raises(
        DataError,
        match="'grade' \\(did you mean 'grades'\\?\\) not found.*RankingSpec settings query_col / candidate_col",
    ):
        load_ranking_dataset(path, RANKING_SPEC)


# ----------------------------------------------------------------------------- loading ranking files


def test_ranking_file_loads_pairs_with_grades_and_cleaned_redacted_texts(tmp_path, sms):
    frame = pairs_frame(sms)
    frame.loc[0, "message"] = "Call me at jane.doe@example.com tonight"
    path = tmp_path / "pairs.csv"
    frame.to_csv(path, index=False)
    ds = load_ranking_dataset(path, RANKING_SPEC, task=GRADED)
    assert len(ds) == 120 and ds.n_queries == 2 and ds.rejected.total == 0
    assert list(ds.frame.columns) == [
        "id",
        "row",
        "query",
        "candidate",
        "query_text_raw",
        "query_text",
        "text_raw",
        "text",
        "relevance",
    ]
    assert ds.relevance.dtype == float and sorted(set(ds.relevance)) == [0.0, 3.0]
    assert (ds.relevance == frame["grade"].astype(float).to_numpy()).all()
    assert ds.frame.loc[0, "text"] == "Call me at <EMAIL> tonight"
    assert ds.frame.loc[0, "text_raw"] == "Call me at jane.doe@example.com tonight"
    assert ds.redaction_counts.get("EMAIL", 0) >= 1
    assert json.loads(ds.ids[0]) == ["q-spam", "m0"]


def test_bad_pairs_are_rejected_with_place_value_and_fix_and_nothing_is_lost(tmp_path, sms):
    frame = pairs_frame(sms)
    frame.loc[3, "grade"] = "high"  # not a number
    frame.loc[5, "grade"] = "9"  # outside the task's 0-3
    frame.loc[7, "message_id"] = ""  # no candidate id
    frame.loc[9, "query"] = "find something else"  # q-ham's text differs from its first row's
    repeated = frame.iloc[[10]]  # the same (query, candidate) pair again
    frame = pd.concat([frame, repeated], ignore_index=True)
    path, rejects = tmp_path / "pairs.csv", tmp_path / "rejects.jsonl"
    frame.to_csv(path, index=False)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write('q-spam,find spam,m999,"a message",3,extra\n')  # one field too many
    ds = load_ranking_dataset(path, RANKING_SPEC, task=GRADED, rejects_path=rejects)

    n_read = len(frame) + 1
    assert len(ds) + ds.rejected.total == n_read
    assert ds.rejected.counts == {
        "bad_relevance": 2,
        "missing_candidate": 1,
        "query_text_mismatch": 1,
        "duplicate_pair": 1,
        "bad_field_count": 1,
    }
    by_row = {e["row"]: e for e in ds.rejected.examples}
    assert by_row[4]["column"] == "grade" and by_row[4]["value"] == "high" and "must be a number" in by_row[4]["fix"]
    assert by_row[6]["value"] == "9" and "grades run from 0 to 3" in by_row[6]["fix"]
    assert by_row[8]["column"] == "message_id" and by_row[8]["problem"] == "missing_candidate"
    assert by_row[10]["column"] == "query" and "other text at row 2" in by_row[10]["fix"]
    assert by_row[121]["problem"] == "duplicate_pair" and "at row 11" in by_row[121]["fix"]
    assert all(e["file"] == str(path) for e in ds.rejected.examples)
    written = [json.loads(line) for line in rejects.read_text(encoding="utf-8").splitlines()]
    assert sorted(r["row"] for r in written) == [4, 6, 8, 10, 121, 122]


def test_without_a_task_any_number_is_a_grade_but_text_is_not(tmp_path, sms):
    frame = pairs_frame(sms).head(6)
    frame.loc[0, "grade"], frame.loc[1, "grade"], frame.loc[2, "grade"] = "12.5", " 2 ", "nan"
    path = tmp_path / "pairs.csv"
    frame.to_csv(path, index=False)
    ds = load_ranking_dataset(path, RANKING_SPEC)
    assert ds.relevance[:2].tolist() == [12.5, 2.0]
    assert ds.rejected.counts == {"bad_relevance": 1}
    with pytest.raises(DataError, match="(?s)strict mode.*bad_relevance"):
        load_ranking_dataset(path, RANKING_SPEC, strict=True)


def test_binary_relevance_takes_only_0_and_1_and_jsonl_numbers_and_csv_text_hash_alike(tmp_path, sms):
    frame = pairs_frame(sms).head(20)
    frame["grade"] = (frame["grade"] == "3").astype(int).astype(str)
    csv_path, jsonl_path = tmp_path / "pairs.csv", tmp_path / "pairs.jsonl"
    frame.to_csv(csv_path, index=False)
    with open(jsonl_path, "w", encoding="utf-8") as fh:
        for rec in frame.to_dict("records"):
            fh.write(json.dumps({**rec, "grade": int(rec["grade"])}) + "\n")
    binary = RankingTask()
    from_csv = load_ranking_dataset(csv_path, RANKING_SPEC, task=binary)
    from_jsonl = load_ranking_dataset(jsonl_path, RANKING_SPEC, task=binary)
    assert from_csv.content_hash == from_jsonl.content_hash
    with open(jsonl_path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({**frame.iloc[0].to_dict(), "message_id": "new", "grade": 2}) + "\n")
        fh.write(json.dumps({**frame.iloc[0].to_dict(), "message_id": "new2", "grade": True}) + "\n")
    more = load_ranking_dataset(jsonl_path, RANKING_SPEC, task=binary)
    assert more.rejected.counts == {"bad_relevance": 2}
    assert "binary relevance is 0 or 1" in more.rejected.examples[0]["fix"]


def test_ranking_split_keeps_each_query_whole_and_is_reproducible(tmp_path, sms):
    """Six queries of 20 messages: every query's pairs land in one split, the same split from a shuffled file."""
    frame = pairs_frame(sms)
    frame["query_id"] = [f"q{i % 6}" for i in range(len(frame))]
    frame["query"] = [f"query number {i % 6}" for i in range(len(frame))]
    path, shuffled = tmp_path / "pairs.csv", tmp_path / "shuffled.csv"
    frame.to_csv(path, index=False)
    frame.sample(frac=1.0, random_state=1).to_csv(shuffled, index=False)
    config = SplitConfig(test_frac=0.2, val_frac=0.2, seed=3)
    splits = make_splits(load_ranking_dataset(path, RANKING_SPEC), config)
    again = make_splits(load_ranking_dataset(shuffled, RANKING_SPEC), config)
    where = pd.DataFrame({"query": splits.source.queries, "split": splits.assignment})
    assert (where.groupby("query")["split"].nunique() == 1).all()
    assert {name: n // 20 for name, n in splits.sizes().items()} == {"train": 4, "val": 1, "test": 1}
    assert again.split_hash == splits.split_hash
    summary = splits.to_dict()
    assert summary["kind"] == "ranking" and summary["summaries"]["test"]["n_queries"] == 1
    assert summary["candidates_in_several_splits"] == 0 and "class_counts" not in summary


# ----------------------------------------------------------------------------- loading generation files


def test_generation_file_loads_checks_both_texts_and_splits_like_classification(tmp_path, sms):
    frame = pd.DataFrame(
        {
            "sms_id": [f"s{i}" for i in range(len(sms))],
            "message": sms["text"],
            "reply": np.where(sms["label"] == "spam", "This is spam.", "Not spam."),
        }
    )
    frame.loc[4, "reply"] = ""  # an empty reference (a CSV cell cannot be missing, only empty)
    frame.loc[6, "sms_id"] = "s5"  # an id used before
    path = tmp_path / "examples.csv"
    frame.to_csv(path, index=False)
    spec = GenerationSpec(input_col="message", reference_col="reply", id_col="sms_id")
    ds = load_generation_dataset(path, spec)
    assert len(ds) + ds.rejected.total == 120 and ds.rejected.counts == {"empty_text": 1, "duplicate_id": 1}
    assert {e["column"] for e in ds.rejected.examples} == {"reply", "sms_id"}
    assert list(ds.frame.columns) == ["id", "row", "text_raw", "text", "reference_raw", "reference"]
    assert ds.references[0] in {"This is spam.", "Not spam."}
    splits = make_splits(ds, SplitConfig(test_frac=0.2, val_frac=0.1, seed=0))
    assert sum(splits.sizes().values()) == len(ds) and splits.sizes()["test"] == round(0.2 * len(ds))
    assert not set(splits.ids("test")) & set(splits.ids("train"))
    assert make_splits(ds, SplitConfig(test_frac=0.2, val_frac=0.1, seed=0)).split_hash == splits.split_hash


def test_classification_loading_is_unchanged_by_the_other_kinds(tmp_path, sms):
    """The classification loader still builds its frame and classes as before (a guard beside test_load.py)."""
    path = tmp_path / "sms.csv"
    sms.to_csv(path, index=False)
    ds = load_dataset(path, ColumnSpec())
    assert list(ds.frame.columns) == ["id", "row", "text_raw", "text", "labels"]
    assert ds.classes == ["ham", "spam"] and len(ds) == 120
