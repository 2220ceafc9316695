"""Ranking metrics in plain NumPy: NDCG@k, MAP, MRR, precision@k and recall@k per query, their means over
queries, and bootstrap intervals that resample queries.

    from finesieve.evals.ranking import evaluate_ranking
    result = evaluate_ranking(grades, scores, queries, k_values=(1, 5, 10), min_grade=1, relevant_grade=5)
    result.summary["ndcg@5"], result.ci["ndcg@5"], result.per_query

Inputs are one row per (query, candidate) pair: `grades` (n,) the judged relevance, `scores` (n,) the scorer's
output (higher ranks first), `queries` (n,) the query each pair belongs to. Each query's candidates are ranked
by descending score, and each metric is computed per query, then averaged over queries (every query weighs
the same, however many candidates it has).

Definitions, for one query with m candidates:
- Relevance for NDCG is `grade - min_grade` (>= 0) and the gain of a candidate is 2**relevance - 1, so the
  lowest grade gains nothing. DCG@k = sum over the top min(k, m) positions p = 1, 2, ... of gain / log2(p + 1);
  NDCG@k = DCG@k / DCG@k of the ideal ordering (grades descending). k larger than the list covers the list.
- A candidate is relevant for the binary metrics when grade >= relevant_grade; R is the number of relevant
  candidates among the query's m (all of them are judged).
- AP = mean over the relevant candidates of precision at their rank; MAP is its mean over queries.
- RR = 1 / rank of the first relevant candidate; MRR is its mean over queries.
- precision@k = relevant candidates in the top k / k (k, not min(k, m), as trec_eval: a list shorter than k
  cannot reach 1); recall@k = relevant candidates in the top k / R.
- Ties: candidates with equal scores are in no particular order, so each metric is its expected value over
  every order of the tied candidates (for NDCG, their gains averaged over their positions: scikit-learn's
  `ndcg_score` with ignore_ties=False). A scorer that gives every candidate the same score gets the value of a
  random ranking, neither the best nor the worst, and the result does not depend on the input's row order.
- A query with nothing to find leaves a metric undefined: NDCG when every gain is 0, the binary metrics when
  R = 0. With no_relevant="skip" (default) the per-query value is NaN, the query is left out of that metric's
  mean and counted in `n_queries` per metric; with no_relevant="zero" it scores 0 (scikit-learn's convention
  for NDCG, and trec_eval's).

Confidence intervals are percentile intervals over `n_boot` resamples of the queries (`bootstrap.mean_cis`,
drawn with `bootstrap.resample_indices`, so the same seed gives the same resamples as elsewhere): the unit that
varies is the query, not the pair. Checked against scikit-learn (`ndcg_score`, `average_precision_score`) and hand-computed
cases in tests/evals/test_ranking.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from finesieve.evals.bootstrap import mean_cis

NoRelevant = Literal["skip", "zero"]


# ----------------------------------------------------------------------------- one query


def _check_list(values, scores, name: str) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(values, dtype=float)
    s = np.asarray(scores, dtype=float)
    if v.ndim != 1 or s.ndim != 1 or len(v) != len(s):
        raise ValueError(
            f"{name} and scores must be 1-D and of one length, got shapes {v.shape} and {s.shape}. "
            "Fix: pass one value and one score per candidate of the query"
        )
    if np.isnan(s).any() or np.isnan(v).any():
        raise ValueError(
            f"{name} or scores hold NaN (first at index "
            f"{int(np.flatnonzero(np.isnan(s) | np.isnan(v))[0])}). Fix: score every candidate"
        )
    return v, s


def _tie_groups(scores: np.ndarray) -> list[np.ndarray]:
    """Indices of the candidates of each distinct score, best score first."""
    _, inverse = np.unique(-scores, return_inverse=True)  # group 0 holds the highest score
    order = np.argsort(inverse, kind="stable")
    starts = np.r_[0, np.flatnonzero(np.diff(inverse[order])) + 1]
    return np.split(order, starts[1:])


def _expected_by_position(values: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """(m,) expected value at each rank position over random orders of tied candidates: within a tie group,
    every position holds the group's mean."""
    out = np.empty(len(values))
    start = 0
    for group in _tie_groups(scores):
        out[start : start + len(group)] = values[group].mean()
        start += len(group)
    return out


def _discounts(m: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, m + 2))  # (m,) position p = 1.. gets 1 / log2(p + 1)


def dcg_at_k(relevance, scores, k: int | None = None) -> float:
    """Expected DCG@k of one query (gain 2**relevance - 1), tied candidates in random order."""
    rel, s = _check_list(relevance, scores, "relevance")
    gains = np.exp2(rel) - 1.0
    top = len(rel) if k is None else min(k, len(rel))
    return float(np.sum(_expected_by_position(gains, s)[:top] * _discounts(len(rel))[:top]))


def ndcg_at_k(relevance, scores, k: int | None = None) -> float:
    """NDCG@k of one query; relevance >= 0 (grade - min_grade). NaN when every gain is 0 (nothing to find)."""
    rel, s = _check_list(relevance, scores, "relevance")
    if (rel < 0).any():
        raise ValueError(f"relevance holds negative values {rel[rel < 0][:3].tolist()}. Fix: pass grade - min_grade")
    ideal = dcg_at_k(rel, rel, k)  # scores = relevance: the best order (ties among equal gains change nothing)
    return math.nan if ideal == 0 else dcg_at_k(rel, s, k) / ideal


def _binary(relevant, scores) -> tuple[np.ndarray, np.ndarray]:
    y, s = _check_list(relevant, scores, "relevant")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError(
            f"relevant must be 0/1 or bool, got {np.unique(y[~np.isin(y, (0.0, 1.0))])[:3].tolist()}. "
            "Fix: pass grade >= relevant_grade"
        )
    return y, s


def precision_at_k(relevant, scores, k: int) -> float:
    """Expected relevant candidates in the top k, over k. NaN when the query has no relevant candidate."""
    y, s = _binary(relevant, scores)
    if y.sum() == 0:
        return math.nan
    return float(_expected_by_position(y, s)[:k].sum() / k)


def recall_at_k(relevant, scores, k: int) -> float:
    """Expected share of the relevant candidates found in the top k. NaN when there is none."""
    y, s = _binary(relevant, scores)
    if y.sum() == 0:
        return math.nan
    return float(_expected_by_position(y, s)[:k].sum() / y.sum())


def reciprocal_rank(relevant, scores) -> float:
    """Expected 1 / rank of the first relevant candidate. NaN when there is none."""
    y, s = _binary(relevant, scores)
    before = 0  # candidates ranked above the current tie group
    for group in _tie_groups(s):
        g, r = len(group), int(y[group].sum())
        if r:
            # The first of r relevant among g tied candidates sits at offset j with P = C(g-j, r-1) / C(g, r).
            return sum(math.comb(g - j, r - 1) / (before + j) for j in range(1, g - r + 2)) / math.comb(g, r)
        before += g
    return math.nan


def average_precision(relevant, scores) -> float:
    """Expected average precision: the mean over relevant candidates of the precision at their rank. NaN when
    there is no relevant candidate."""
    y, s = _binary(relevant, scores)
    n_relevant = y.sum()
    if n_relevant == 0:
        return math.nan
    total, before, relevant_before = 0.0, 0, 0.0
    for group in _tie_groups(s):
        g, r = len(group), float(y[group].sum())
        if r:
            # A relevant candidate at offset j of its group (uniform over 1..g) has on average (j-1)(r-1)/(g-1) of
            # the group's other relevant candidates above it; precision at rank before + j is then exact.
            j = np.arange(1, g + 1)
            others_above = (j - 1) * (r - 1) / (g - 1) if g > 1 else np.zeros(1)
            total += r * np.mean((relevant_before + 1 + others_above) / (before + j))
        before += g
        relevant_before += r
    return float(total / n_relevant)


# ----------------------------------------------------------------------------- many queries


def metric_names(k_values: Sequence[int]) -> list[str]:
    """Column names of `per_query_metrics`, in `RankingTask.metrics` order."""
    return [
        *(f"ndcg@{k}" for k in k_values),
        "map",
        "mrr",
        *(f"precision@{k}" for k in k_values),
        *(f"recall@{k}" for k in k_values),
    ]


def per_query_metrics(
    grades,
    scores,
    queries: Sequence[str],
    *,
    k_values: Sequence[int] = (1, 5, 10),
    min_grade: float = 0.0,
    relevant_grade: float = 1.0,
    no_relevant: NoRelevant = "skip",
) -> pd.DataFrame:
    """One row per query, in order of first appearance: `n_candidates`, `n_relevant` and each metric of
    `metric_names(k_values)` (NaN where undefined, or 0 with no_relevant="zero")."""
    grades, scores = _check_list(grades, scores, "grades")
    queries = np.asarray([str(q) for q in queries], dtype=object)
    if len(queries) != len(grades):
        raise ValueError(f"queries has {len(queries)} entries for {len(grades)} grades: pass one query per pair")
    if no_relevant not in ("skip", "zero"):
        raise ValueError(f"no_relevant={no_relevant!r}: use 'skip' (leave such queries out) or 'zero'")
    if (grades < min_grade).any():
        raise ValueError(
            f"grades below min_grade={min_grade:g}: {np.unique(grades[grades < min_grade])[:3].tolist()}. "
            "Fix: pass the task's min_grade"
        )
    rows = []
    for query, index in pd.Series(np.arange(len(queries))).groupby(queries, sort=False):
        idx = index.to_numpy()
        rel, s = grades[idx] - min_grade, scores[idx]
        y = (grades[idx] >= relevant_grade).astype(float)
        row: dict = {"query": query, "n_candidates": len(idx), "n_relevant": int(y.sum())}
        row.update({f"ndcg@{k}": ndcg_at_k(rel, s, k) for k in k_values})
        row["map"] = average_precision(y, s)
        row["mrr"] = reciprocal_rank(y, s)
        row.update({f"precision@{k}": precision_at_k(y, s, k) for k in k_values})
        row.update({f"recall@{k}": recall_at_k(y, s, k) for k in k_values})
        rows.append(row)
    table = pd.DataFrame(rows, columns=["query", "n_candidates", "n_relevant", *metric_names(k_values)])
    if no_relevant == "zero":
        table[metric_names(k_values)] = table[metric_names(k_values)].fillna(0.0)
    return table


@dataclass
class RankingResult:
    """Ranking metrics of one scorer on one set of queries: per query, their means and bootstrap intervals."""

    name: str
    k_values: tuple[int, ...]
    min_grade: float
    relevant_grade: float
    no_relevant: NoRelevant
    per_query: pd.DataFrame = field(repr=False)  # one row per query (see per_query_metrics)
    summary: dict[str, float | None]  # metric -> mean over the queries where it is defined
    n_queries: dict[str, int]  # metric -> queries in its mean
    ci: dict[str, tuple[float, float] | None]
    n_pairs: int
    seconds: float = 0.0

    @property
    def metrics(self) -> list[str]:
        return metric_names(self.k_values)

    def to_dict(self) -> dict:
        return {
            "scorer": self.name,
            "task": "ranking",
            "n_pairs": self.n_pairs,
            "n_queries_total": len(self.per_query),
            "n_queries": dict(self.n_queries),
            "queries_without_relevant": int((self.per_query["n_relevant"] == 0).sum()),
            "k_values": list(self.k_values),
            "min_grade": self.min_grade,
            "relevant_grade": self.relevant_grade,
            "no_relevant": self.no_relevant,
            **{m: self.summary[m] for m in self.metrics},
            "ci95": {m: (list(v) if v is not None else None) for m, v in self.ci.items()},
            "pairs_per_second": round(self.n_pairs / self.seconds, 1) if self.seconds > 0 else None,
        }


def evaluate_ranking(
    grades,
    scores,
    queries: Sequence[str],
    *,
    k_values: Sequence[int] = (1, 5, 10),
    min_grade: float = 0.0,
    relevant_grade: float = 1.0,
    no_relevant: NoRelevant = "skip",
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    name: str = "scorer",
    seconds: float = 0.0,
) -> RankingResult:
    """Per-query metrics, their means over queries and percentile CIs over resampled queries (module docstring).
    `n_boot=0` skips the intervals."""
    table = per_query_metrics(
        grades,
        scores,
        queries,
        k_values=k_values,
        min_grade=min_grade,
        relevant_grade=relevant_grade,
        no_relevant=no_relevant,
    )
    names = metric_names(k_values)
    values = table[names].to_numpy(dtype=float)  # (n_queries, n_metrics)
    defined = np.isfinite(values)
    summary = {
        m: (float(values[defined[:, j], j].mean()) if defined[:, j].any() else None) for j, m in enumerate(names)
    }
    cis = mean_cis(values, n_boot=n_boot, alpha=alpha, seed=seed)
    return RankingResult(
        name=name,
        k_values=tuple(k_values),
        min_grade=float(min_grade),
        relevant_grade=float(relevant_grade),
        no_relevant=no_relevant,
        per_query=table,
        summary=summary,
        n_queries={m: int(defined[:, j].sum()) for j, m in enumerate(names)},
        ci=dict(zip(names, cis)),
        n_pairs=len(np.asarray(grades)),
        seconds=seconds,
    )
