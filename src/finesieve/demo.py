"""`finesieve demo`: the whole path on real data with the embedded defaults, start to finish.

Today: review the Davidson et al. tweets (hate speech / offensive / neither), split them reproducibly,
fit the two reference scorers (a keyword lexicon, the "legacy" system, and TF-IDF + logistic regression),
choose their thresholds on the validation split, and compare them on the held-out test split for the
production-like target, hate_speech vs the rest. Writes the data review and the evaluation report as HTML.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from finesieve.data.errors import DataError
from finesieve.data.load import load_dataset
from finesieve.data.review import review, summary_lines, write_review
from finesieve.data.spec import ColumnSpec
from finesieve.data.split import SplitConfig, make_splits
from finesieve.evals.compare import compare, ratio_sentence
from finesieve.evals.report import write_eval_report
from finesieve.train.recipe import train_reference

DAVIDSON = Path("davidson_hate_offensive") / "davidson_hate_offensive.csv"
POSITIVE = ["hate_speech"]
REFERENCES = {"legacy rules": "rules:builtin:hate_speech", "tfidf+logreg": "tfidf"}


def find_data_dir(explicit: str | Path | None = None) -> Path:
    """The shared data folder: the argument, $FINESIEVE_DATA, or a `shared/data` above the working directory."""
    if explicit:
        return Path(explicit)
    if os.environ.get("FINESIEVE_DATA"):
        return Path(os.environ["FINESIEVE_DATA"])
    for start in (Path.cwd(), Path(__file__).resolve()):
        for parent in [start, *start.parents]:
            if (parent / "shared" / "data" / DAVIDSON).exists():
                return parent / "shared" / "data"
    raise DataError(
        "the demo data was not found: pass --data-dir pointing at the folder that holds "
        f"{DAVIDSON} (or set FINESIEVE_DATA)"
    )


def run_demo(out: str | Path = "finesieve-demo", data_dir: str | Path | None = None, max_rows: int | None = None,
             n_boot: int = 1000, console: Console | None = None) -> dict:
    console = console or Console()
    out = Path(out)
    started = time.perf_counter()
    data_file = find_data_dir(data_dir) / DAVIDSON
    console.rule("[bold]1. Data review")
    dataset = load_dataset(data_file, ColumnSpec(text_col="text", label_cols=("label",)), max_rows=max_rows,
                           rejects_path=_mkdir(out) / "rejected_rows.jsonl")
    splits = make_splits(dataset, SplitConfig(test_frac=0.1, val_frac=0.1, seed=0))
    reviewed = review(dataset, split=splits.assignment)
    for line in summary_lines(reviewed):
        console.print(line)
    review_path = write_review(reviewed, dataset, out / "data_review.html")
    console.print(f"split: {splits.sizes()} (split hash {splits.split_hash[:12]}); review written to {review_path}")

    console.rule("[bold]2. Reference scorers: fit on train, threshold on validation")
    results = []
    test = splits.dataset("test")
    for name, ref in REFERENCES.items():
        t0 = time.perf_counter()
        fitted = train_reference(ref, dataset, positive=POSITIVE, splits=splits, out=out / "runs" / name.split()[0],
                                 n_boot=n_boot, name=name)
        console.print(f"{name}: fitted in {time.perf_counter() - t0:.1f} s, threshold {fitted.threshold:.3f} "
                      f"({fitted.threshold_source}); run saved to {fitted.run_dir}")
        results.append(fitted.test_result)

    console.rule("[bold]3. Side by side on the held-out test split (hate_speech vs the rest)")
    comparison = compare(results, baseline="legacy rules", n_boot=n_boot)
    comparison["evaluated_on"] = f"held-out test split of {data_file.name} (n={len(test):,})"
    console.print(comparison_table(comparison))
    for name in comparison["ratios"]:
        console.print(ratio_sentence(comparison, name))
    report_path = write_eval_report(out / "eval_report.html", results, comparison,
                                    "finesieve evaluation: hate_speech vs the rest",
                                    subtitle=comparison["evaluated_on"])
    console.print(f"evaluation report: {report_path} (and {report_path.with_suffix('.json').name}); "
                  f"data review: {review_path}; total {time.perf_counter() - started:.0f} s")
    return {"review": reviewed, "comparison": comparison, "report": str(report_path), "review_report": str(review_path)}


def comparison_table(comparison: dict) -> Table:
    table = Table(title=comparison.get("evaluated_on", ""))
    for col in ("scorer", "ROC AUC", "PR AUC", "precision", "recall", "F1", "flag rate", "msgs/s"):
        table.add_column(col, justify="left" if col == "scorer" else "right")
    for name, d in comparison["scorers"].items():
        ci = d["ci95"].get("roc_auc")
        auc = f"{d['roc_auc']:.3f}" + (f" [{ci[0]:.3f}-{ci[1]:.3f}]" if ci else "") if d["roc_auc"] is not None else "-"
        table.add_row(name, auc, _f(d["pr_auc"]), _f(d["precision"]), _f(d["recall"]), _f(d["f1"]),
                      _f(d["flag_rate"]), f"{d['messages_per_second']:,.0f}" if d["messages_per_second"] else "-")
    return table


def production_table(rows: list[dict], title: str = "", currency: str = "USD") -> Table:
    """The table the production case reported: quality, share routed to the model, speed and cost per system."""
    table = Table(title=title)
    for col in ("system", "ROC AUC", "PR AUC", "precision", "recall", "F1", "to model", "msgs/s", f"{currency}/M msgs"):
        table.add_column(col, justify="left" if col == "system" else "right")
    for r in rows:
        ci = r.get("roc_auc_ci95")
        auc = "-" if r.get("roc_auc") is None else f"{r['roc_auc']:.3f}" + (f" [{ci[0]:.3f}-{ci[1]:.3f}]" if ci else "")
        route = "-" if r.get("route") is None else f"{r['route']:.1%}"
        mps = "-" if not r.get("messages_per_second") else f"{r['messages_per_second']:,.0f}"
        cost = "-" if r.get("cost_per_million") is None else f"{r['cost_per_million']:,.3f}"
        table.add_row(r["system"], auc, _f(r.get("pr_auc")), _f(r.get("precision")), _f(r.get("recall")),
                      _f(r.get("f1")), route, mps, cost)
    return table


def _f(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
