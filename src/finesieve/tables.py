"""Terminal tables of results, shared by the CLI commands and the demo: plain dicts in, a rich `Table` out.

    Console().print(comparison_table(side_by_side.comparison))   # `finesieve eval`: one row per scorer
    Console().print(production_table(summary_rows(cascade_run)))  # `finesieve cascade fit` and the demo

They only format: every figure comes computed in the dicts (`finesieve.evals.compare.compare` for the
comparison, `finesieve.cascade.build.summary_rows` for the production rows), so this module imports no
other finesieve module and any layer may print with it.
"""

from __future__ import annotations

from rich.table import Table


def comparison_table(comparison: dict) -> Table:
    """One row per scorer of `compare(...)`: ROC AUC with its 95% interval, PR AUC, thresholded metrics, speed."""
    table = Table(title=comparison.get("evaluated_on", ""))
    evaded = any("evasion" in d for d in comparison["scorers"].values())
    multiclass = any("multiclass" in d for d in comparison["scorers"].values())
    columns = ("scorer", "ROC AUC", *(("evaded AUC",) if evaded else ()), "PR AUC", "precision", "recall", "F1")
    columns += ("accuracy [95%]", "macro-F1") if multiclass else ()
    for col in (*columns, "flag rate", "msgs/s"):
        table.add_column(col, justify="left" if col == "scorer" else "right")
    for name, d in comparison["scorers"].items():
        ci = d["ci95"].get("roc_auc")
        auc = f"{d['roc_auc']:.3f}" + (f" [{ci[0]:.3f}-{ci[1]:.3f}]" if ci else "") if d["roc_auc"] is not None else "-"
        evaded_auc = [_f(d["evasion"]["evaded"]["roc_auc"]) if "evasion" in d else "-"] if evaded else []
        argmax = []
        if multiclass:  # accuracy and macro-F1 of the argmax class, over all classes (screening's figures)
            mc = d.get("multiclass") or {}
            ci = mc.get("accuracy_ci95")
            argmax = [_f(mc.get("accuracy")) + (f" [{ci[0]:.3f}-{ci[1]:.3f}]" if ci else ""), _f(mc.get("macro_f1"))]
        table.add_row(
            name,
            auc,
            *evaded_auc,
            _f(d["pr_auc"]),
            _f(d["precision"]),
            _f(d["recall"]),
            _f(d["f1"]),
            *argmax,
            _f(d["flag_rate"]),
            f"{d['messages_per_second']:,.0f}" if d["messages_per_second"] else "-",
        )
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
        table.add_row(
            r["system"],
            auc,
            _f(r.get("pr_auc")),
            _f(r.get("precision")),
            _f(r.get("recall")),
            _f(r.get("f1")),
            route,
            mps,
            cost,
        )
    return table


def _f(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def operating_points_table(points: dict) -> Table:
    """`evals.operating_points.matched_operating_points`: each system at the reference's volume and recall."""
    ref = points["reference"]
    table = Table(
        title=f"at the {ref['name']}'s operating point: {ref['flagged']:,} messages to review, "
        f"{ref['caught']:,} violations caught (recall {ref['recall']:.3f})"
    )
    for col in (
        "system",
        f"caught in {ref['flagged']:,}",
        "vs reference",
        f"reviews to catch {ref['caught']:,}",
        "saved",
    ):
        table.add_column(col, justify="left" if col == "system" else "right")
    for name, e in points["systems"].items():
        saved = e["at_recall"]["review_saved"]
        table.add_row(
            name,
            f"{e['at_volume']['caught']:,}",
            f"{e['at_volume']['more_caught']:+,}",
            f"{e['at_recall']['flagged']:,}",
            "-" if saved is None else f"{saved:.0%}",
        )
    return table
