"""The data review's annotator-agreement part, on real Davidson rows with their vote counts."""

import json

import numpy as np

from finesieve.data.load import load_dataset
from finesieve.data.review import review, summary_lines, write_review
from finesieve.data.spec import ColumnSpec

VOTES = {"hate_speech": "hate_speech", "offensive": "offensive_language", "neither": "neither"}


def test_annotator_agreement_from_vote_columns(tmp_path, davidson_slice):
    df = davidson_slice.iloc[:600]
    path = tmp_path / "votes.csv"
    df.to_csv(path, index=False)
    ds = load_dataset(path, ColumnSpec(vote_cols=VOTES))
    result = review(ds, noise_check=False)
    a = result["annotator_agreement"]
    counts = df[["hate_speech", "offensive_language", "neither"]].astype(int)
    column = df["label"].map({"hate_speech": "hate_speech", "offensive": "offensive_language", "neither": "neither"})
    majority = np.array([counts.iat[i, counts.columns.get_loc(c)] for i, c in enumerate(column)])
    agreement = majority / df["count"].astype(int).to_numpy()
    assert a["n_with_votes"] == 600
    np.testing.assert_allclose(a["share_unanimous"], (agreement == 1).mean())
    hate = (df["label"] == "hate_speech").to_numpy()
    np.testing.assert_allclose(a["per_class"]["hate_speech"]["mean_agreement"], agreement[hate].mean())
    # Hate speech is the class annotators split on most in this data set.
    assert a["per_class"]["hate_speech"]["mean_agreement"] < a["per_class"]["offensive"]["mean_agreement"]
    disputed = [m["agreement"] for m in a["most_disputed"]]
    assert disputed == sorted(disputed) and disputed[0] == agreement.min()
    assert any(line.strip().startswith("annotators:") for line in summary_lines(result))
    html = write_review(result, ds, tmp_path / "review.html").read_text()
    assert "Annotator agreement" in html and "Most disputed messages" in html
    saved = json.loads((tmp_path / "review.json").read_text())
    assert saved["annotator_agreement"]["n_with_votes"] == 600 and "_agreement" not in saved


def test_no_vote_columns_no_agreement_section(tmp_path, davidson_slice):
    path = tmp_path / "plain.csv"
    davidson_slice.iloc[:300][["text", "label"]].to_csv(path, index=False)
    result = review(load_dataset(path, ColumnSpec()), noise_check=False)
    assert "annotator_agreement" not in result
    assert (
        "Annotator agreement"
        not in write_review(result, load_dataset(path, ColumnSpec()), tmp_path / "r.html").read_text()
    )
