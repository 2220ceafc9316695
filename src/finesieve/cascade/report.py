"""HTML sections about a fitted cascade, for the evaluation report: the systems side by side, the budget
trade-off searched on validation (plot), the targets and what is guaranteed, the rules, costs and actions."""

from __future__ import annotations

import matplotlib.pyplot as plt

from finesieve import report as R
from finesieve.cascade.build import CascadeRun
from finesieve.cascade.cost import PriceTable


def systems_table(rows: list[dict], currency: str = "USD") -> str:
    header = [
        "system",
        "ROC AUC",
        "PR AUC",
        "precision",
        "recall",
        "F1",
        "to model",
        "msgs/s",
        f"{currency} per M msgs",
        "note",
    ]
    body = [
        [
            r["system"],
            r.get("roc_auc"),
            r.get("pr_auc"),
            r.get("precision"),
            r.get("recall"),
            r.get("f1"),
            "-" if r.get("route") is None else f"{r['route']:.1%}",
            None if not r.get("messages_per_second") else round(r["messages_per_second"]),
            r.get("cost_per_million"),
            r.get("note", ""),
        ]
        for r in rows
    ]
    return R.table(header, body)


def tradeoff_plot(run: CascadeRun) -> str:
    """Recall kept and queue precision against the share routed to the model, on the validation split."""
    fit = run.fit
    rows = [r for r in fit.tradeoff if r.get("recall_retention") is not None]
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    if rows:
        route = [r["route"] for r in rows]
        ax.plot(route, [r["recall_retention"] for r in rows], label="recall kept (share of the model's)")
        ax.plot(
            route,
            [r["precision"] / fit.model_alone["precision"] for r in rows],
            label="queue precision (share of the model's)",
        )
    ax.axvline(fit.targets["budget"], color="k", ls="--", lw=1, label=f"budget {fit.targets['budget']:.0%}")
    ax.axhline(fit.targets["recall_floor"], color="tab:blue", ls=":", lw=1, label="recall floor")
    ax.axvline(fit.chosen["route"], color="tab:green", lw=1.5, label=f"chosen {fit.chosen['route']:.1%}")
    ax.set(
        xlabel="share of validation messages routed to the fine-tuned model",
        ylabel="relative to the model alone",
        xlim=(0, min(1.0, max(0.5, fit.targets["budget"] * 2.5))),
        ylim=(0, 1.3),
        title="Cascade trade-off on the validation split (review threshold refitted at each route)",
    )
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    return R.figure(fig)


def cascade_sections(run: CascadeRun, rows: list[dict], prices: PriceTable) -> list[str]:
    currency = prices.currency
    fit, t = run.fit, run.fit.thresholds
    c, alone = fit.chosen, fit.model_alone
    status = "All targets met on validation." if fit.feasible else "NOT all targets met: " + " ".join(fit.messages)
    targets = R.table(
        ["", "route", "recall", "precision", "review threshold"],
        [
            ["fine-tuned model alone", 1.0, alone["recall"], alone["precision"], alone["threshold"]],
            ["targets", fit.targets["budget"], fit.targets["recall"], fit.targets["review_precision"], None],
            ["cascade (chosen)", c["route"], c["recall"], c["precision"], c["review"]],
        ],
    )
    rules = (
        R.table(
            ["rule", "policy action", "in the cascade", "fired (val)", "precision", "why"],
            [
                [name, r["policy_action"], r["mode"], r["support"], r.get("precision"), r["reason"]]
                for name, r in fit.rules.items()
            ],
        )
        if fit.rules
        else R.paragraph("No rules stage.", "note")
    )
    blocks = (
        R.table(
            ["category", "block threshold", "why"],
            [[cat, b.get("threshold"), b["reason"]] for cat, b in fit.blocks.items()],
        )
        if fit.blocks
        else R.paragraph("Auto-block disabled: every flagged message goes to review.", "note")
    )
    cost = run.costs["cascade"]
    stages = R.table(
        ["stage", "msgs/s (every message)", "share of messages it sees", f"{currency} per M msgs (every message)"],
        [
            [name, sc.messages_per_second(), cost["reach"].get(name, 0.0), sc.per_million(prices)]
            for name, sc in run.stage_costs.items()
        ],
    )
    actions = R.table(["action", "messages (test)"], [[a, n] for a, n in cost["actions"].items()]) + R.table(
        ["decided by", "messages (test)"], [[s, n] for s, n in cost["decided_by"].items()]
    )
    return [
        R.section(
            "Systems side by side (held-out test split)",
            systems_table(rows, currency),
            R.paragraph(
                "'to model': share of messages the fine-tuned model scores. Cost: measured latency on "
                "this machine times the price table; the hosted-API row prices the prompt baseline's "
                "tokens and is not measured offline.",
                "note",
            ),
        ),
        R.section(
            "Cascade thresholds and targets (validation split)",
            R.paragraph(status),
            targets,
            R.paragraph(
                f"Thresholds: escalate at pre-filter score {t.escalate}, review at model score "
                f"{t.review:.4f}. Guarantee: {fit.guarantee}",
                "note",
            ),
            tradeoff_plot(run),
        ),
        R.section("Rules and auto-block", rules, blocks),
        R.section("Cascade actions and stages", actions, stages),
    ]
