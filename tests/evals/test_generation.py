"""Generation metrics on hand-checked cases, and the generation path (load, split, evaluate through the harness)
on small datasets built from real texts.

The datasets here only exercise the path: their "references" are derived from labels (an SMS message's class, a
resume's job family written out) and the "systems" are one-line rules. No figure here is a quality claim.
"""

from __future__ import annotations

import typing

import numpy as np
import pandas as pd
import pytest

from finesieve.data.load import load_generation_dataset
from finesieve.data.spec import GenerationSpec
from finesieve.data.split import SplitConfig, make_splits
from finesieve.data.task import GenerationMetric, GenerationTask
from finesieve.evals.generation import METRICS, chrf, evaluate_generation, exact_match, normalize, rouge_l, token_f1
from finesieve.evals.harness import evaluate_task

# ----------------------------------------------------------------------------- hand-checked metrics


def test_exact_match_compares_normalised_text():
    assert normalize("  Hello,   World! ") == "hello world"
    assert exact_match("Hello, World!", "hello world") == 1.0
    assert exact_match("hello world", "hello, world, again") == 0.0
    assert normalize("l'équipe — «Café»") == "l équipe café"  # Unicode punctuation, accents kept


def test_token_f1_is_the_f1_of_the_bags_of_words():
    # 3 shared words; output 3 words, reference 4: P = 1, R = 3/4, F1 = 6/7.
    assert token_f1("The cat sat.", "the cat sat down") == pytest.approx(6 / 7)
    # Repeats count once each side: 'the the' vs 'the': overlap 1, P = 1/2, R = 1, F1 = 2/3.
    assert token_f1("the the", "the") == pytest.approx(2 / 3)
    assert token_f1("", "") == 1.0 and token_f1("", "x") == 0.0 and token_f1("a", "b") == 0.0


def test_chrf_by_hand():
    # 'abc' vs 'abd': 1-grams share a, b (P = R = 2/3); 2-grams share ab (1/2); 3-grams share nothing (0);
    # 4- to 6-grams exist in neither, so three orders count: P = R = (2/3 + 1/2 + 0) / 3 = 7/18, F = 7/18.
    assert chrf("abc", "abd") == pytest.approx(7 / 18)
    # 'ab' vs 'abc': 1-grams P = 1, R = 2/3; 2-grams P = 1, R = 1/2; 3-grams: the output has none (skipped).
    p, r = 1.0, (2 / 3 + 1 / 2) / 2
    assert chrf("ab", "abc") == pytest.approx(5 * p * r / (4 * p + r))
    assert chrf("a b c", "abc") == 1.0  # whitespace is ignored
    assert chrf("ABC", "abc") == 0.0  # case is kept, as sacrebleu does
    assert chrf("", "abc") == 0.0 and chrf(" ", "") == 1.0


def test_rouge_l_is_the_f1_of_the_longest_common_word_subsequence():
    # LCS 'the cat on the mat' = 5 of 6 words each side.
    assert rouge_l("the cat sat on the mat", "the cat lay on the mat") == pytest.approx(5 / 6)
    # Order matters, unlike token F1: 'b a' vs 'a b' share both words but an LCS of 1.
    assert rouge_l("b a", "a b") == pytest.approx(1 / 2) and token_f1("b a", "a b") == 1.0
    assert rouge_l("Engineering technician", "engineering") == pytest.approx(2 / 3)


def test_the_metrics_implemented_are_those_a_task_can_name():
    assert set(METRICS) == set(typing.get_args(GenerationMetric))


def test_evaluate_generation_refuses_misaligned_or_non_text_outputs():
    with pytest.raises(ValueError, match="2 outputs for 3 references"):
        evaluate_generation(["a", "b", "c"], ["a", "b"])
    with pytest.raises(TypeError, match="output 1 is a NoneType"):
        evaluate_generation(["a", "b"], ["a", None])
    with pytest.raises(TypeError, match="not one string"):
        evaluate_generation(["a"], "a")
    with pytest.raises(ValueError, match="unknown metric"):
        evaluate_generation(["a"], ["a"], metrics=("bleu",))


def test_per_example_scores_mean_and_interval():
    result = evaluate_generation(
        ["yes", "no", "yes", "no"], ["yes", "yes", "yes", "no"], metrics=("exact_match",), n_boot=500
    )
    assert result.per_example["exact_match"].tolist() == [1.0, 0.0, 1.0, 1.0]
    assert result.summary["exact_match"] == 0.75
    lo, hi = result.ci["exact_match"]
    assert lo < 0.75 < hi and {lo, hi} <= {0.0, 0.25, 0.5, 0.75, 1.0}  # means of 4 resampled 0/1 values


# ----------------------------------------------------------------------------- the path on real texts


def test_sms_replies_load_split_and_evaluate_through_the_harness(tmp_path, sms_csv):
    """Input: a real SMS message; reference: 'spam' or 'not spam' written out. System: always answer the most
    common reference of the training split."""
    sms = pd.read_csv(sms_csv, dtype=str, keep_default_na=False).head(300)
    path = tmp_path / "replies.csv"
    pd.DataFrame({"message": sms["text"], "reply": np.where(sms["label"] == "spam", "Spam.", "Not spam.")}).to_csv(
        path, index=False
    )
    ds = load_generation_dataset(path, GenerationSpec(input_col="message", reference_col="reply"))
    assert len(ds) + ds.rejected.total == 300
    splits = make_splits(ds, SplitConfig(test_frac=0.2, val_frac=0.1, seed=0))
    train, test = splits.dataset("train"), splits.dataset("test")
    majority = pd.Series(train.references).mode()[0]
    assert majority == "Not spam."
    result = evaluate_task(GenerationTask(), test, [majority] * len(test), name="majority", n_boot=500)
    share = float(np.mean([r == majority for r in test.references]))
    # Exact and token F1: 1 on the majority's examples; on 'Spam.' the words overlap in 1 of 2: F1 2/3.
    assert result.summary["exact_match"] == pytest.approx(share)
    assert result.summary["token_f1"] == pytest.approx(share + (1 - share) * 2 / 3)
    assert result.per_example["id"].tolist() == test.ids
    assert result.to_dict()["n"] == len(test)
    for metric in GenerationTask().metrics:
        lo, hi = result.ci[metric]
        assert lo <= result.summary[metric] <= hi


@pytest.fixture(scope="module")
def resume_heads(resumes_dir) -> pd.DataFrame:
    """Two resumes of each of the 24 job families (the first in file order): the first 500 characters of the
    resume as input, the family written out as reference ('INFORMATION-TECHNOLOGY' -> 'information technology')."""
    df = pd.read_csv(resumes_dir / "livecareer_resumes.csv", dtype=str, keep_default_na=False)
    df = df.groupby("category", sort=True).head(2).reset_index(drop=True)
    return pd.DataFrame(
        {
            "resume_id": df["resume_id"],
            "resume_head": df["resume_text"].str[:500],
            "family": df["category"].str.replace("-", " ").str.lower(),
        }
    )


def test_resume_family_written_out_loads_splits_and_evaluates(tmp_path, resume_heads):
    """System: the resume's first line (its title, e.g. 'ENGINEERING TECHNICIAN'). Path only, not a quality claim."""
    path = tmp_path / "families.csv"
    resume_heads.to_csv(path, index=False)
    spec = GenerationSpec(input_col="resume_head", reference_col="family", id_col="resume_id")
    ds = load_generation_dataset(path, spec)
    assert len(ds) + ds.rejected.total == 48 and ds.rejected.total == 0
    splits = make_splits(ds, SplitConfig(test_frac=0.25, val_frac=0.0, seed=0))
    assert not set(splits.ids("test")) & set(splits.ids("train"))
    assert make_splits(ds, SplitConfig(test_frac=0.25, val_frac=0.0, seed=0)).split_hash == splits.split_hash

    titles = [text.strip().split("\n")[0].strip() for text in ds.frame["text_raw"]]
    result = evaluate_task(GenerationTask(), ds, titles, name="first line", n_boot=500)
    table = result.per_example.assign(title=titles, family=ds.references)
    # Hand-checked rows: a title that is the family ('CHEF' for chef) scores 1 everywhere; a two-word title that
    # starts with a one-word family ('ENGINEERING TECHNICIAN' for engineering) has token F1 and ROUGE-L 2/3.
    same = table[table["title"].str.lower() == table["family"]]
    assert len(same) > 0 and (same[["exact_match", "token_f1", "rouge_l"]] == 1.0).all().all()
    two_words = table[
        table.apply(
            lambda r: (
                len(r["title"].split()) == 2
                and len(r["family"].split()) == 1
                and r["title"].lower().split()[0] == r["family"]
            ),
            axis=1,
        )
    ]
    assert len(two_words) > 0
    assert (two_words["exact_match"] == 0).all()
    assert np.allclose(two_words["token_f1"], 2 / 3) and np.allclose(two_words["rouge_l"], 2 / 3)
    assert result.summary["exact_match"] == pytest.approx(len(same) / len(ds))
