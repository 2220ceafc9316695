"""Ranking metrics: hand-computed cases, ties as the expectation over every order (checked by enumerating the
orders), agreement with scikit-learn, intervals over resampled queries, and the whole path on the real HR-scored
job-resume pairs (load, split by job, score with TF-IDF, evaluate through the harness).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import average_precision_score, ndcg_score

from finesieve.data.dataset import from_examples, from_pairs, from_records
from finesieve.data.errors import ConfigError
from finesieve.data.load import load_ranking_dataset
from finesieve.data.spec import RankingSpec
from finesieve.data.split import SplitConfig, load_splits, make_splits
from finesieve.data.task import ClassificationTask, GenerationTask, RankingTask
from finesieve.evals.bootstrap import mean_cis
from finesieve.evals.harness import evaluate_scored, evaluate_task
from finesieve.evals.ranking import (
    average_precision,
    evaluate_ranking,
    ndcg_at_k,
    per_query_metrics,
    precision_at_k,
    recall_at_k,
    reciprocal_rank,
)

HR_SPEC = RankingSpec(
    query_col="job_id",
    candidate_col="resume_id",
    query_text_col="job_terms",
    candidate_text_col="resume_text",
    relevance_col="hr_score",
    meta_cols=("hr_id",),
)
# HR scores run 1 (poor fit) to 7 (excellent fit); 5 and above count as a fit for the binary metrics.
HR_TASK = RankingTask(relevance="graded", min_grade=1, max_grade=7, relevant_grade=5, k_values=(1, 5, 10))


def log2(x: float) -> float:
    return math.log2(x)


# ----------------------------------------------------------------------------- hand-computed cases


def test_ndcg_by_hand_with_exponential_gains_and_log2_discounts():
    relevance = [3, 2, 0, 1]  # gains 7, 3, 0, 1
    scores = [0.9, 0.8, 0.7, 0.6]  # ranked as given
    dcg = 7 / log2(2) + 3 / log2(3) + 0 / log2(4) + 1 / log2(5)
    ideal = 7 / log2(2) + 3 / log2(3) + 1 / log2(4) + 0 / log2(5)
    assert ndcg_at_k(relevance, scores) == pytest.approx(dcg / ideal)
    assert ndcg_at_k(relevance, scores, k=2) == pytest.approx(1.0)  # the top two are the ideal top two
    assert ndcg_at_k(relevance, scores, k=3) == pytest.approx((7 + 3 / log2(3)) / (7 + 3 / log2(3) + 1 / 2))
    # k beyond the list covers the list.
    assert ndcg_at_k(relevance, scores, k=10) == pytest.approx(dcg / ideal)
    # Reversed, the best candidate comes last.
    worst = 1 / log2(2) + 0 / log2(3) + 3 / log2(4) + 7 / log2(5)
    assert ndcg_at_k(relevance, scores[::-1]) == pytest.approx(worst / ideal)


def test_binary_metrics_by_hand():
    relevant = [1, 0, 1, 0, 1, 0]  # ranked as given: relevant at ranks 1, 3 and 5
    scores = [6, 5, 4, 3, 2, 1]
    assert average_precision(relevant, scores) == pytest.approx((1 / 1 + 2 / 3 + 3 / 5) / 3)
    assert reciprocal_rank(relevant, scores) == 1.0
    assert reciprocal_rank([0, 0, 1, 0, 1, 0], scores) == pytest.approx(1 / 3)
    assert precision_at_k(relevant, scores, 3) == pytest.approx(2 / 3)
    assert recall_at_k(relevant, scores, 3) == pytest.approx(2 / 3)
    assert precision_at_k(relevant, scores, 10) == pytest.approx(3 / 10)  # k, not the list's length
    assert recall_at_k(relevant, scores, 10) == 1.0


def test_ties_count_as_the_average_over_their_orders_by_hand():
    # One relevant and one not, tied at the top: rank 1 or 2 with equal chance.
    assert reciprocal_rank([1, 0], [0.5, 0.5]) == pytest.approx((1 + 1 / 2) / 2)
    assert average_precision([1, 0], [0.5, 0.5]) == pytest.approx((1 + 1 / 2) / 2)
    assert precision_at_k([1, 0], [0.5, 0.5], 1) == pytest.approx(0.5)
    # Gains 3 and 0 tied: each position holds the mean gain 1.5.
    assert ndcg_at_k([2, 0], [1, 1]) == pytest.approx((1.5 + 1.5 / log2(3)) / 3)
    # Two relevant among three tied candidates: the first relevant is at rank 1 with probability 2/3, else 2.
    assert reciprocal_rank([1, 1, 0], [0, 0, 0]) == pytest.approx(2 / 3 + (1 / 3) / 2)


def _over_every_order(metric, values, scores) -> float:
    """The metric's mean over every order of the tied candidates, each order scored without ties."""
    scores = np.asarray(scores, dtype=float)
    results = []
    for perm in itertools.permutations(range(len(scores))):
        tie_break = np.empty(len(scores))
        tie_break[list(perm)] = np.arange(len(scores))
        results.append(metric(values, scores * 10 - tie_break * 1e-3))  # distinct scores, tied ones in perm order
    return float(np.mean(results))


@pytest.mark.parametrize("seed", range(25))
def test_tie_handling_equals_enumerating_every_order_of_the_tied_candidates(seed):
    rng = np.random.default_rng(seed)
    m = int(rng.integers(2, 6))  # at most 5! = 120 orders
    grades = rng.integers(0, 4, m).astype(float)
    scores = rng.integers(0, 3, m).astype(float)  # few distinct scores: many ties
    relevant = (grades >= 2).astype(float)
    binary = {
        "ap": average_precision,
        "rr": reciprocal_rank,
        "p@2": lambda y, s: precision_at_k(y, s, 2),
        "r@3": lambda y, s: recall_at_k(y, s, 3),
    }
    for name, metric in binary.items():
        got, want = metric(relevant, scores), _over_every_order(metric, relevant, scores)
        assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want), name
    for k in (1, 3, None):
        got = ndcg_at_k(grades, scores, k)
        want = _over_every_order(lambda g, s, k=k: ndcg_at_k(g, s, k), grades, scores)
        assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want)


def test_a_query_with_nothing_relevant_is_undefined_or_zero_as_chosen():
    grades, scores, queries = [0, 0, 0, 2, 1, 0], [3, 2, 1, 3, 2, 1], ["a"] * 3 + ["b"] * 3
    skip = evaluate_ranking(grades, scores, queries, k_values=(2,), relevant_grade=1, n_boot=0)
    zero = evaluate_ranking(grades, scores, queries, k_values=(2,), relevant_grade=1, no_relevant="zero", n_boot=0)
    assert math.isnan(skip.per_query.loc[0, "ndcg@2"]) and math.isnan(skip.per_query.loc[0, "map"])
    assert skip.n_queries["ndcg@2"] == 1 and skip.summary["ndcg@2"] == 1.0  # query b ranks perfectly
    assert zero.n_queries["ndcg@2"] == 2 and zero.summary["ndcg@2"] == 0.5
    assert skip.to_dict()["queries_without_relevant"] == 1


# ----------------------------------------------------------------------------- against scikit-learn


@pytest.mark.parametrize("seed", range(30))
def test_ndcg_agrees_with_scikit_learn_with_ties_and_k_beyond_the_list(seed):
    """scikit-learn uses the gains as given (linear) and averages tied gains: pass it 2**relevance - 1."""
    rng = np.random.default_rng(seed)
    m = int(rng.integers(2, 12))
    relevance = rng.integers(0, 5, m).astype(float)
    scores = np.round(rng.random(m), 1)  # ties in about half the lists
    for k in (1, 3, m, m + 5):
        ours = ndcg_at_k(relevance, scores, k)
        theirs = ndcg_score([np.exp2(relevance) - 1], [scores], k=k)
        assert (ours if not math.isnan(ours) else 0.0) == pytest.approx(theirs, abs=1e-12)


def test_no_relevant_zero_convention_matches_scikit_learn():
    grades, scores = np.array([0.0, 0.0, 0.0]), np.array([0.3, 0.2, 0.1])
    table = per_query_metrics(grades, scores, ["q"] * 3, k_values=(2,), no_relevant="zero")
    assert table.loc[0, "ndcg@2"] == ndcg_score([np.exp2(grades) - 1], [scores], k=2) == 0.0


@pytest.mark.parametrize("seed", range(20))
def test_average_precision_agrees_with_scikit_learn_without_ties(seed):
    rng = np.random.default_rng(seed)
    m = int(rng.integers(2, 15))
    relevant = rng.integers(0, 2, m)
    relevant[rng.integers(0, m)] = 1
    scores = rng.permutation(m).astype(float)  # distinct: scikit-learn's AP pools tied scores differently
    assert average_precision(relevant, scores) == pytest.approx(average_precision_score(relevant, scores))


# ----------------------------------------------------------------------------- intervals over queries


def test_intervals_resample_queries_not_pairs():
    # One query: every resample is that query, so the interval is its value, however many pairs it has.
    one = evaluate_ranking([3, 0, 1, 2, 0, 1], [1, 2, 3, 4, 5, 6], ["q"] * 6, k_values=(3,), n_boot=200)
    for metric, (lo, hi) in one.ci.items():
        assert lo == hi == pytest.approx(one.summary[metric])
    # Two queries, one perfect (1.0) and one reversed: the mean of a resample takes only the values 0, 1/2, 1
    # weighed by the share of each query drawn.
    two = evaluate_ranking([1, 0, 1, 0], [2, 1, 1, 2], ["a", "a", "b", "b"], k_values=(1,), n_boot=500, seed=1)
    assert two.summary["precision@1"] == 0.5 and two.ci["precision@1"] == (0.0, 1.0)


def test_mean_cis_skips_undefined_cells_and_is_reproducible():
    values = np.array([[1.0, np.nan], [0.0, np.nan], [0.5, np.nan]])
    first, undefined = mean_cis(values, n_boot=300, seed=4)
    assert undefined is None and 0.0 <= first[0] < 0.5 < first[1] <= 1.0
    assert mean_cis(values, n_boot=300, seed=4)[0] == first
    assert mean_cis(values, n_boot=0) == [None, None]  # n_boot=0 skips the intervals


# ----------------------------------------------------------------------------- the harness


def test_evaluate_task_checks_the_data_kind_the_score_shape_and_the_grades():
    pairs = from_pairs(["q", "q", "q"], ["a", "b", "c"], ["x", "y", "z"], [1, 7, 3])
    with pytest.raises(ConfigError, match="a ranking task is measured on a RankingDataset, got a GenerationDataset"):
        evaluate_task(HR_TASK, from_examples(["x"], ["y"]), [0.1])
    with pytest.raises(ConfigError, match="a generation task is measured on a GenerationDataset"):
        evaluate_task(GenerationTask(), pairs, ["x", "y", "z"])
    with pytest.raises(ValueError, match="expected \\(3,\\): one score per \\(query, candidate\\) pair"):
        evaluate_task(HR_TASK, pairs, [[0.1, 0.2, 0.3]])
    with pytest.raises(ValueError, match="grades outside the task's 0 to 1 \\(e.g. 7 at row 2\\)"):
        evaluate_task(RankingTask(), pairs, [0.1, 0.2, 0.3])
    result = evaluate_task(HR_TASK, pairs, [0.1, 0.9, 0.5], n_boot=0)
    assert result.summary["ndcg@10"] == 1.0 and result.summary["mrr"] == 1.0


def test_evaluate_task_on_a_classification_task_is_evaluate_scored_at_the_tasks_threshold(davidson_slice):
    """The one entry point leaves classification to `evaluate_scored`, with the task's classes, positive classes
    and threshold (belongs with tests/evals/test_harness.py; kept here to leave that file to its owner)."""
    data = davidson_slice.head(400)
    dataset = from_records(data["text"].tolist(), data["label"].tolist())
    proba = np.random.default_rng(0).dirichlet(np.ones(3), size=len(dataset))  # (n, 3) in dataset.classes order
    task = ClassificationTask(
        classes=tuple(dataset.classes), positive=("hate_speech",), threshold=0.3, threshold_source="given"
    )
    through_task = evaluate_task(task, dataset, proba, n_boot=200, name="random").to_dict()
    direct = evaluate_scored(
        proba, dataset.classes, False, dataset, positive=["hate_speech"], threshold=0.3, n_boot=200, name="random"
    ).to_dict()
    assert through_task == direct and through_task["threshold"] == 0.3
    unset = evaluate_task(
        task.model_copy(update={"threshold": None, "threshold_source": None}), dataset, proba, n_boot=0
    )
    assert (unset.threshold, unset.threshold_source) == (0.5, "default 0.5")
    with pytest.raises(ValueError, match=r"expected \(400, 3\)"):
        evaluate_task(task, dataset, proba[:, :2])


# ----------------------------------------------------------------------------- real HR-scored pairs


@pytest.fixture(scope="module")
def hr_csv(resumes_dir):
    return resumes_dir / "job_resume_hr_scores.csv"


@pytest.fixture(scope="module")
def hr_pairs(hr_csv):
    return load_ranking_dataset(hr_csv, HR_SPEC, task=HR_TASK)


def tfidf_cosine(dataset) -> np.ndarray:
    """(n,) cosine of TF-IDF vectors of each pair's job terms and resume: a trivial, untrained matcher."""
    vectorizer = TfidfVectorizer(sublinear_tf=True).fit(dataset.texts + sorted(set(dataset.query_texts)))
    jobs, resumes = vectorizer.transform(dataset.query_texts), vectorizer.transform(dataset.texts)
    return np.asarray(jobs.multiply(resumes).sum(axis=1)).ravel()  # rows are L2-normalised: the sum is the cosine


def test_hr_pairs_load_with_every_row_accounted_for(hr_pairs, hr_csv):
    raw = pd.read_csv(hr_csv, dtype=str, keep_default_na=False)
    assert len(hr_pairs) + hr_pairs.rejected.total == len(raw) == 277
    assert hr_pairs.rejected.total == 0 and hr_pairs.n_queries == 30
    assert hr_pairs.frame["candidate"].nunique() == raw["resume_id"].nunique()
    assert hr_pairs.relevance.tolist() == raw["hr_score"].astype(float).tolist()
    assert set(hr_pairs.relevance) == {1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0}
    # Resumes still carrying contact details are redacted in the text that is scored; the raw text is kept.
    assert hr_pairs.redaction_counts.get("EMAIL", 0) > 0
    assert not hr_pairs.frame["text"].str.contains(r"\b[\w.]+@[\w-]+\.\w+\b").any()


def test_hr_pairs_split_by_job_with_no_job_in_two_splits(hr_pairs, hr_csv, tmp_path):
    config = SplitConfig(test_frac=0.2, val_frac=0.2, seed=0)
    splits = make_splits(hr_pairs, config)
    where = pd.DataFrame({"job": hr_pairs.queries, "split": splits.assignment})
    assert (where.groupby("job")["split"].nunique() == 1).all()
    jobs = where.drop_duplicates("job")["split"].value_counts().to_dict()
    assert sum(jobs.values()) == 30 and jobs["test"] >= 5 and jobs["val"] >= 5
    assert sum(splits.sizes().values()) == 277
    # The same split from the rows in another order, and back from disk.
    shuffled = tmp_path / "shuffled.csv"
    pd.read_csv(hr_csv, dtype=str, keep_default_na=False).sample(frac=1.0, random_state=7).to_csv(shuffled, index=False)
    assert make_splits(load_ranking_dataset(shuffled, HR_SPEC, task=HR_TASK), config).split_hash == splits.split_hash
    splits.save(tmp_path / "splits.json")
    assert load_splits(tmp_path / "splits.json", hr_pairs).split_hash == splits.split_hash
    assert make_splits(hr_pairs, config.model_copy(update={"seed": 1})).split_hash != splits.split_hash


def test_tfidf_matcher_evaluated_through_the_harness_on_all_jobs_and_the_test_jobs(hr_pairs):
    scores = tfidf_cosine(hr_pairs)
    result = evaluate_task(HR_TASK, hr_pairs, scores, name="tfidf", n_boot=1000)
    random = evaluate_task(HR_TASK, hr_pairs, np.zeros(len(hr_pairs)), name="constant", n_boot=0)
    oracle = evaluate_task(HR_TASK, hr_pairs, hr_pairs.relevance, name="oracle", n_boot=0)
    d = result.to_dict()
    for metric in ("ndcg@5", "map", "mrr"):
        lo, hi = d["ci95"][metric]
        assert lo < d[metric] < hi
        assert oracle.summary[metric] == pytest.approx(1.0)
    # One job has no resume scored 5 or more: MAP and MRR are over 29 jobs, NDCG over all 30.
    assert d["n_queries"] == {**{m: 29 for m in HR_TASK.metrics}, "ndcg@1": 30, "ndcg@5": 30, "ndcg@10": 30}
    # Scores aligned with their pairs carry signal: TF-IDF ranks above chance (a constant score, ties throughout)
    # on the 30 jobs (by 0.08 NDCG@5 and 0.07 MAP); the same scores shuffled across pairs stay within 0.01 NDCG@5
    # and 0.03 MAP of chance (8 shuffles tried).
    assert result.summary["ndcg@5"] > random.summary["ndcg@5"] + 0.05
    assert result.summary["map"] > random.summary["map"] + 0.05

    splits = make_splits(hr_pairs, SplitConfig(test_frac=0.2, val_frac=0.2, seed=0))
    test = splits.dataset("test")
    on_test = evaluate_task(HR_TASK, test, scores[splits.assignment == "test"], name="tfidf", n_boot=1000)
    assert len(on_test.per_query) == test.n_queries >= 5
    assert set(on_test.per_query["query"]) == set(test.queries)
    lo, hi = on_test.ci["ndcg@5"]
    assert lo <= on_test.summary["ndcg@5"] <= hi and hi - lo > 0
