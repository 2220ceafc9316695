"""The evaluation report: one HTML page comparing scorers on the same data, and its JSON twin.

ROC and PR curves of every scorer on one plot, score histograms per class, the metrics table with 95%
bootstrap intervals, ratios to the baseline, per-class and per-slice figures, confusion matrices and costs,
for scorers evaluated with a bias audit (`evals.bias`), its per-group table, plot and counterfactual swaps, and
for scorers evaluated against evasion (`evals.evasion`), plain vs evaded figures per kind of trick with a plot.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from finesieve import report as R
from finesieve.evals import metrics as M
from finesieve.evals.bias import BIAS_AUCS
from finesieve.evals.compare import ratio_sentence
from finesieve.evals.harness import EvalResult
from finesieve.outputs import write_text
from finesieve.report import json_safe


def _curves(results: Sequence[EvalResult]) -> str:
    fig, (ax_roc, ax_pr) = plt.subplots(1, 2, figsize=(11, 4.5))
    for r in results:
        if not 0 < r.y.sum() < len(r.y):
            continue
        fpr, tpr, _ = M.roc_curve(r.y, r.scores)
        ax_roc.plot(fpr, tpr, label=f"{r.name} (AUC {M.roc_auc(r.y, r.scores):.3f})")
        precision, recall, _ = M.pr_curve(r.y, r.scores)
        ax_pr.step(recall, precision, where="post", label=f"{r.name} (AP {M.pr_auc(r.y, r.scores):.3f})")
    ax_roc.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax_roc.set(xlabel="false positive rate", ylabel="true positive rate (recall)", title="ROC")
    prevalence = results[0].y.mean()
    ax_pr.axhline(prevalence, color="k", ls=":", lw=0.8, label=f"prevalence {prevalence:.3f}")
    ax_pr.set(xlabel="recall", ylabel="precision", title="Precision-recall", ylim=(0, 1.02))
    for ax in (ax_roc, ax_pr):
        ax.legend(fontsize=8, loc="lower right" if ax is ax_roc else "upper right")
        ax.grid(alpha=0.3)
    return R.figure(fig)


def _histograms(results: Sequence[EvalResult]) -> str:
    n = len(results)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.4), squeeze=False)
    bins = np.linspace(0, 1, 41)
    for ax, r in zip(axes[0], results):
        ax.hist(r.scores[r.y == 0], bins=bins, alpha=0.6, label="clean", density=True)
        ax.hist(r.scores[r.y == 1], bins=bins, alpha=0.6, label="violation", density=True)
        ax.axvline(r.threshold, color="k", ls="--", lw=1, label=f"threshold {r.threshold:.2f}")
        ax.set(title=r.name, xlabel="score", yscale="log")
        ax.legend(fontsize=7)
    return R.figure(fig)


def _with_ci(d: dict, key: str) -> str:
    """A scorer's metric `key` with its 95% interval from `d["ci95"]`, when it has one ("-" when undefined)."""
    v = d[key]
    if v is None:
        return "-"
    c = d["ci95"].get(key)
    return f"{v:.3f} [{c[0]:.3f}, {c[1]:.3f}]" if c else f"{v:.3f}"


def _metrics_table(comparison: dict) -> str:
    rows = []
    for name, d in comparison["scorers"].items():
        rows.append(
            [
                name,
                *(_with_ci(d, key) for key in ("roc_auc", "pr_auc", "precision", "recall", "f1")),
                d["flag_rate"],
                d["threshold"],
                d["threshold_source"],
                d["messages_per_second"],
            ]
        )
    return R.table(
        [
            "scorer",
            "ROC AUC",
            "PR AUC",
            "precision",
            "recall",
            "F1",
            "flag rate",
            "threshold",
            "threshold from",
            "msgs/s",
        ],
        rows,
    )


def _ratios(comparison: dict) -> str:
    rows = []
    for name, ratios in comparison["ratios"].items():
        diffs = comparison["differences"].get(name, {})
        auc = diffs.get("roc_auc")
        pr = diffs.get("pr_auc")
        rows.append(
            [
                name,
                ratios["precision"],
                ratios["recall"],
                ratios["f1"],
                f"{auc['diff']:+.3f} [{auc['ci'][0]:+.3f}, {auc['ci'][1]:+.3f}] p={auc['p_value']:.3f}" if auc else "-",
                f"{pr['diff']:+.3f} [{pr['ci'][0]:+.3f}, {pr['ci'][1]:+.3f}] p={pr['p_value']:.3f}" if pr else "-",
            ]
        )
    sentences = "".join(R.paragraph(ratio_sentence(comparison, n)) for n in comparison["ratios"])
    return (
        R.table(["scorer", "precision x", "recall x", "F1 x", "ROC AUC diff [95% CI]", "PR AUC diff [95% CI]"], rows)
        + sentences
    )


def _targets_and_cost(comparison: dict) -> str:
    rows = []
    for name, d in comparison["scorers"].items():
        tp, tr, cost = d["targets"]["at_precision"], d["targets"]["at_recall"], d["cost"]
        rows.append(
            [
                name,
                f"recall {tp['recall']:.3f} at t={tp['threshold']:.3f}" if tp["reachable"] else "not reachable",
                f"precision {tr['precision']:.3f} at t={tr['threshold']:.3f}" if tr["reachable"] else "not reachable",
                cost["expected_cost_per_message"],
                cost.get("expected_cost_at_optimal"),
            ]
        )
    first = next(iter(comparison["scorers"].values()))
    head = [
        "scorer",
        f"at precision {first['targets']['at_precision']['target']}",
        f"at recall {first['targets']['at_recall']['target']}",
        "cost / message at threshold",
        "cost / message at best threshold",
    ]
    note = R.paragraph(
        f"Costs: a miss costs {first['cost']['miss_cost']}, a false alarm {first['cost']['false_alarm_cost']}. "
        "Thresholds found here are chosen on the evaluation data itself and are therefore optimistic; "
        "operating thresholds should come from the validation split.",
        "note",
    )
    return R.table(head, rows) + note


def _per_class(results: Sequence[EvalResult]) -> str:
    parts = []
    for r in results:
        rows = [
            [c, e["n_positive"], e.get("roc_auc"), e.get("pr_auc"), e.get("precision_at_0_5"), e.get("recall_at_0_5")]
            for c, e in r.per_class.items()
        ]
        parts.append(
            f"<h3>{R.esc(r.name)}</h3>"
            + R.table(["class", "n", "ROC AUC", "PR AUC", "precision@0.5", "recall@0.5"], rows)
        )
        if r.confusion:
            labels = r.confusion["labels"]
            cm = [[labels[i], *row] for i, row in enumerate(r.confusion["matrix"])]
            parts.append(R.table(["true \\ predicted", *labels], cm))
    return "".join(parts)


def _slices(results: Sequence[EvalResult]) -> str:
    parts = []
    for r in results:
        for col, table in r.slices.items():
            rows = [
                [v, e["n"], e["n_positive"], e.get("roc_auc"), e["precision"], e["recall"], e["flag_rate"]]
                for v, e in table.items()
            ]
            parts.append(
                f"<h3>{R.esc(r.name)}: by {R.esc(col)}</h3>"
                + R.table([col, "n", "violations", "ROC AUC", "precision", "recall", "flag rate"], rows)
            )
    return "".join(parts)


def _figure_cell(f: dict) -> str:
    """A bias figure with its interval, or "-" and the reason it is missing."""
    if f["value"] is None:
        return f"- ({f['why_none']})"
    return f"{f['value']:.3f} [{f['ci95'][0]:.3f}, {f['ci95'][1]:.3f}]" if f["ci95"] else f"{f['value']:.3f}"


def _bias_plot(name: str, groups: dict) -> str:
    """Subgroup, BPSN and BNSP AUC per group (rows) with 95% intervals; groups with none of them are left out."""
    shown = [g for g, e in groups.items() if any(e[k]["value"] is not None for k in BIAS_AUCS)]
    if not shown:
        return R.paragraph(f"{name}: no group has enough messages of both classes for a bias AUC.", "note")
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(shown) + 1.2))
    for k, (key, label) in enumerate(zip(BIAS_AUCS, ("subgroup AUC", "BPSN AUC", "BNSP AUC"))):
        rows = [(i, groups[g][key]) for i, g in enumerate(shown) if groups[g][key]["value"] is not None]
        ys = [i + (k - 1) * 0.22 for i, _ in rows]
        xs = [f["value"] for _, f in rows]
        err = [[f["value"] - f["ci95"][0], f["ci95"][1] - f["value"]] if f["ci95"] else [0, 0] for _, f in rows]
        ax.errorbar(xs, ys, xerr=np.array(err).T.reshape(2, -1), fmt="o", ms=4, capsize=2, label=label)
    ax.set_yticks(range(len(shown)), shown)
    ax.invert_yaxis()
    ax.axvline(0.5, color="k", ls=":", lw=0.8)
    ax.set(xlabel="AUC (95% interval)", title=f"{name}: bias AUCs per identity group", xlim=(0, 1.02))
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(alpha=0.3)
    return R.figure(fig)


def _bias(results: Sequence[EvalResult]) -> str:
    parts = []
    for r in results:
        if r.bias is None:
            continue
        b = r.bias
        rows = [
            [
                g,
                e["category"],
                e["n"],
                e["n_positive"],
                *(_figure_cell(e[k]) for k in (*BIAS_AUCS, "fpr")),
                e["background_fpr"],
            ]
            for g, e in b["groups"].items()
            if e["n"]
        ]
        absent = [g for g, e in b["groups"].items() if not e["n"]]
        spread = [
            [k, v["spread"], f"{v['min_group']} {v['min']:.3f}", f"{v['max_group']} {v['max']:.3f}", v["n_groups"]]
            if v["spread"] is not None
            else [k, None, "-", "-", v["why_none"]]
            for k, v in b["spread"].items()
        ]
        gm = b["generalized_mean"]
        summary = ", ".join(
            f"{k} {v['value']:.3f} over {v['n_groups']} group(s)" for k, v in gm["per_metric"].items() if v["value"]
        )
        parts += [
            f"<h3>{R.esc(r.name)}</h3>",
            R.table(
                [
                    "group",
                    "category",
                    "n",
                    "violations",
                    "subgroup AUC",
                    "BPSN AUC",
                    "BNSP AUC",
                    "FPR on clean mentions",
                    "background FPR",
                ],
                rows,
            ),
            R.paragraph(
                f"Term list {b['terms']}; groups matched in no message: {', '.join(absent) or 'none'}. "
                f"False positive rate on clean messages that mention no group: {R.fmt(b['no_identity_fpr'])}.",
                "note",
            ),
            _bias_plot(r.name, b["groups"]),
            R.table(["figure", "spread (max - min)", "lowest", "highest", "groups"], spread),
            R.paragraph(
                f"Power means (p={gm['p']}) of the bias AUCs: {summary or 'none defined'}; Borkan et al.'s final "
                f"score (0.25 x overall AUC + 0.25 x each mean): {R.fmt(gm['final'])}.",
                "note",
            ),
        ]
        if b["counterfactual"]:
            swaps = sorted(b["counterfactual"], key=lambda s: (-s["flip_share"], -s["mean_abs_change"]))
            parts.append(
                R.table(
                    [
                        "swap",
                        "n",
                        "mean |change|",
                        "max |change|",
                        "mean change",
                        "decisions flipped",
                        "largest change: message",
                        "swapped",
                        "score before -> after",
                    ],
                    [
                        [
                            f"{s['source']} -> {s['target']}",
                            s["n"],
                            s["mean_abs_change"],
                            s["max_abs_change"],
                            s["mean_change"],
                            s["flip_share"],
                            s["example"]["text"],
                            s["example"]["swapped"],
                            f"{s['example']['before']:.3f} -> {s['example']['after']:.3f}",
                        ]
                        for s in swaps
                    ],
                )
            )
        parts += [R.paragraph(n, "note") for n in b["notes"]]
    return "".join(parts)


def _gap_cell(g: dict | None) -> str:
    if g is None:
        return "-"
    ci = f" [{g['ci95'][0]:+.3f}, {g['ci95'][1]:+.3f}]" if g.get("ci95") else ""
    return f"{g['value']:+.3f}{ci}"


def _evasion_plot(results: Sequence[EvalResult]) -> str:
    """ROC AUC per kind of trick, evaded (bars) against plain (ticks), one group of bars per scorer."""
    shown = [r for r in results if r.evasion is not None and r.evasion["by_kind"]]
    if not shown:
        return ""
    kinds = list(shown[0].evasion["by_kind"])
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(kinds) * len(shown) ** 0.5 + 2), 3.6))
    width = 0.8 / len(shown)
    for j, r in enumerate(shown):
        xs = np.arange(len(kinds)) + (j - (len(shown) - 1) / 2) * width
        evaded = [r.evasion["by_kind"].get(k, {}).get("evaded", {}).get("roc_auc") or np.nan for k in kinds]
        plain = [r.evasion["by_kind"].get(k, {}).get("plain", {}).get("roc_auc") or np.nan for k in kinds]
        ax.bar(xs, evaded, width * 0.9, label=f"{r.name} evaded")
        ax.scatter(xs, plain, marker="_", s=200, color="k", zorder=3)
    ax.set_xticks(range(len(kinds)), kinds, rotation=20)
    lows = [v for r in shown for e in r.evasion["by_kind"].values() for v in (e["evaded"]["roc_auc"],) if v]
    ax.set(ylabel="ROC AUC", ylim=(max(0.0, min(lows, default=0.5) - 0.05), 1.0))
    ax.set_title("ROC AUC per kind of evasion: bars evaded, ticks the same messages plain", fontsize=10)
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(axis="y", alpha=0.3)
    return R.figure(fig)


def _evasion(results: Sequence[EvalResult]) -> str:
    evaluated = [r for r in results if r.evasion is not None]
    rows = [
        [
            r.name,
            e["n_changed"],
            e["plain"]["roc_auc"],
            e["evaded"]["roc_auc"],
            _gap_cell(e["gap"]["roc_auc"]),
            e["plain"]["pr_auc"],
            e["evaded"]["pr_auc"],
            _gap_cell(e["gap"]["pr_auc"]),
            e["plain"]["recall"],
            e["evaded"]["recall"],
        ]
        for r in evaluated
        for e in [r.evasion]
    ]
    parts = [
        R.table(
            [
                "scorer",
                "messages changed",
                "ROC AUC plain",
                "evaded",
                "gap [95%]",
                "PR AUC plain",
                "evaded",
                "gap [95%]",
                "recall plain",
                "evaded",
            ],
            rows,
        ),
        _evasion_plot(evaluated),
    ]
    for r in evaluated:
        kinds = [
            [
                k,
                e["n"],
                e["n_violation"],
                e["plain"]["roc_auc"],
                e["evaded"]["roc_auc"],
                e["gap_roc_auc"],
                e["plain"]["recall"],
                e["evaded"]["recall"],
            ]
            for k, e in r.evasion["by_kind"].items()
        ]
        parts.append(f"<h3>{R.esc(r.name)}: per kind</h3>")
        parts.append(
            R.table(["kind", "n", "violations", "ROC AUC plain", "evaded", "gap", "recall plain", "evaded"], kinds)
        )
        if r.evasion["examples"]:
            parts.append(
                R.table(
                    ["violation", "evaded", "kind", "score plain -> evaded"],
                    [
                        [x["text"], x["evaded"], x["kind"], f"{x['before']:.3f} -> {x['after']:.3f}"]
                        for x in r.evasion["examples"]
                    ],
                )
            )
    return "".join(parts)


def _functional_plot(results: Sequence[EvalResult]) -> str:
    """Accuracy per functionality with Wilson 95% intervals, one marker per scorer."""
    shown = [r for r in results if r.functional is not None]
    funcs = list(shown[0].functional["functionalities"])
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(funcs) + 1.4))
    for j, r in enumerate(shown):
        entries = [r.functional["functionalities"].get(f) for f in funcs]
        ys = [i + (j - (len(shown) - 1) / 2) * 0.8 / len(shown) for i, e in enumerate(entries) if e]
        xs = [e["accuracy"] for e in entries if e]
        err = np.array(
            [[e["accuracy"] - e["accuracy_ci95"][0], e["accuracy_ci95"][1] - e["accuracy"]] for e in entries if e]
        )
        ax.errorbar(xs, ys, xerr=err.T, fmt="o", ms=4, capsize=2, label=r.name)
    ax.set_yticks(range(len(funcs)), funcs)
    ax.invert_yaxis()
    ax.set(
        xlabel="accuracy (Wilson 95% interval)",
        xlim=(-0.02, 1.02),
        title="Functional tests: accuracy per functionality",
    )
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(alpha=0.3)
    return R.figure(fig)


def _accuracy_cell(e: dict) -> str:
    return f"{e['accuracy']:.3f} [{e['accuracy_ci95'][0]:.2f}, {e['accuracy_ci95'][1]:.2f}]"


def _functional(results: Sequence[EvalResult]) -> str:
    parts = [_functional_plot(results)]
    for r in results:
        f = r.functional
        if f is None:
            continue
        parts.append(f"<h3>{R.esc(r.name)}: overall accuracy {_accuracy_cell(f)} on {f['n']:,} cases</h3>")
        parts.append(
            R.table(
                ["functionality", "cases", "violations", "accuracy [95%]", "flag rate"],
                [
                    [k, e["n"], e["n_violation"], _accuracy_cell(e), e["flag_rate"]]
                    for k, e in f["functionalities"].items()
                ],
            )
        )
        if f["targets"]:
            parts.append(
                R.table(
                    ["target group", "cases", "violations", "accuracy [95%]", "flag rate"],
                    [[k, e["n"], e["n_violation"], _accuracy_cell(e), e["flag_rate"]] for k, e in f["targets"].items()],
                )
            )
    return "".join(parts)


def operating_points_section(points: dict) -> str:
    """`evals.operating_points.matched_operating_points` as a report section: each system at the reference's review
    volume and at its recall."""
    ref = points["reference"]
    rows = [
        [
            name,
            e["at_volume"]["caught"],
            f"{e['at_volume']['more_caught']:+d}",
            e["at_volume"]["precision"],
            e["at_recall"]["flagged"],
            e["at_recall"]["review_saved"],
            e["at_recall"]["precision"],
        ]
        for name, e in points["systems"].items()
    ]
    return R.section(
        f"At the {ref['name']}'s operating point",
        R.paragraph(
            f"The {ref['name']} sends {ref['flagged']:,} messages ({ref['flag_rate']:.1%}) to review and catches "
            f"{ref['caught']:,} violations there (precision {R.fmt(ref['precision'])}, recall {R.fmt(ref['recall'])}). "
            "Each system below ranks the same messages by its score: with the same review volume, how many "
            "violations its top messages hold; to catch as many as the reference, how many messages it must send.",
            "note",
        ),
        R.table(
            [
                "system",
                f"caught in {ref['flagged']:,} reviews",
                "vs reference",
                "precision",
                f"reviews to catch {ref['caught']:,}",
                "review saved",
                "precision",
            ],
            rows,
        ),
    )


def write_eval_report(
    path: str | Path,
    results: Sequence[EvalResult],
    comparison: dict,
    title: str,
    subtitle: str = "",
    lead_sections: Sequence[str] = (),
    extra: dict | None = None,
    notes: Sequence[str] = (),
) -> Path:
    """`lead_sections` (HTML from `report.section`) open the page; `extra` is added to the JSON twin. `notes`
    (e.g. rows the run was trained on) head the page, where nobody reads past them."""
    warnings = [R.section("Read this first", *(R.paragraph(n) for n in notes))] if notes else []
    sections = [
        *warnings,
        *lead_sections,
        R.section(
            "Metrics",
            _metrics_table(comparison),
            R.paragraph(
                "Brackets: 95% stratified bootstrap intervals. Positive class(es): " + ", ".join(results[0].positive),
                "note",
            ),
        ),
        R.section("ROC and precision-recall curves", _curves(results)),
        R.section("Score histograms", _histograms(results)),
    ]
    if comparison["ratios"]:
        sections.append(R.section(f"Against the baseline ({comparison['baseline']})", _ratios(comparison)))
    sections += [
        R.section("Target operating points and cost", _targets_and_cost(comparison)),
        R.section("Per class", _per_class(results)),
        R.section("Per slice", _slices(results)),
    ]
    if any(r.bias is not None for r in results):
        sections.append(
            R.section(
                "Bias audit per identity group",
                R.paragraph(
                    "Borkan et al. 2019: subgroup AUC on the messages that mention the group; BPSN AUC ranks the "
                    "group's clean messages against violations without it (low: false alarms on the group); BNSP "
                    "AUC its violations against clean messages without it (low: misses). Counterfactual: identity "
                    "terms swapped between groups of a category and the messages rescored; decisions at the "
                    "operating threshold.",
                    "note",
                ),
                _bias(results),
            )
        )
    if any(r.functional is not None for r in results):
        sections.append(
            R.section(
                "Functional tests",
                R.paragraph(
                    "Hand-written cases, each tagged with the behaviour it tests (after HateCheck, Röttger et al. "
                    "2021): accuracy of each scorer's decisions at its operating threshold, per functionality and "
                    "per target group.",
                    "note",
                ),
                _functional(results),
            )
        )
    if any(r.evasion is not None for r in results):
        config = next(r.evasion["config"] for r in results if r.evasion is not None)
        sections.append(
            R.section(
                "Evasion: the same messages with the tricks people use to slip past filters",
                R.paragraph(
                    "Each message changed by one trick drawn at random from "
                    f"{', '.join(config['kinds'])} (about {config['rate']:.0%} of its words; seed {config['seed']}); "
                    "violations and clean messages alike. Gap: plain minus evaded, with a paired bootstrap "
                    "interval; recall at each scorer's operating threshold.",
                    "note",
                ),
                _evasion(results),
            )
        )
    out = R.write_page(path, title, sections, subtitle)
    write_text(
        Path(out).with_suffix(".json"),
        json.dumps(json_safe({**comparison, **(extra or {}), "notes": list(notes)}), indent=2),
    )
    return out
