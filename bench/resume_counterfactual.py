"""The counterfactual fairness check on real resumes (evals.resume_counterfactual), before and after
anonymisation: how far a screening run's score for a resume's own family, and a matcher's score for a job, move
when only the candidate's name, pronouns or age change.

    PATH=.venv/bin:$PATH python bench/resume_counterfactual.py --screening RUN [--data-dir ../shared/data]
        [--resumes 60] [--job-resumes 9] [--out counterfactual.json]

RUN is a screening run on livecareer_resumes.csv (e.g. `finesieve fit tfidf --data .../livecareer_resumes.csv
--text-col resume_text --label-col category --id-col resume_id --positive INFORMATION-TECHNOLOGY --out RUN`); its
held-out test resumes are the ones checked. The matcher is the zero-shot embedding matcher on the first HR-scored
job, its own judged candidates as the pool (rank moves are counted among them).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from finesieve.data.anonymise import Anonymiser
from finesieve.data.split import read_split_members
from finesieve.evals.resume_counterfactual import ATTRIBUTES, resume_counterfactual
from finesieve.models.matching import new_matcher
from finesieve.runs import load_run


def table(name: str, check: dict) -> None:
    print(f"\n{name} ({check['n_resumes']} resumes): mean / largest score spread over each attribute's values")
    for attribute, sides in check["attributes"].items():
        line = f"  {attribute:9s}"
        for side, s in sides.items():
            moves = f", rank moves {s['mean_rank_moves']:.2f}" if s["mean_rank_moves"] is not None else ""
            line += f"  {side}: {s['mean_spread']:.4f} / {s['max_spread']:.4f}{moves}"
        print(line)
        gaps = sides["before"]["gap_by_value"]
        print("            before, gap by value: " + ", ".join(f"{v} {g:+.4f}" for v, g in gaps.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--screening", required=True, help="A screening run directory on livecareer_resumes.csv.")
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--resumes", type=int, default=60, help="Test-split resumes checked with the run.")
    parser.add_argument("--job-resumes", type=int, default=9, help="Candidates of the HR job checked with the matcher.")
    parser.add_argument("--out")
    args = parser.parse_args()
    started = time.perf_counter()
    anonymiser = Anonymiser()
    results = {}

    run = load_run(args.screening)
    frame = pd.read_csv(Path(args.data_dir) / "resumes" / "livecareer_resumes.csv", dtype=str, keep_default_na=False)
    test_ids = read_split_members(run.splits_path).ids["test"]
    sample = frame[frame["resume_id"].isin(test_ids)].sample(n=args.resumes, random_state=0)
    classes = [str(c) for c in run.scorer.classes_]
    own = np.array([classes.index(c) for c in sample["category"]])

    def own_family(texts: list[str]) -> np.ndarray:
        proba = np.asarray(run.scorer.predict_proba(texts))
        per_resume = len(texts) // len(own)
        return proba[np.arange(len(texts)), np.repeat(own, per_resume)]

    results["screening"] = resume_counterfactual(own_family, sample["resume_text"].tolist(), anonymiser=anonymiser)

    pairs = pd.read_csv(Path(args.data_dir) / "resumes" / "job_resume_hr_scores.csv", dtype=str, keep_default_na=False)
    job_id = pairs["job_id"].iloc[0]
    job = pairs[pairs["job_id"] == job_id]
    job_terms = job["job_terms"].iloc[0]
    candidates = job["resume_text"].drop_duplicates().tolist()[: args.job_resumes]
    matcher = new_matcher("embeddings")
    pool = matcher.score_pairs([job_terms] * len(candidates), candidates)

    def for_job(texts: list[str]) -> np.ndarray:
        return matcher.score_pairs([job_terms] * len(texts), texts)

    results["matching"] = resume_counterfactual(for_job, candidates, anonymiser=anonymiser, rank_among=pool)

    out = {name: check.to_dict() for name, check in results.items()}
    table(f"screening run {args.screening}: P(own family)", out["screening"])
    table(f"embedding matcher, job {job_terms!r}", out["matching"])
    print(f"\nvalues: {ATTRIBUTES}\n{time.perf_counter() - started:.0f} s")
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
