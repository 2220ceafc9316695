"""The monitor's report over time as one self-contained HTML page: plots per window, a table, and what drives drift.

    from finesieve.monitor.report import write_monitor_report
    report = {"model": "spam", "run": "runs/spam", "windows": [day1, day2, ...], "overall": whole_period}
    write_monitor_report(report, "monitor.html", thresholds=AlertThresholds.from_yaml("alerts.yaml"))

Each window (and `overall`) is one `finesieve.serve.monitoring.monitor_report` dict: messages and actions, flag
rate, slow evals with intervals, score drift per class, alerts, and, when the monitor computed them, input drift
("inputs") and the n-grams whose share rose most ("ngrams", with redacted example messages). The x axis of every
plot is the window's start. Missing pieces (no reviews, no stored texts, empty windows) leave gaps in the plots and
are named in a note under each, never a crash or a silently empty plot.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from finesieve import report as R
from finesieve.monitor.alerts import AlertThresholds

NAN = float("nan")
MAX_EXAMPLES = 3  # example messages shown per n-gram
EXAMPLE_CHARS = 240  # an example is cut to this many characters
ALERT_BOX = (
    '<div style="border: 2px solid #c60; background: #fff4e5; padding: 0.5rem 1rem; margin: 1rem 0;">'
    "<strong>{title}</strong><ul>{items}</ul></div>"
)


def write_monitor_report(report: dict, path: str | Path, *, thresholds: AlertThresholds | None = None) -> Path:
    """Write the over-time `report` ({"model", "run", "windows": [...], "overall": {...}}) as one HTML page at
    `path`. `thresholds` (default: `AlertThresholds()`) draws the alert lines: pass the ones the alerts used."""
    thresholds = thresholds or AlertThresholds()
    windows = list(report.get("windows") or [])
    overall = report.get("overall") or {}
    x = _window_starts(windows)
    sections = [
        _headline(report, windows, overall),
        R.section("Score drift per class", _score_drift(windows, x, thresholds)),
        R.section("Flag, review and block rates", _rates(windows, x)),
        R.section("Slow evals from reviewers", _slow_evals(windows, x)),
        R.section("Input drift", _inputs(windows, x, thresholds)),
        R.section("Per window", _window_table(windows)),
        R.section("What drives the drift (whole period)", _drivers(overall)),
    ]
    if report.get("shadow"):
        sections.append(R.section("Shadow model vs live (same messages)", _shadow(report["shadow"])))
    title = f"Monitor: {report.get('model', '?')}"
    return R.write_page(path, title, sections, subtitle=f"run {report.get('run', '?')}")


# ------------------------------------------------------------------------------------------------ sections


def _headline(report: dict, windows: Sequence[dict], overall: dict) -> str:
    since = overall.get("since") or (windows[0].get("since") if windows else None)
    until = overall.get("until") or (windows[-1].get("until") if windows else None)
    messages = overall.get("messages", sum(w.get("messages", 0) for w in windows))
    empty = [_label(w, i) for i, w in enumerate(windows) if not w.get("messages")]
    lines = [
        f"Model {report.get('model', '?')} (run {report.get('run', '?')}), from "
        f"{_short_time(since) or 'the first message'} to {_short_time(until) or 'the last message'} (UTC): "
        f"{messages:,} messages in {len(windows)} window(s)."
    ]
    flag = overall.get("flag_rate") or {}
    if flag.get("window") is not None:
        lines.append(f"Flag rate {R.fmt(flag['window'])} against {R.fmt(flag.get('reference'))} on validation.")
    if empty:
        lines.append(f"{len(empty)} window(s) hold no messages: {', '.join(empty)}.")
    parts = [R.paragraph(line) for line in lines]
    alerts = [("whole period", a) for a in overall.get("alerts", [])]
    alerts += [(_label(w, i), a) for i, w in enumerate(windows) for a in w.get("alerts", [])]
    if alerts:
        items = "".join(f"<li>{R.esc(where)}: {R.esc(alert)}</li>" for where, alert in alerts)
        parts.append(ALERT_BOX.format(title=f"{len(alerts)} alert(s)", items=items))
    else:
        parts.append(R.paragraph("No alert in any window or over the whole period."))
    return R.section("Summary", *parts)


def _score_drift(windows: Sequence[dict], x: list, thresholds: AlertThresholds) -> str:
    classes = sorted({c for w in windows for c in (w.get("drift") or {})})
    if not classes:
        return R.paragraph("No window has scores to compare with the reference: nothing to plot.", "note")
    fig, ax = plt.subplots(figsize=(9, 3.5))
    for c in classes:
        _line(ax, x, [(w.get("drift") or {}).get(c, {}).get("psi") for w in windows], label=c)
    if thresholds.psi is not None:
        ax.axhline(thresholds.psi, color="k", ls="--", lw=1, label=f"alert PSI {thresholds.psi:g}")
    _finish(ax, x, "score PSI against validation")
    note = (
        f"A drift alert needs the PSI above the line and the KS test's p-value below {thresholds.drift_pvalue:g}; "
        "gaps are windows without scores of that class."
    )
    return R.figure(fig) + R.paragraph(note, "note")


def _rates(windows: Sequence[dict], x: list) -> str:
    if not any(w.get("messages") for w in windows):
        return R.paragraph("No window holds messages: no rates to plot.", "note")
    fig, ax = plt.subplots(figsize=(9, 3.5))
    _line(ax, x, [(w.get("flag_rate") or {}).get("window") for w in windows], label="flagged (review + block)")
    for action, marker in (("review", "s"), ("block", "^")):
        _line(ax, x, [_action_rate(w, action) for w in windows], label=action, ls=":", marker=marker)
    reference = next(
        (w["flag_rate"]["reference"] for w in windows if (w.get("flag_rate") or {}).get("reference")), None
    )
    if reference is not None:
        ax.axhline(reference, color="k", ls="--", lw=1, label=f"validation flag rate {reference:.3f}")
    _finish(ax, x, "share of messages")
    return R.figure(fig)


def _slow_evals(windows: Sequence[dict], x: list) -> str:
    def estimates(name: str) -> list[dict]:
        return [(w.get("slow_evals") or {}).get(name) or {} for w in windows]

    figures = {name: estimates(name) for name in ("queue_precision", "overturn_rate", "recall")}
    if not any(e.get("value") is not None for es in figures.values() for e in es):
        return R.paragraph(
            "No reviewer has decided a message of these windows yet: queue precision, overturn rate and recall "
            "are unknown. Decide queued and audited items in the review UI, then run the monitor again.",
            "note",
        )
    fig, (ax_queue, ax_recall) = plt.subplots(1, 2, figsize=(11, 3.8))
    for name, label in (("queue_precision", "queue precision"), ("overturn_rate", "overturn rate")):
        _with_interval(ax_queue, x, figures[name], label)
    _finish(ax_queue, x, "share of reviews", ylim=(0, 1.02))
    _with_interval(ax_recall, x, figures["recall"], "recall (audit sample)")
    _finish(ax_recall, x, "estimated recall", ylim=(0, 1.02))
    note = "Bars: 95% intervals (Wilson for shares, bootstrap for recall); gaps: nothing reviewed."
    if all(e.get("value") is None for e in figures["recall"]):
        note += " Recall needs audited deliveries: no window has enough of them."
    return R.figure(fig) + R.paragraph(note, "note")


def _inputs(windows: Sequence[dict], x: list, thresholds: AlertThresholds) -> str:
    inputs = [w.get("inputs") or {} for w in windows]
    if not any(inputs):
        return R.paragraph(
            "No input statistics: the windows hold no stored texts (retention may have purged them) or the monitor "
            "did not compute them.",
            "note",
        )
    fig, axes = plt.subplots(2, 2, figsize=(11, 6.5))
    (ax_len, ax_oov), (ax_ent, ax_emb) = axes
    _line(ax_len, x, [(i.get("length") or {}).get("psi") for i in inputs], label="length PSI")
    if thresholds.length_psi is not None:
        ax_len.axhline(thresholds.length_psi, color="k", ls="--", lw=1, label=f"PSI {thresholds.length_psi:g}")
    _finish(ax_len, x, "message length PSI")
    _against_reference(ax_oov, x, [i.get("oov_rate") for i in inputs], "out-of-vocabulary rate")
    _finish(ax_oov, x, "share of unseen words")
    entities = sorted({e for i in inputs for e in (i.get("entity_share") or {})})
    for entity in entities:
        _against_reference(ax_ent, x, [(i.get("entity_share") or {}).get(entity) for i in inputs], entity)
    _finish(ax_ent, x, "share of messages with the entity")
    pvalues = [(i.get("embedding") or {}).get("p_value") for i in inputs]
    if any(p is not None for p in pvalues):
        _line(ax_emb, x, pvalues, label="embedding MMD p-value")
        if thresholds.embedding_pvalue is not None:
            limit = thresholds.embedding_pvalue
            ax_emb.axhline(limit, color="k", ls="--", lw=1, label=f"p = {limit:g}")
        ax_emb.set_yscale("log")  # permutation p-values run from 1 down to 1 / (permutations + 1)
        _finish(ax_emb, x, "p-value (small: the sample moved)")
    else:
        ax_emb.text(0.5, 0.5, "embedding distance not computed", ha="center", va="center", transform=ax_emb.transAxes)
        ax_emb.set_axis_off()
    missing = []
    if any(not i for i in inputs):
        missing.append("windows without stored texts are gaps")
    if all(p is None for p in pvalues):
        missing.append("no window has an embedding comparison (not computed)")
    if not entities:
        missing.append("no entity shares were recorded")
    fig.tight_layout()  # four panels: keep each one's axis labels off its neighbour
    note = "Dashed lines of a colour: that figure on validation." + "".join(f" {m[0].upper()}{m[1:]}." for m in missing)
    return R.figure(fig) + R.paragraph(note, "note")


def _window_table(windows: Sequence[dict]) -> str:
    if not windows:
        return R.paragraph("The report holds no window.", "note")
    classes = sorted({c for w in windows for c in (w.get("drift") or {})})
    rows = []
    for w in windows:
        evals = w.get("slow_evals") or {}
        actions = w.get("actions") or {}
        rows.append(
            [
                _short_time(w.get("since")),
                _short_time(w.get("until")),
                w.get("messages", 0),
                *(actions.get(a, 0) for a in ("deliver", "review", "block")),
                (w.get("flag_rate") or {}).get("window"),
                *((w.get("drift") or {}).get(c, {}).get("psi") for c in classes),
                *(_estimate(evals.get(name)) for name in ("queue_precision", "overturn_rate", "recall")),
                len(w.get("alerts", [])),
            ]
        )
    header = [
        "from",
        "until",
        "messages",
        "deliver",
        "review",
        "block",
        "flag rate",
        *(f"PSI {c}" for c in classes),
        "queue precision",
        "overturn rate",
        "recall",
        "alerts",
    ]
    return R.table(header, rows) + R.paragraph("Brackets: 95% intervals; n: the reviews each rests on.", "note")


def _drivers(overall: dict) -> str:
    ngrams = overall.get("ngrams")
    if ngrams is None or (not ngrams and not overall.get("inputs")):
        return R.paragraph(
            "The report has no n-gram analysis: the period's texts were not read (none stored, or the run keeps no "
            "input reference statistics).",
            "note",
        )
    if not ngrams:
        return R.paragraph("No n-gram's share of messages rose against the reference.", "note")
    shares = R.table(
        ["n-gram", "window share", "reference share", "lift"],
        [[g["ngram"], g["window_share"], g["reference_share"], g["lift"]] for g in ngrams],
    )
    examples = [[g["ngram"], _cut(text)] for g in ngrams for text in (g.get("examples") or [])[:MAX_EXAMPLES]]
    example_table = (
        R.table(["n-gram", "example message (redacted)"], examples)
        if examples
        else R.paragraph("No example messages were kept.", "note")
    )
    note = "Lift: window share / reference share, the n-grams whose share of messages rose most."
    return shares + R.paragraph(note, "note") + "<h3>Examples</h3>" + example_table


# ------------------------------------------------------------------------------------------------- helpers


def _shadow(comparison: dict) -> str:
    """Live vs shadow on the messages both scored (serve.shadow.shadow_comparison)."""
    reviewed = comparison.get("reviewed") or {}
    live, shadow = reviewed.get("live") or {}, reviewed.get("shadow") or {}
    flag = comparison.get("flag_rate") or {}
    rows = [
        (
            "versions",
            ", ".join(comparison.get("live_versions") or {}),
            ", ".join(comparison.get("shadow_versions") or {}),
        ),
        ("flag rate", R.fmt(flag.get("live")), R.fmt(flag.get("shadow"))),
        ("precision on reviewed messages", R.fmt(live.get("precision")), R.fmt(shadow.get("precision"))),
        ("recall on reviewed messages", R.fmt(live.get("recall")), R.fmt(shadow.get("recall"))),
    ]
    return R.paragraph(
        f"{comparison.get('messages', 0)} messages scored by both; they agree on flagging "
        f"{R.fmt(comparison.get('agreement'))} of them; score correlation {R.fmt(comparison.get('score_correlation'))}. "
        f"{reviewed.get('n', 0)} of them were reviewed ({reviewed.get('violations', 0)} violations); reviewers see "
        "mostly what the live model flagged, so the shadow's recall there is measured on the live model's catch.",
        "note",
    ) + R.table(["", "live", "shadow"], rows)


def _window_starts(windows: Sequence[dict]) -> list:
    """Each window's start as a datetime, or the window's number when any window lacks a start."""
    starts = [w.get("since") for w in windows]
    if starts and all(isinstance(s, str) for s in starts):
        return [datetime.fromisoformat(str(s)) for s in starts]
    return list(range(1, len(windows) + 1))


def _label(window: dict, i: int) -> str:
    return f"window {i + 1} ({_short_time(window.get('since')) or 'start'})"


def _short_time(iso: str | None) -> str:
    return iso.replace("T", " ")[:19] if iso else ""  # to the second: windows may be short


def _action_rate(window: dict, action: str) -> float | None:
    n = window.get("messages") or 0
    return (window.get("actions") or {}).get(action, 0) / n if n else None


def _values(values: Sequence[float | None]) -> np.ndarray:
    return np.array([NAN if v is None else float(v) for v in values])


def _line(ax, x: list, values: Sequence[float | None], **style) -> None:
    style = {"marker": "o", "ms": 4, **style}  # markers: a lone window, or one between gaps, shows
    ax.plot(x, _values(values), **style)


def _with_interval(ax, x: list, estimates: Sequence[dict], label: str) -> None:
    """Each window's estimate with its interval as an error bar (a band would vanish around a lone window)."""
    value = _values([e.get("value") for e in estimates])
    low, high = _values([e.get("low") for e in estimates]), _values([e.get("high") for e in estimates])
    yerr = [np.maximum(value - low, 0), np.maximum(high - value, 0)]
    ax.errorbar(x, value, yerr=yerr, marker="o", ms=4, capsize=3, label=label)


def _against_reference(ax, x: list, pairs: Sequence[dict | None], label: str) -> None:
    """A {"window", "reference"} figure per window: the window's as a line, the reference's dashed in its colour."""
    (line,) = ax.plot(x, _values([(p or {}).get("window") for p in pairs]), marker="o", ms=4, label=label)
    reference = _values([(p or {}).get("reference") for p in pairs])
    known = ~np.isnan(reference)  # joined across the gaps: the reference is there even when a window is empty
    ax.plot([t for t, k in zip(x, known) if k], reference[known], ls="--", color=line.get_color(), lw=1)


def _finish(ax, x: list, ylabel: str, ylim: tuple[float, float] | None = None) -> None:
    ax.set(ylabel=ylabel, xlabel="window start" if x and isinstance(x[0], datetime) else "window")
    if ylim is not None:
        ax.set_ylim(*ylim)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    if x and isinstance(x[0], datetime):
        ax.figure.autofmt_xdate()


def _estimate(e: dict | None) -> str:
    if not e or e.get("value") is None:
        return f"- (n={(e or {}).get('n', 0)})"
    return f"{e['value']:.3f} [{e['low']:.3f}-{e['high']:.3f}] (n={e['n']})"


def _cut(text: str) -> str:
    return text if len(text) <= EXAMPLE_CHARS else text[: EXAMPLE_CHARS - 1] + "…"
