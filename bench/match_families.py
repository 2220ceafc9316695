"""Family retrieval on the livecareer resumes: each of the 24 job families' names ("information technology") is a
query over held-out resumes (6 per family), relevant = the same family. The matchers' settings were chosen on the
validation part; this prints the test part (or --part validation), NDCG@10 / recall@10 / MAP with intervals that
resample families, and the paired differences.

    PATH=.venv/bin:$PATH python bench/match_families.py [--data ../shared/data/resumes/livecareer_resumes.csv]
        [--part test|validation] [--out families.json]      # ~2-3 min on one core (the embeddings dominate)
"""

from __future__ import annotations

import argparse
import json
import time

from rich.console import Console

from finesieve.evals.matching import comparison_lines, evaluate_family_retrieval, load_family_resumes, matching_table
from finesieve.models.matching import new_matcher
from finesieve.report import json_safe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/resumes/livecareer_resumes.csv")
    parser.add_argument("--part", choices=("test", "validation"), default="test")
    parser.add_argument("--per-family", type=int, default=6)
    parser.add_argument("--out", help="Write every figure as JSON here.")
    args = parser.parse_args()

    started = time.perf_counter()
    resumes = load_family_resumes(args.data)
    matchers = {
        "tfidf": new_matcher("tfidf"),
        "bm25": new_matcher("bm25"),
        "embeddings": new_matcher("embeddings"),
        "embeddings (mean pooling)": new_matcher("embeddings", pooling="mean"),
    }
    evaluation = evaluate_family_retrieval(matchers, resumes, part=args.part, per_family=args.per_family)
    Console(width=140).print(matching_table(evaluation))
    for line in comparison_lines(evaluation):
        print(line)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(json_safe(evaluation.to_dict()), fh, indent=2)
    print(f"{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
