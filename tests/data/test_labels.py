"""Label hygiene: labels that differ only in case, spaces, '_' or '-' never become separate classes. They are
refused with every spelling listed, or mapped to one spelling with normalise_labels, and the mapping is kept."""

import json

import pandas as pd
import pytest

from finesieve.data.errors import DataError
from finesieve.data.load import load_dataset, validate_file
from finesieve.data.spec import ColumnSpec
from finesieve.data.validate import label_key, label_variants, suspicious_labels

SPEC = ColumnSpec(text_col="text", label_cols=("label",))


def test_label_key_sets_spelling_aside_but_keeps_signs_and_words():
    assert {
        label_key(s)
        for s in [
            "hate_speech",
            "Hate_Speech",
            "hate speech",
            "HATE-SPEECH",
            " hate  speech ",
            "hate_-_speech",
            "_hate_speech_",
        ]
    } == {"hate_speech"}
    assert label_key("-1") != label_key("1")
    assert label_key("spma") != label_key("spam")
    assert label_variants({"hate_speech": 1144, "Hate_Speech": 3, "offensive": 15352}) == {"Hate_Speech": "hate_speech"}
    # A variant is a variant whatever its count; a rare label that is merely close is a typo instead.
    assert label_variants({"Spam": 600, "spam": 598, "ham": 3861}) == {"spam": "Spam"}
    assert suspicious_labels({"spam": 598, "ham": 3861, "spma": 1, "Spam": 1}) == {"spma": "spam"}


@pytest.fixture()
def variant_csv(tmp_path, davidson_slice):
    """The real Davidson slice with four hate_speech rows and one neither row spelled otherwise."""
    df = davidson_slice[["text", "label"]].copy()
    hate = df.index[df["label"] == "hate_speech"][:4]
    df.loc[hate, "label"] = ["Hate_Speech", "hate speech", "HATE_SPEECH", "Hate_Speech"]
    neither = df.index[df["label"] == "neither"][0]
    df.loc[neither, "label"] = "Neither"
    path = tmp_path / "variants.csv"
    df.to_csv(path, index=False)
    rows = {
        "Hate_Speech": int(hate[0]) + 1,
        "hate speech": int(hate[1]) + 1,
        "HATE_SPEECH": int(hate[2]) + 1,
        "Neither": int(neither) + 1,
    }  # 1-based data rows
    return path, df, rows


def test_case_and_space_variants_are_refused_with_every_spelling_its_count_and_first_row(variant_csv):
    path, df, rows = variant_csv
    for call in (lambda: load_dataset(path, SPEC), lambda: validate_file(path, SPEC)):
        with pytest.raises(DataError) as err:
            call()
        message = str(err.value)
        assert str(path) in message and "column 'label'" in message
        first_hate = int(df.index[df["label"] == "hate_speech"][0]) + 1
        first_neither = int(df.index[df["label"] == "neither"][0]) + 1
        assert (
            f"'hate_speech' (296 rows, first at row {first_hate}) = 'HATE_SPEECH' (1 row, first at row "
            f"{rows['HATE_SPEECH']}) = 'Hate_Speech' (2 rows, first at row {rows['Hate_Speech']}) = "
            f"'hate speech' (1 row, first at row {rows['hate speech']})"
        ) in message
        assert (
            f"'neither' (499 rows, first at row {first_neither}) = 'Neither' (1 row, first at row {rows['Neither']})"
        ) in message
        assert "--normalise-labels" in message and "most frequent spelling" in message


def test_normalise_labels_merges_variants_and_records_the_mapping(variant_csv, davidson_slice, tmp_path):
    path, _, _ = variant_csv
    mapping = {
        "Hate_Speech": "hate_speech",
        "hate speech": "hate_speech",
        "HATE_SPEECH": "hate_speech",
        "Neither": "neither",
    }
    ds = load_dataset(path, SPEC, normalise_labels=True)
    assert ds.classes == ["hate_speech", "neither", "offensive"]
    assert ds.class_counts() == davidson_slice["label"].value_counts().to_dict()
    assert ds.label_normalisation == mapping and ds.label_normalised_rows == 5
    assert len(ds) == 2000 and ds.rejected.total == 0
    assert ds.subset([0, 1]).label_normalisation == mapping

    rejects = tmp_path / "rejects.jsonl"
    report = validate_file(path, SPEC, normalise_labels=True, rejects_path=rejects)
    assert report.label_normalisation == mapping and report.n_rows_normalised == 5
    assert dict(report.label_counts) == davidson_slice["label"].value_counts().to_dict()
    assert (report.n_rows, report.n_accepted, sum(report.rejected.values())) == (2000, 2000, 0)
    as_dict = report.to_dict()
    assert as_dict["label_normalisation"] == mapping and as_dict["n_rows_normalised"] == 5
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert any(
        "'HATE_SPEECH' -> 'hate_speech'" in line and "5 row(s) changed" in line for line in report.summary_lines()
    )


def test_a_file_spelled_one_way_has_an_empty_mapping(tmp_path, davidson_slice):
    path = tmp_path / "clean.csv"
    davidson_slice[["text", "label"]].head(300).to_csv(path, index=False)
    ds = load_dataset(path, SPEC, normalise_labels=True)
    assert ds.label_normalisation == {} and ds.label_normalised_rows == 0
    assert validate_file(path, SPEC).label_normalisation == {}


def test_variants_of_declared_classes_take_the_class_spelling(tmp_path, sms_csv):
    df = pd.read_csv(sms_csv, dtype=str, keep_default_na=False).head(400)
    df["label"] = df["label"].map({"spam": "SPAM", "ham": "ham"})
    df.loc[5, "label"] = "Ham "
    df.loc[6, "label"] = "eggs"  # matches no class: an unknown_label row, as before
    path = tmp_path / "classes.csv"
    df.to_csv(path, index=False)
    spec = ColumnSpec(classes=("ham", "spam"))
    with pytest.raises(DataError) as err:
        load_dataset(path, spec)
    n_spam = int((df["label"] == "SPAM").sum())
    first_spam = int(df.index[df["label"] == "SPAM"][0]) + 1
    assert f"'spam' (in --classes, no row) = 'SPAM' ({n_spam} rows, first at row {first_spam})" in str(err.value)
    assert "its spelling in --classes" in str(err.value)
    # Surrounding spaces were always stripped, so 'Ham ' is a case variant: row 6.
    assert "'Ham' (1 row, first at row 6)" in str(err.value)

    ds = load_dataset(path, spec, normalise_labels=True)
    assert ds.label_normalisation == {"SPAM": "spam", "Ham": "ham"}
    assert ds.label_normalised_rows == n_spam + 1
    assert ds.class_counts() == {"ham": 400 - n_spam - 1, "spam": n_spam}
    assert ds.rejected.counts == {"unknown_label": 1} and ds.rejected.examples[0]["row"] == 7
    report = validate_file(path, spec, normalise_labels=True)
    assert report.n_rows == 400 == report.n_accepted + sum(report.rejected.values())
    assert report.n_rows_normalised == n_spam + 1


def test_multilabel_parts_are_normalised_and_repeats_merged(tmp_path):
    path = tmp_path / "ml.csv"
    pd.DataFrame(
        {
            "text": ["pay me on venmo", "you idiot", "send gift cards", "gift cards, venmo, now", "great job"],
            "labels": ["off_platform|scam", "harassment", "Scam", "scam|SCAM|Off-Platform", "harassment"],
        }
    ).to_csv(path, index=False)
    spec = ColumnSpec(label_cols=("labels",), label_sep="|")
    with pytest.raises(DataError, match=r"'scam' \(2 rows, first at row 1\) = 'SCAM' \(1 row, first at row 4\)"):
        load_dataset(path, spec)
    ds = load_dataset(path, spec, normalise_labels=True)
    assert ds.labels == [
        ("off_platform", "scam"),
        ("harassment",),
        ("scam",),
        ("off_platform", "scam"),
        ("harassment",),
    ]
    assert ds.label_normalisation == {"Off-Platform": "off_platform", "SCAM": "scam", "Scam": "scam"}
    assert ds.label_normalised_rows == 2
    report = validate_file(path, spec, normalise_labels=True)
    assert report.n_rows_normalised == 2
    assert dict(report.label_counts) == {"off_platform": 2, "scam": 3, "harassment": 2}


def test_a_typo_is_still_rejected_beside_normalised_variants(tmp_path, sms_csv):
    df = pd.read_csv(sms_csv, dtype=str, keep_default_na=False).head(1500)
    df.loc[3, "label"] = "spma"
    df.loc[10, "label"] = "Ham"
    path = tmp_path / "typo.csv"
    df.to_csv(path, index=False)
    ds = load_dataset(path, SPEC, normalise_labels=True)
    assert ds.classes == ["ham", "spam"] and ds.label_normalisation == {"Ham": "ham"}
    assert ds.rejected.counts == {"unknown_label": 1} and ds.rejected.examples[0]["row"] == 4
    rejects = tmp_path / "rejects.jsonl"
    report = validate_file(path, SPEC, normalise_labels=True, rejects_path=rejects)
    assert (report.n_rows, report.n_accepted, dict(report.rejected)) == (1500, 1499, {"unknown_label": 1})
    saved = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert [(r["row"], r["label"], r["problems"][0]["problem"]) for r in saved] == [(4, "spma", "unknown_label")]


def test_classes_declared_in_two_spellings_are_refused(tmp_path):
    path = tmp_path / "d.csv"
    pd.DataFrame({"text": ["a", "b"], "label": ["spam", "ham"]}).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"--classes names the same class in several spellings \[\['spam', 'Spam'\]\]"):
        load_dataset(path, ColumnSpec(classes=("spam", "Spam", "ham")))
