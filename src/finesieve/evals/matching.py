"""Evaluate candidate-job matchers: rank each job's judged candidates, and find a job family's resumes.

    from finesieve.evals.matching import load_hr_pairs, evaluate_matchers, evaluate_family_retrieval
    from finesieve.models.matching import new_matcher
    pairs = load_hr_pairs("job_resume_hr_scores.csv")
    matchers = {name: new_matcher(name) for name in ("tfidf", "bm25", "embeddings")}
    ev = evaluate_matchers(matchers, pairs, n_boot=1000)
    ev.results["tfidf"].summary["ndcg@5"], ev.results["tfidf"].ci["ndcg@5"], ev.comparisons

    resumes = load_family_resumes("livecareer_resumes.csv")
    fam = evaluate_family_retrieval(matchers, resumes, part="test", per_family=6)

HR-scored pairs (`evaluate_matchers`): each (job, resume) pair carries one HR professional's fit score from 1 (poor)
to 7 (excellent); every job's 7-10 candidates are ranked by the matcher's score and measured per job with graded
relevance (`evals.ranking`): NDCG gains 2**(score - 1) - 1, so a 1 gains nothing and a 7 gains 63; the binary
metrics (MAP, MRR, precision@k, recall@k) count a candidate relevant at score >= 5. Why 5: 4 is the middle of the
1-7 scale (neither fit nor misfit), so 5 is the first grade on the "fits" side; on the published file it marks 91
of 277 pairs (33%) relevant, and 29 of the 30 jobs have at least one (the other is left out of the binary metrics'
means and counted). A stricter 6 would leave 7 jobs with nothing to find. Intervals resample jobs. Each matcher is
fitted on a corpus of resumes only (the data's own resumes unless one is given): the judged scores are never
seen, so these pairs stay an evaluation set. The paired comparison resamples jobs once for both matchers and gives
the NDCG@5 difference with its interval.

Family retrieval (`evaluate_family_retrieval`): on resumes labelled with a job family (livecareer's 24
categories), each family's name becomes a query ("INFORMATION-TECHNOLOGY" -> "information technology") that ranks
a held-out sample of resumes, relevant = the same family. The sample is stratified: `per_family` resumes of each
family in the validation part, as many again in the test part (fixed by `seed`), the rest is the corpus the
matchers are fitted on. Compare settings (window size, pooling) on part="validation"; report part="test".
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
import pandas as pd
from rich.table import Table

import finesieve
from finesieve.data.anonymise import Anonymiser
from finesieve.data.dataset import Dataset, RankingDataset, from_pairs
from finesieve.data.errors import ConfigError, DataError
from finesieve.data.spec import ColumnSpec, RankingSpec
from finesieve.data.task import RankingTask
from finesieve.evals.bootstrap import resample_indices
from finesieve.evals.harness import evaluate_task
from finesieve.evals.ranking import RankingResult
from finesieve.models.matching import Matcher, is_matcher_folder, load_matcher

HR_SPEC = RankingSpec(
    query_col="job_id",
    candidate_col="resume_id",
    query_text_col="job_terms",
    candidate_text_col="resume_text",
    relevance_col="hr_score",
)
K_VALUES = (1, 3, 5, 10)
HEADLINE_K = 5  # NDCG@5: the first screen of candidates a recruiter reads
FAMILY_SPEC = ColumnSpec(text_col="resume_text", label_cols=("category",), id_col="resume_id")
FAMILY_PARTS = ("validation", "test")


def hr_task(
    k_values: Sequence[int] = K_VALUES, min_grade: float = 1, max_grade: float = 7, relevant_grade: float = 5
) -> RankingTask:
    """The task of the HR-scored pairs: graded 1-7, relevant from 5 (module docstring)."""
    return RankingTask(
        relevance="graded",
        min_grade=min_grade,
        max_grade=max_grade,
        relevant_grade=relevant_grade,
        k_values=tuple(k_values),
    )


def load_hr_pairs(
    path: str | Path, spec: RankingSpec = HR_SPEC, task: RankingTask | None = None, max_rows: int | None = None
) -> RankingDataset:
    """The judged (job, resume) pairs, validated against `task`'s grades, cleaned and redacted."""
    from finesieve.data.load import load_ranking_dataset

    return load_ranking_dataset(path, spec, task=task or hr_task(), max_rows=max_rows)


def load_family_resumes(path: str | Path, spec: ColumnSpec = FAMILY_SPEC) -> Dataset:
    """Resumes labelled with their job family (one category each), cleaned and redacted."""
    from finesieve.data.load import load_dataset

    return load_dataset(path, spec)


# ----------------------------------------------------------------------------------------- results


@dataclass
class MatchingEvaluation:
    """Ranking metrics of several matchers on the same queries, and their paired comparisons."""

    evaluated_on: str  # what was ranked, in words
    task: RankingTask
    headline: str  # the metric the comparisons and the table lead with, e.g. "ndcg@5"
    results: dict[str, RankingResult]
    comparisons: list[dict]  # one per pair of matchers (`paired_difference`)
    configs: dict[str, dict]  # matcher name -> kind and resolved settings
    fit_seconds: dict[str, float]
    corpus_size: int  # resumes the matchers were fitted on
    chance: RankingResult | None = None  # every candidate scored alike: the expected value of a random order
    scores: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # matcher -> (n_pairs,) in data order
    data: dict = field(default_factory=dict)  # source, content hash, pairs, queries

    def to_dict(self) -> dict:
        return {
            "evaluated_on": self.evaluated_on,
            "finesieve_version": finesieve.__version__,
            "task": self.task.model_dump(mode="json"),
            "headline": self.headline,
            "data": self.data,
            "corpus_size": self.corpus_size,
            "matchers": {
                name: {
                    **result.to_dict(),
                    "config": self.configs[name],
                    "fit_seconds": round(self.fit_seconds[name], 3),
                    "score_seconds": round(result.seconds, 3),
                    "per_query": result.per_query.to_dict(orient="records"),
                }
                for name, result in self.results.items()
            },
            "comparisons": self.comparisons,
            "chance": None if self.chance is None else {m: self.chance.summary[m] for m in self.chance.metrics},
        }


def paired_difference(
    a: RankingResult,
    b: RankingResult,
    metric: str = "ndcg@5",
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict:
    """metric(a) - metric(b) over the queries both define, with a percentile interval from resampling queries (the
    same resamples for both, so the spread of query difficulty cancels) and a two-sided bootstrap p-value, as
    `bootstrap.paired_bootstrap_diff`. Also how many queries a ranked better, equal and worse."""
    if metric not in a.per_query or metric not in b.per_query:
        raise ConfigError(f"metric {metric!r} is not among the results' metrics {a.metrics}: pick one of them")
    pa = a.per_query.set_index("query")[metric]
    pb = b.per_query.set_index("query")[metric]
    if set(pa.index) != set(pb.index):
        raise ValueError(f"{a.name} and {b.name} were measured on different queries: compare results of one data set")
    both = pd.concat([pa, pb.reindex(pa.index)], axis=1).dropna()
    diffs = (both.iloc[:, 0] - both.iloc[:, 1]).to_numpy(dtype=float)  # (n_queries,)
    out: dict = {
        "a": a.name,
        "b": b.name,
        "metric": metric,
        "n_queries": len(diffs),
        "diff": float(diffs.mean()) if len(diffs) else None,
        "ci95": None,
        "p_value": None,
        "a_better": int((diffs > 1e-12).sum()),
        "ties": int((np.abs(diffs) <= 1e-12).sum()),
        "b_better": int((diffs < -1e-12).sum()),
    }
    if n_boot == 0 or len(diffs) == 0:
        return out
    draws = np.stack(list(resample_indices(np.zeros(len(diffs)), n_boot, seed, stratified=False)))  # (n_boot, n)
    means = diffs[draws].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    diff = out["diff"]
    flipped = np.mean(means <= 0) if diff > 0 else np.mean(means >= 0) if diff < 0 else 1.0
    out.update(ci95=[float(lo), float(hi)], p_value=float(min(1.0, 2 * flipped)))
    return out


# ----------------------------------------------------------------------------------------- HR-scored pairs


def evaluate_matchers(
    matchers: Mapping[str, Matcher],
    data: RankingDataset,
    *,
    k_values: Sequence[int] = K_VALUES,
    min_grade: float = 1,
    max_grade: float = 7,
    relevant_grade: float = 5,
    corpus: Sequence[str] | None = None,
    anonymiser: Anonymiser | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> MatchingEvaluation:
    """Fit each matcher on `corpus` (default: the data's distinct resumes; never the grades), score every pair,
    and measure each job's ranking (module docstring); NDCG@5 leads, and every pair of matchers is compared on it.
    With `anonymiser`, the resumes are anonymised (from the text as read) before any matcher sees them; pass a
    `corpus` anonymised the same way (`load_candidates(..., anonymiser=...)`)."""
    task = hr_task(k_values, min_grade, max_grade, relevant_grade)
    if HEADLINE_K not in task.k_values:
        raise ConfigError(f"k_values={list(task.k_values)} lacks {HEADLINE_K}: NDCG@{HEADLINE_K} is the headline")
    if data.query_texts is None:
        raise ConfigError(
            "the pairs have no job text: map the column holding it (RankingSpec.query_text_col, --query-text-col), "
            "e.g. job_terms"
        )
    job_texts = data.query_texts
    resume_texts = data.texts if anonymiser is None else anonymised_texts(data.frame["text_raw"].tolist(), anonymiser)
    corpus = list(dict.fromkeys(resume_texts)) if corpus is None else list(corpus)
    return _evaluate(
        matchers,
        task,
        data,
        job_texts,
        resume_texts,
        jobs=list(dict.fromkeys(job_texts)),
        corpus=corpus,
        evaluated_on=f"{data.n_queries} jobs, {len(data)} HR-scored pairs ({Path(data.source).name}"
        f"{', resumes anonymised' if anonymiser is not None else ''}); fitted on {len(corpus):,} resumes",
        n_boot=n_boot,
        seed=seed,
    )


def _evaluate(
    matchers: Mapping[str, Matcher],
    task: RankingTask,
    data: RankingDataset,
    job_texts: list[str],
    resume_texts: list[str],
    *,
    jobs: list[str],
    corpus: list[str],
    evaluated_on: str,
    n_boot: int,
    seed: int,
) -> MatchingEvaluation:
    if not matchers:
        raise ConfigError("no matchers to evaluate: pass at least one, e.g. {'tfidf': TfidfMatcher()}")
    results, configs, fit_seconds, all_scores = {}, {}, {}, {}
    for name, matcher in matchers.items():
        started = time.perf_counter()
        matcher.fit(jobs, corpus)
        fitted = time.perf_counter()
        scores = matcher.score_pairs(job_texts, resume_texts)
        seconds = time.perf_counter() - fitted
        fit_seconds[name] = fitted - started
        configs[name] = {"kind": matcher.kind, **matcher.get_config().model_dump(mode="json")}
        results[name] = _rank(task, data, scores, n_boot=n_boot, seed=seed, name=name, seconds=seconds)
        all_scores[name] = scores
    headline = f"ndcg@{HEADLINE_K if HEADLINE_K in task.k_values else task.k_values[0]}"
    names = list(results)
    comparisons = [
        paired_difference(results[a], results[b], headline, n_boot=n_boot, seed=seed)
        for i, a in enumerate(names)
        for b in names[i + 1 :]
    ]
    return MatchingEvaluation(
        evaluated_on=evaluated_on,
        task=task,
        headline=headline,
        results=results,
        comparisons=comparisons,
        configs=configs,
        fit_seconds=fit_seconds,
        corpus_size=len(corpus),
        chance=_rank(task, data, np.zeros(len(data)), n_boot=0, name="chance (random order)"),
        scores=all_scores,
        data={"source": data.source, "content_hash": data.content_hash, **data.summary()},
    )


def _rank(task: RankingTask, data: RankingDataset, scores, **options) -> RankingResult:
    """`evaluate_task` of a ranking task, typed as what it returns for one."""
    return cast(RankingResult, evaluate_task(task, data, scores, **options))


# ----------------------------------------------------------------------------------------- family retrieval


def family_query(category: str) -> str:
    """A family's label as a query: 'INFORMATION-TECHNOLOGY' -> 'information technology'."""
    return re.sub(r"[-_\s]+", " ", category).strip().lower()


def split_families(categories: Sequence[str], per_family: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Row indices of the validation and test samples (`per_family` rows of each family each) and of the corpus
    (the rest); a family with fewer than 2 * per_family rows is refused, naming it."""
    if per_family < 1:
        raise ConfigError(f"per_family={per_family}: sample at least one resume per family")
    rng = np.random.default_rng(seed)
    cats = pd.Series(list(categories))
    parts: dict[str, list[int]] = {"validation": [], "test": [], "corpus": []}
    small = []
    for family, rows in cats.groupby(cats, sort=True).groups.items():
        rows = rng.permutation(np.asarray(rows))
        if len(rows) < 2 * per_family:
            small.append(f"{family} ({len(rows)})")
            continue
        parts["validation"].extend(rows[:per_family])
        parts["test"].extend(rows[per_family : 2 * per_family])
        parts["corpus"].extend(rows[2 * per_family :])
    if small:
        raise ConfigError(
            f"families with fewer than 2 x per_family={per_family} resumes: {', '.join(small)}: lower per_family"
        )
    return {name: np.sort(np.asarray(idx, dtype=int)) for name, idx in parts.items()}


def evaluate_family_retrieval(
    matchers: Mapping[str, Matcher],
    resumes: Dataset,
    *,
    part: str = "test",
    per_family: int = 6,
    families: Sequence[str] | None = None,
    k: int = 10,
    n_boot: int = 1000,
    seed: int = 0,
) -> MatchingEvaluation:
    """Each family's name ranks the `part` sample of resumes (all families' samples together); relevant = the
    resume's own family. `families` limits the queries and the sample to some families (a test slice). Matchers are
    fitted on the corpus part. NDCG@k (binary gains), recall@k and MAP, intervals over families."""
    if part not in FAMILY_PARTS:
        raise ConfigError(f"part={part!r}: use 'validation' (to compare settings) or 'test' (to report)")
    if resumes.multilabel:
        raise DataError("family retrieval needs one family per resume: load the resumes with one label column")
    categories = np.asarray(resumes.labels, dtype=object)
    parts = split_families(categories.tolist(), per_family, seed)
    keep = set(families) if families is not None else set(categories)
    if unknown := sorted(keep - set(categories)):
        raise ConfigError(f"families {unknown} are not among the data's {sorted(set(categories))}")
    all_texts, all_ids = resumes.texts, resumes.ids  # each a fresh list per access: read once
    sample = [i for i in parts[part] if categories[i] in keep]
    corpus = [all_texts[i] for i in parts["corpus"]]
    names = sorted(keep)
    texts = [all_texts[i] for i in sample]
    ids = [all_ids[i] for i in sample]
    pairs = from_pairs(
        queries=[f for f in names for _ in sample],
        candidates=[c for _ in names for c in ids],
        texts=[t for _ in names for t in texts],
        relevance=[float(categories[i] == f) for f in names for i in sample],
        query_texts=[family_query(f) for f in names for _ in sample],
    )
    return _evaluate(
        matchers,
        RankingTask(relevance="binary", k_values=(k,)),
        pairs,
        cast(list[str], pairs.query_texts),  # set by from_pairs(query_texts=...)
        pairs.texts,
        jobs=[family_query(f) for f in names],
        corpus=corpus,
        evaluated_on=f"family retrieval ({part}): {len(names)} family queries x {len(sample)} held-out resumes "
        f"({per_family} per family); fitted on {len(corpus):,} other resumes",
        n_boot=n_boot,
        seed=seed,
    )


# ----------------------------------------------------------------------------------------- ranking one job


def anonymised_texts(raw_texts: Sequence[str], anonymiser: Anonymiser) -> list[str]:
    """Resumes anonymised from the text as read (the rules read its lines, which cleaning joins), then cleaned and
    redacted like every text a model sees; each distinct resume is anonymised once."""
    from finesieve.data.preprocess import prepare

    distinct = list(dict.fromkeys(raw_texts))
    done = dict(zip(distinct, (r.text for r in anonymiser.anonymise_texts(distinct))))
    return list(prepare([done[t] for t in raw_texts])[0])


def load_candidates(
    path: str | Path, spec: ColumnSpec, anonymiser: Anonymiser | None = None
) -> tuple[list[str], list[str], int]:
    """(ids, cleaned and redacted texts, rows rejected) of a file of candidates; ids are `spec.id_col`, else the
    row numbers. Rows with a missing or empty text are rejected and counted, never dropped silently. With
    `anonymiser`, each text is anonymised first (`anonymised_texts`)."""
    from finesieve.data.load import iter_chunks
    from finesieve.data.preprocess import prepare
    from finesieve.data.validate import RowValidator

    validator = RowValidator(spec, str(path), labelled=False, unique_ids=spec.id_col is not None)
    ids: list[str] = []
    texts: list[str] = []
    rejected = 0
    for chunk in iter_chunks(path, spec, labelled=False):
        result = validator.validate(chunk)
        rejected += len(chunk) - len(result.accepted)
        if result.accepted.empty:
            continue
        raw = result.accepted["text_raw"].tolist()
        if anonymiser is not None:
            texts.extend(anonymised_texts(raw, anonymiser))
        else:
            texts.extend(prepare(raw, field=spec.text_col)[0])
        ids.extend(result.accepted["id"].astype(str))  # the id column's value, else the row number
    if not texts:
        raise DataError(f"{path}: no candidate with a text in column '{spec.text_col}' ({rejected} rows rejected)")
    return ids, texts, rejected


def resolve_matcher(ref: str) -> Matcher:
    """A saved matcher folder, or a new matcher of a kind (tfidf, bm25, embeddings)."""
    from finesieve.models.matching import new_matcher

    return load_matcher(ref) if is_matcher_folder(ref) else new_matcher(ref)


def rank_candidates(
    matcher: Matcher, job: str, ids: Sequence[str], texts: Sequence[str], *, top: int = 10, fit: bool = True
) -> list[dict]:
    """The `top` candidates for `job`, best first: rank, id, score. `fit` fits the matcher on the candidates first
    (their vocabulary and IDF); a loaded, fitted matcher is used as it is with fit=False."""
    if not job.strip():
        raise ConfigError("the job text is empty: give its description or skill terms, e.g. 'python; sql; etl'")
    if fit:
        matcher.fit([job], texts)
    scores = matcher.score_pairs([job] * len(texts), texts)
    order = np.argsort(-scores, kind="stable")[:top]  # ties keep file order
    return [{"rank": r + 1, "id": ids[i], "score": float(scores[i])} for r, i in enumerate(order)]


# ----------------------------------------------------------------------------------------- tables


def matching_table(evaluation: MatchingEvaluation) -> Table:
    """One row per matcher: the headline NDCG with its 95% interval, MAP, recall@5 (or the largest k), speed."""
    k = HEADLINE_K if HEADLINE_K in evaluation.task.k_values else max(evaluation.task.k_values)
    table = Table(title=evaluation.evaluated_on)
    for col in ("matcher", evaluation.headline.replace("ndcg", "NDCG"), "MAP", f"recall@{k}", "fit s", "score s"):
        table.add_column(col, justify="left" if col == "matcher" else "right")
    for name, r in evaluation.results.items():
        ci = r.ci.get(evaluation.headline)
        head = r.summary[evaluation.headline]
        table.add_row(
            name,
            "-" if head is None else f"{head:.3f}" + (f" [{ci[0]:.3f}-{ci[1]:.3f}]" if ci else ""),
            _f(r.summary["map"]),
            _f(r.summary[f"recall@{k}"]),
            f"{evaluation.fit_seconds[name]:.1f}",
            f"{r.seconds:.1f}",
        )
    if (c := evaluation.chance) is not None:  # the floor every matcher should clear
        table.add_row(c.name, _f(c.summary[evaluation.headline]), _f(c.summary["map"]), _f(c.summary[f"recall@{k}"]))
    return table


def comparison_lines(evaluation: MatchingEvaluation) -> list[str]:
    """One line per pair of matchers: the headline difference, its interval and the per-query tally."""
    lines = []
    for c in evaluation.comparisons:
        ci = f" [{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}]" if c["ci95"] else ""
        lines.append(
            f"{c['a']} - {c['b']}: {c['metric']} {c['diff']:+.3f}{ci}"
            + (f", p={c['p_value']:.3f}" if c["p_value"] is not None else "")
            + f"; better on {c['a_better']}, equal on {c['ties']}, worse on {c['b_better']} of {c['n_queries']} queries"
        )
    return lines


def ranked_table(rows: list[dict], title: str = "") -> Table:
    table = Table(title=title)
    for col in ("rank", "id", "score"):
        table.add_column(col, justify="left" if col == "id" else "right")
    for r in rows:
        table.add_row(str(r["rank"]), str(r["id"]), f"{r['score']:.4f}")
    return table


def _f(value) -> str:
    return "-" if value is None or (isinstance(value, float) and not np.isfinite(value)) else f"{value:.3f}"
