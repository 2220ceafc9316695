"""Matcher evaluation on the real HR-scored pairs and livecareer families, the paired comparison, and the
`finesieve match` commands end to end."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from finesieve.cli import app
from finesieve.data.errors import ConfigError
from finesieve.data.task import RankingTask
from finesieve.evals.matching import (
    anonymised_texts,
    evaluate_family_retrieval,
    evaluate_matchers,
    family_query,
    load_family_resumes,
    load_hr_pairs,
    paired_difference,
    split_families,
)
from finesieve.evals.ranking import evaluate_ranking
from finesieve.models.matching import new_matcher
from finesieve.report import json_safe

HEADLINE = ("ndcg@5", "map", "recall@5")
FAMILIES = ("CHEF", "FITNESS", "INFORMATION-TECHNOLOGY", "TEACHER")  # a slice of the 24 for the embedding run


@pytest.fixture(scope="module")
def hr_csv(resumes_dir):
    return resumes_dir / "job_resume_hr_scores.csv"


@pytest.fixture(scope="module")
def pairs(hr_csv):
    return load_hr_pairs(hr_csv)


@pytest.fixture(scope="module")
def lexical(pairs):
    """TF-IDF and BM25 on all 30 jobs (seconds): the figures the interval and comparison tests read."""
    return evaluate_matchers({"tfidf": new_matcher("tfidf"), "bm25": new_matcher("bm25")}, pairs, n_boot=300)


def assert_intervals_hold_estimates(result, metrics):
    for m in metrics:
        lo, hi = result.ci[m]
        assert lo <= result.summary[m] <= hi and lo < hi, (result.name, m, lo, result.summary[m], hi)


def test_hr_pairs_grades_and_jobs(pairs):
    # The premise of relevant_grade=5 (evals.matching docstring): most jobs have something to find.
    per_job = pairs.frame.groupby("query")["relevance"]
    assert pairs.n_queries == 30 and set(pairs.relevance) <= set(range(1, 8))
    assert (per_job.max() >= 5).sum() >= 29 and ((pairs.relevance >= 5).mean()) < 0.5


def test_every_job_is_ranked_and_intervals_hold_the_estimates(lexical, pairs):
    for result in lexical.results.values():
        assert len(result.per_query) == pairs.n_queries
        assert result.n_queries["ndcg@5"] == pairs.n_queries
        assert result.n_queries["map"] == int((pairs.frame.groupby("query")["relevance"].max() >= 5).sum())
        assert_intervals_hold_estimates(result, HEADLINE)
    assert lexical.headline == "ndcg@5" and lexical.corpus_size == pairs.frame["text"].nunique()


def test_chance_is_the_mean_over_random_orders(lexical, pairs):
    # The chance row scores every candidate alike; its NDCG@5 per job must be what shuffling the candidates gives.
    rng = np.random.default_rng(0)
    shuffled = [
        evaluate_ranking(
            pairs.relevance,
            rng.random(len(pairs)),
            pairs.queries,
            k_values=(5,),
            min_grade=1,
            relevant_grade=5,
            n_boot=0,
        ).summary["ndcg@5"]
        for _ in range(100)
    ]
    # 100 shuffles: the standard error of their mean is ~0.004 here; the tolerance is about 3 of them.
    assert lexical.chance.summary["ndcg@5"] == pytest.approx(np.mean(shuffled), abs=0.012)


def test_lexical_matchers_order_candidates_the_right_way(lexical, pairs):
    # Higher score = better fit: each matcher's ranking beats chance, and its reversed ranking falls below it.
    chance = lexical.chance.summary["ndcg@5"]
    for name, result in lexical.results.items():
        reversed_ = evaluate_ranking(
            pairs.relevance,
            -lexical.scores[name],
            pairs.queries,
            k_values=(5,),
            min_grade=1,
            relevant_grade=5,
            n_boot=0,
        )
        assert result.summary["ndcg@5"] > chance > reversed_.summary["ndcg@5"], name


def test_paired_difference_is_the_mean_per_job_difference(lexical):
    a, b = lexical.results["tfidf"], lexical.results["bm25"]
    (comparison,) = lexical.comparisons
    per_job = a.per_query.set_index("query")["ndcg@5"] - b.per_query.set_index("query")["ndcg@5"]
    assert comparison["diff"] == pytest.approx(per_job.mean())
    assert comparison["diff"] == pytest.approx(a.summary["ndcg@5"] - b.summary["ndcg@5"])
    assert comparison["ci95"][0] <= comparison["diff"] <= comparison["ci95"][1]
    assert comparison["a_better"] + comparison["ties"] + comparison["b_better"] == 30
    swapped = paired_difference(b, a, "ndcg@5", n_boot=300)
    assert swapped["diff"] == pytest.approx(-comparison["diff"])
    assert swapped["ci95"] == pytest.approx([-comparison["ci95"][1], -comparison["ci95"][0]])
    same = paired_difference(a, a, "ndcg@5", n_boot=300)
    assert same["diff"] == 0 and same["ties"] == 30 and same["p_value"] == 1.0


def test_to_dict_is_json_with_per_job_rows(lexical):
    payload = json.loads(json.dumps(json_safe(lexical.to_dict())))
    tfidf = payload["matchers"]["tfidf"]
    assert tfidf["ndcg@5"] == lexical.results["tfidf"].summary["ndcg@5"]
    assert len(tfidf["per_query"]) == 30 and tfidf["config"]["kind"] == "tfidf"
    assert payload["task"]["relevant_grade"] == 5 and payload["data"]["n_pairs"] == 277


def test_embeddings_on_a_slice_of_jobs(pairs):
    jobs = sorted(set(pairs.queries))[:3]
    slice_ = pairs.subset(pairs.frame["query"].isin(jobs).to_numpy())
    # The first two windows of each resume keep the test to seconds on one core; the whole path runs as in full.
    evaluation = evaluate_matchers({"embeddings": new_matcher("embeddings", max_chunks=2)}, slice_, n_boot=300)
    result = evaluation.results["embeddings"]
    assert len(result.per_query) == 3 and np.isfinite(result.per_query["ndcg@5"]).all()
    assert_intervals_hold_estimates(result, ("ndcg@5",))


def test_bad_settings_are_refused(pairs):
    with pytest.raises(ConfigError, match="lacks 5"):
        evaluate_matchers({"tfidf": new_matcher("tfidf")}, pairs, k_values=(1, 10))
    with pytest.raises(ValueError, match="relevant_grade=1 must lie above min_grade=1"):
        evaluate_matchers({"tfidf": new_matcher("tfidf")}, pairs, relevant_grade=1)
    with pytest.raises(ConfigError, match="no matchers"):
        evaluate_matchers({}, pairs)


# ----------------------------------------------------------------------------------------- family retrieval


@pytest.fixture(scope="module")
def family_resumes(resumes_dir):
    return load_family_resumes(resumes_dir / "livecareer_resumes.csv")


def test_family_query_and_split(family_resumes):
    assert family_query("INFORMATION-TECHNOLOGY") == "information technology"
    assert family_query("HR") == "hr"
    categories = family_resumes.labels
    parts = split_families(categories, per_family=3, seed=0)
    val, test, corpus = (set(parts[p].tolist()) for p in ("validation", "test", "corpus"))
    assert not (val & test or val & corpus or test & corpus)
    assert len(val | test | corpus) == len(categories)
    counts = pd.Series([categories[i] for i in parts["test"]]).value_counts()
    assert (counts == 3).all() and len(counts) == 24
    with pytest.raises(ConfigError, match=r"BPO \(\d+\)"):
        split_families(categories, per_family=12)


def test_family_retrieval_slice(family_resumes):
    matchers = {"tfidf": new_matcher("tfidf"), "bm25": new_matcher("bm25")}
    matchers["embeddings"] = new_matcher("embeddings", max_chunks=2)  # two windows per resume: seconds, not minutes
    evaluation = evaluate_family_retrieval(
        matchers, family_resumes, part="test", per_family=2, families=FAMILIES, n_boot=300
    )
    assert evaluation.task == RankingTask(relevance="binary", k_values=(10,))
    for result in evaluation.results.values():
        table = result.per_query
        assert sorted(table["query"]) == sorted(FAMILIES)
        assert (table["n_candidates"] == 2 * len(FAMILIES)).all() and (table["n_relevant"] == 2).all()
        assert_intervals_hold_estimates(result, ("ndcg@10", "map"))
        # 8 candidates and k=10: every relevant resume is in the top 10, whatever the order.
        assert result.summary["recall@10"] == 1.0
    with pytest.raises(ConfigError, match="part='train'"):
        evaluate_family_retrieval(matchers, family_resumes, part="train")


# ----------------------------------------------------------------------------------------- the CLI


def test_cli_match_eval_prints_the_table_and_writes_json(hr_csv, lexical, tmp_path):
    out = tmp_path / "results.json"
    result = CliRunner().invoke(
        app, ["match", "eval", "--data", str(hr_csv), "--matcher", "tfidf,bm25", "--out", str(out), "--n-boot", "300"]
    )
    assert result.exit_code == 0, result.output
    assert "NDCG@5" in result.output and "tfidf - bm25: ndcg@5" in result.output
    payload = json.loads(out.read_text())
    for name in ("tfidf", "bm25"):
        assert payload["matchers"][name]["ndcg@5"] == pytest.approx(lexical.results[name].summary["ndcg@5"])
        assert payload["matchers"][name]["ci95"]["ndcg@5"] == pytest.approx(list(lexical.results[name].ci["ndcg@5"]))


def test_cli_match_eval_refuses_an_unknown_matcher(hr_csv):
    result = CliRunner().invoke(app, ["match", "eval", "--data", str(hr_csv), "--matcher", "tfidf,bm52"])
    assert result.exit_code == 2 and "bm52" in result.output and "did you mean bm25" in result.output


@pytest.fixture(scope="module")
def candidates_csv(resumes_dir, tmp_path_factory):
    """12 real resumes of three families, written to a temporary CSV (never into the repository)."""
    df = pd.read_csv(resumes_dir / "livecareer_resumes.csv", dtype=str, keep_default_na=False)
    rows = df[df.category.isin(["CHEF", "TEACHER", "AVIATION"])].sort_values("resume_id").groupby("category").head(4)
    path = tmp_path_factory.mktemp("match") / "candidates.csv"
    rows[["resume_id", "category", "resume_text"]].to_csv(path, index=False)
    return path, rows


@pytest.mark.parametrize("matcher", ["tfidf", "bm25"])
def test_cli_match_rank_puts_the_family_first(candidates_csv, matcher):
    path, rows = candidates_csv
    cmd = ["match", "rank", "--job", "chef; kitchen; cooking; menu", "--candidates", str(path)]
    cmd += ["--text-col", "resume_text", "--id-col", "resume_id", "--matcher", matcher, "--top", "4", "--json"]
    result = CliRunner().invoke(app, cmd)
    assert result.exit_code == 0, result.output
    ranked = json.loads(result.stdout)
    assert [r["rank"] for r in ranked] == [1, 2, 3, 4]
    assert all(a["score"] >= b["score"] for a, b in zip(ranked, ranked[1:]))
    family = dict(zip(rows.resume_id, rows.category))
    assert [family[r["id"]] for r in ranked] == ["CHEF"] * 4


def test_cli_match_rank_with_a_saved_matcher_and_a_table(candidates_csv, tmp_path):
    path, rows = candidates_csv
    new_matcher("tfidf").fit([], rows.resume_text.tolist()).save(tmp_path / "tfidf")
    cmd = ["match", "rank", "--job", "pilot; aircraft; flight", "--candidates", str(path), "--text-col"]
    result = CliRunner().invoke(app, [*cmd, "resume_text", "--matcher", str(tmp_path / "tfidf"), "--top", "2"])
    assert result.exit_code == 0, result.output
    assert "top 2 of 12 candidates" in result.output and "score" in result.output
    missing = CliRunner().invoke(app, [*cmd, "no_such_column"])
    assert missing.exit_code == 2 and "no_such_column" in missing.output


class Recorder:
    """A matcher that scores by length and remembers every resume text it was shown."""

    kind = "recorder"

    def __init__(self):
        self.seen: list[str] = []

    def fit(self, jobs, resumes):
        self.seen.extend(resumes)
        return self

    def score_pairs(self, job_texts, resume_texts):
        self.seen.extend(resume_texts)
        return np.array([float(len(t)) for t in resume_texts])

    def get_config(self):
        return RankingTask(relevance="graded", min_grade=1, max_grade=7, relevant_grade=5)  # any pydantic model


def test_with_an_anonymiser_no_matcher_sees_the_resumes_as_written(pairs):
    from finesieve.data.anonymise import AnonymisationConfig, Anonymiser

    anonymiser = Anonymiser(AnonymisationConfig(person_ner=False))
    plain, anonymised = Recorder(), Recorder()
    evaluate_matchers({"plain": plain}, pairs, n_boot=0)
    evaluate_matchers({"anonymised": anonymised}, pairs, anonymiser=anonymiser, n_boot=0)
    expected = anonymised_texts(pairs.frame["text_raw"].tolist(), anonymiser)
    assert set(anonymised.seen) == set(expected) and set(plain.seen) == set(pairs.texts)
    changed = [a for a, b in zip(expected, pairs.texts) if a != b]
    assert changed and all(t not in set(pairs.texts) for t in changed)  # what was anonymised never reached it


def test_cli_match_rank_anonymises_when_asked(candidates_csv, tmp_path):
    path, rows = candidates_csv
    with_pii = tmp_path / "with_pii.csv"
    frame = rows[["resume_id", "resume_text"]].copy()
    frame.loc[frame.index[0], "resume_text"] = "Jamal Jones\nAge: 34\n" + frame.iloc[0]["resume_text"]
    frame.to_csv(with_pii, index=False)
    cmd = ["match", "rank", "--job", "jamal jones chef", "--candidates", str(with_pii), "--text-col", "resume_text"]
    cmd += ["--id-col", "resume_id", "--matcher", "tfidf", "--top", "12", "--json"]
    plain = json.loads(CliRunner().invoke(app, cmd).stdout)
    anonymised = CliRunner().invoke(app, [*cmd, "--anonymise"])
    assert anonymised.exit_code == 0, anonymised.output
    first = frame.iloc[0]["resume_id"]
    score = {r["id"]: r["score"] for r in plain}, {r["id"]: r["score"] for r in json.loads(anonymised.stdout)}
    assert score[1][first] < score[0][first]  # the name no longer matches the query's name
