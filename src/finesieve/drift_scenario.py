"""The drift scenario on real data: a spam campaign the model never saw arrives in production. Does the loop notice,
and does retraining on the reviewers' labels recover without forgetting?

    finesieve scenario drift --out scenario/             # the full SMS Spam Collection (bench/drift_scenario.sh)
    from finesieve.drift_scenario import ScenarioConfig, run_scenario
    figures = run_scenario(ScenarioConfig(data="../shared/data/sms_spam/sms_spam.csv"), out="scenario/")

The SMS Spam Collection is split by message style. The "prize and cash" campaign (spam that mentions a prize, a
win, a claim, cash, urgency or pounds: about 270 of the 598 spam messages) is held back; the parent model is trained
on everything else. Production traffic is then simulated in time order:

    before the shift   messages like the training data (held-out ham and the other spam)
    after the shift    the same mix with the campaign arriving as `campaign_share` of the traffic

Every message is scored by the parent run through batch scoring (`serve.batch.score_file`, what `finesieve score`
does), so the monitor reads the same scored file a user would give it. Reviewers are simulated with the true
labels: every flagged message is reviewed (the queue), and `audit_rate` of the delivered ones (the random audit
sample); their decisions are written as `data export-reviews` writes them.

What is measured:
  detection       the first window after the shift whose monitor raises an alert; the delay in messages;
  false alarms    the share of windows of the same size drawn from unshifted traffic that raise an alert;
  recovery        `finesieve retrain` on the reviewed messages (parent training split + reviewed rows), with and
                  without replay of the parent's training data, against an oracle trained with the campaign from
                  the start, on the held-out campaign messages mixed with held-out old traffic (ROC AUC);
  forgetting      ROC AUC on the parent's fixed test split, for each of them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from finesieve.data.dataset import Dataset
from finesieve.data.errors import ConfigError
from finesieve.data.load import load_dataset
from finesieve.data.spec import ColumnSpec
from finesieve.data.split import SplitConfig
from finesieve.evals.gate import GateConfig
from finesieve.evals.metrics import roc_auc
from finesieve.models.base import positive_scores
from finesieve.models.finetune_config import FinetuneConfig
from finesieve.monitor.report import write_monitor_report
from finesieve.monitor.scored_file import monitor_file, read_scored_file
from finesieve.monitor.window import Traffic, load_reference, window_report
from finesieve.outputs import write_text
from finesieve.runs import load_run
from finesieve.serve.batch import score_file
from finesieve.train.finetune import train_finetune
from finesieve.train.recipe import train_reference
from finesieve.train.replay import run_data_splits
from finesieve.train.retrain import load_fresh, retrain

# Spam that promises a prize, a win, cash or urgency, or names a sum in pounds: 266 of the 598 spam messages.
CAMPAIGN = r"(?:\b(?:prize|won|winner|claim|award|guaranteed|cash|urgent)\b|£)"
SPEC = ColumnSpec(text_col="text", label_cols=("label",))
POSITIVE = ["spam"]
START = datetime(2026, 1, 1)  # the simulated traffic arrives one message a minute from here


class ScenarioConfig(BaseModel):
    """The drift scenario's settings; the defaults are the full run (bench/drift_scenario.sh)."""

    model_config = ConfigDict(extra="forbid")

    data: Path = Field(description="The SMS Spam Collection CSV (columns text, label: ham | spam).")
    kind: Literal["tfidf", "finetuned"] = Field("tfidf", description="The model the loop trains and retrains.")
    finetune: dict = Field(default_factory=dict, description="FinetuneConfig settings when kind is finetuned.")
    campaign_pattern: str = Field(CAMPAIGN, description="Regular expression picking the held-back campaign's spam.")
    campaign_share: float = Field(
        0.3, gt=0, lt=1, description="Share of the traffic after the shift that is the campaign."
    )
    window: int = Field(200, ge=20, description="Messages per monitoring window (one message a minute).")
    detection_shares: tuple[float, ...] = Field(
        (0.05, 0.1, 0.2), description="Campaign shares at which random windows also measure the detection rate."
    )
    windows_before: int = Field(4, ge=1, description="Windows of unshifted traffic before the campaign arrives.")
    audit_rate: float = Field(0.1, gt=0, le=1, description="Share of delivered messages reviewed as the audit sample.")
    repeats: int = Field(100, ge=1, description="Random windows drawn to measure the false-alarm and detection rates.")
    evasion: Literal["none", "leet"] = Field(
        "none",
        description="'leet': the campaign also evades word filters (letters swapped for look-alike digits and signs "
        "in 70% of its words, a synthetic change of the real messages); 'none': the campaign as collected.",
    )
    gate: GateConfig = Field(default_factory=GateConfig, description="The retrain's regression gate (the defaults).")
    embeddings: bool = Field(False, description="Compute the embedding distance per window (slower; needs MiniLM).")
    max_rows: int | None = Field(None, ge=200, description="Read only this many rows (tests); None: all.")
    n_boot: int = Field(200, ge=10, description="Bootstrap resamples for the runs' confidence intervals.")
    seed: int = Field(0, description="Seeds the partition, the traffic order, the audit sample and the splits.")

    @model_validator(mode="after")
    def _check(self) -> ScenarioConfig:
        if not self.data.exists():
            raise ValueError(f"data={self.data}: no such file; pass the SMS Spam Collection CSV (sms_spam.csv)")
        if self.finetune and self.kind != "finetuned":
            raise ValueError(f"finetune settings given but kind={self.kind!r}: they apply to kind='finetuned' only")
        return self


def partition(frame: pd.DataFrame, config: ScenarioConfig) -> dict[str, pd.DataFrame]:
    """The rows, by role: `parent` (the parent run's data file: its own train/val/test split is made from it),
    `stream_old` (old-style traffic for the stream), `eval_old` (held out: old-style), `campaign_stream` (the
    campaign as it arrives) and `campaign_eval` (held out: the campaign, for measuring recovery)."""
    rng = np.random.default_rng(config.seed)
    frame = frame[["text", "label"]].dropna().reset_index(drop=True)
    is_campaign = (frame["label"] == "spam") & frame["text"].str.contains(config.campaign_pattern, case=False)
    # Whole templates go to one role: the same text, or the same text but for its numbers (a spam template sent
    # with another phone number or prize), never lands both in training and in an evaluation set.
    template = frame["text"].str.lower().str.replace(r"\d+", "0", regex=True).str.split().str.join(" ")
    old = _shuffled_by_group(frame[~is_campaign], template[~is_campaign], rng)
    campaign = _shuffled_by_group(frame[is_campaign], template[is_campaign], rng)
    if len(campaign) < 20:
        raise ConfigError(
            f"data={config.data}: only {len(campaign)} spam rows match the campaign pattern; the scenario needs 20 or "
            "more (read more rows, or widen campaign_pattern)"
        )
    if config.evasion == "leet":
        campaign = campaign.assign(text=[evade(t, rng) for t in campaign["text"]])
    a, b = _group_cut(old, 0.6), _group_cut(old, 0.9)
    c = _group_cut(campaign, 0.6)
    old, campaign = old.drop(columns="group"), campaign.drop(columns="group")
    return {
        "parent": old.iloc[:a],
        "stream_old": old.iloc[a:b],
        "eval_old": old.iloc[b:],
        "campaign_stream": campaign.iloc[:c],
        "campaign_eval": campaign.iloc[c:],
    }


LEET = str.maketrans({"a": "4", "e": "3", "i": "1", "o": "0", "s": "$", "t": "7", "l": "1"})


def evade(text: str, rng: np.random.Generator, share: float = 0.7) -> str:
    """`text` with `share` of its words written in look-alike characters ("prize" -> "pr1z3"), as spammers do to
    slip past word lists and word-level models."""
    return " ".join(w.lower().translate(LEET) if rng.random() < share else w for w in text.split(" "))


def _shuffled_by_group(frame: pd.DataFrame, group: pd.Series, rng: np.random.Generator) -> pd.DataFrame:
    """The rows with their groups in random order, each group's rows together (column `group` added)."""
    keys = group.unique()
    order = {key: i for i, key in enumerate(keys[rng.permutation(len(keys))])}
    ranked = frame.assign(group=group.to_numpy(), rank=group.map(order).to_numpy())
    return ranked.sort_values(["rank"], kind="stable").drop(columns="rank")


def _group_cut(frame: pd.DataFrame, share: float) -> int:
    """The first row position at or after `share` of the rows where a new group starts."""
    cut = int(share * len(frame))
    groups = frame["group"].to_numpy()
    while 0 < cut < len(frame) and groups[cut] == groups[cut - 1]:
        cut += 1
    return cut


def traffic_stream(parts: dict[str, pd.DataFrame], config: ScenarioConfig) -> tuple[pd.DataFrame, int]:
    """(the simulated traffic in time order: id, received_at, text, label, phase; the index of the first message
    after the shift). Before the shift: `windows_before` windows of old-style messages; after it: the whole
    campaign stream mixed at random into old-style messages at `campaign_share`."""
    rng = np.random.default_rng(config.seed + 1)
    old, campaign = parts["stream_old"], parts["campaign_stream"]
    n_before = config.windows_before * config.window
    n_old_after = round(len(campaign) * (1 - config.campaign_share) / config.campaign_share)
    if n_before + n_old_after > len(old):
        raise ConfigError(
            f"the stream needs {n_before + n_old_after} old-style messages and the data leaves {len(old)}: lower "
            "windows_before or window, or raise campaign_share"
        )
    before = old.iloc[:n_before].assign(phase="before")
    after = pd.concat([old.iloc[n_before : n_before + n_old_after], campaign]).assign(phase="after")
    after = after.iloc[rng.permutation(len(after))]
    stream = pd.concat([before, after], ignore_index=True)
    stream.insert(0, "id", [f"m{i:06d}" for i in range(len(stream))])
    stream.insert(1, "received_at", [(START + timedelta(minutes=i)).isoformat() + "Z" for i in range(len(stream))])
    return stream, n_before


def simulate_reviews(scored: pd.DataFrame, labels: pd.Series, audit_rate: float, seed: int) -> pd.DataFrame:
    """The reviewers' decisions as `finesieve data export-reviews` writes them: every flagged message (the queue)
    and `audit_rate` of the delivered ones (the audit sample), each labelled with its true label."""
    rng = np.random.default_rng(seed)
    flagged = scored["action"] != "deliver"
    audited = ~flagged & (rng.random(len(scored)) < audit_rate)
    reviewed = scored[flagged | audited]
    return pd.DataFrame(
        {
            "text": reviewed["text"].to_numpy(),
            "label": labels.loc[reviewed.index].to_numpy(),
            "message_id": reviewed["id"].to_numpy(),
            "reason": np.where(flagged[reviewed.index], "flagged", "audit"),
            "reviewer": "simulated",
            "model_action": reviewed["action"].to_numpy(),
        }
    )


def run_scenario(config: ScenarioConfig, out: str | Path, log: Callable[[str], None] = print) -> dict:
    """The whole scenario (see the module docstring) in `out`: data files, runs, scored traffic, reviews, the
    monitor's HTML report, the gate's report and figures.json. Returns the figures."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    frame = pd.read_csv(config.data, nrows=config.max_rows, dtype=str, keep_default_na=False)
    parts = partition(frame, config)
    files = out / "data"
    files.mkdir(exist_ok=True)
    for name, part in parts.items():
        part.to_csv(files / f"{name}.csv", index=False)
    log(f"partition: { ({k: len(v) for k, v in parts.items()}) } (campaign: {config.campaign_pattern})")

    parent = _train(config, files / "parent.csv", out / "runs" / "parent")
    log(f"parent run trained without the campaign ({time.perf_counter() - started:.0f} s)")

    pd.concat([parts["campaign_eval"], parts["eval_old"]]).to_csv(files / "new_traffic.csv", index=False)
    stream, shift = traffic_stream(parts, config)
    stream[["id", "text"]].to_csv(files / "traffic.csv", index=False)
    scored = _score(parent, files / "traffic.csv", out / "scored.csv", stream)
    labels = _by_scored_id(stream, scored, "label")
    reviews = simulate_reviews(scored, labels, config.audit_rate, config.seed)
    reviews.to_csv(out / "reviews.csv", index=False)
    every = timedelta(minutes=config.window)
    report = monitor_file(  # windows from START: the shift falls on a window's edge
        parent,
        out / "scored.csv",
        since=START,
        reviews=out / "reviews.csv",
        time_col="received_at",
        every=every,
        embeddings=config.embeddings,
    )
    write_text(out / "monitor.json", json.dumps(report, indent=2, default=str))
    write_monitor_report(report, out / "monitor.html")
    detection = _detection(report["windows"], config.windows_before, config.window)
    log(f"monitor over the stream: {detection}")

    rates = _repeated_windows(config, parts, parent, out)
    log(f"random windows of {config.window} messages: {rates}")

    arms = {
        "parent": parent,
        "retrained": _retrain(parent, out / "reviews.csv", out / "runs" / "retrained", config, files),
        "oracle": _retrain(
            parent, _labelled(stream, files / "traffic_labelled.csv"), out / "runs" / "oracle", config, files
        ),
        "fresh only (no replay)": _train(config, out / "reviews.csv", out / "runs" / "fresh_only"),
    }
    quality = _quality(arms, parent, parts, files)
    gate = json.loads((arms["retrained"] / "gate.json").read_text())
    figures = {
        "config": config.model_dump(mode="json"),
        "partition": {k: len(v) for k, v in parts.items()},
        "stream": {"messages": len(stream), "shift_at": shift, "campaign": int((stream["phase"] == "after").sum())},
        "reviews": reviews["reason"].value_counts().to_dict(),
        "detection": detection,
        "repeated_windows": rates,
        "quality": quality,
        "recovery_gap_auc": quality["oracle"]["new_auc"] - quality["retrained"]["new_auc"],
        "replay_old_loss_auc": quality["parent"]["old_auc"] - quality["retrained"]["old_auc"],
        "no_replay_old_loss_auc": quality["parent"]["old_auc"] - quality["fresh only (no replay)"]["old_auc"],
        "gate": {"decision": gate["decision"], "promote": gate["promote"], "reasons": gate["reasons"]},
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_text(out / "figures.json", json.dumps(figures, indent=2, default=str))
    return figures


def _train(config: ScenarioConfig, data: Path, out: Path) -> Path:
    dataset = load_dataset(data, SPEC)
    split = SplitConfig(seed=config.seed, val_frac=0.15, test_frac=0.2)
    if config.kind == "tfidf":
        fitted = train_reference(
            "tfidf", dataset, positive=POSITIVE, out=out, split_config=split, n_boot=config.n_boot, overwrite=True
        )
    else:
        settings = {"tracking_uri": "none", **config.finetune}
        fitted = train_finetune(
            FinetuneConfig(**settings),
            dataset,
            positive=POSITIVE,
            out=out,
            split_config=split,
            n_boot=config.n_boot,
            overwrite=True,
        )
    assert fitted.run_dir is not None  # an out folder was given
    return fitted.run_dir


def _score(parent: Path, data: Path, out: Path, stream: pd.DataFrame) -> pd.DataFrame:
    """Batch-score the traffic as `finesieve score --include-text` does, then add each message's arrival time."""
    partial = out.with_name("scored_without_times.csv")
    score_file(parent, data, partial, spec=ColumnSpec(text_col="text", id_col="id"), include_text=True, progress=False)
    scored = pd.read_csv(partial, dtype={"id": str, "text": str}, keep_default_na=False, na_values=[""])
    times = stream.set_index("id")["received_at"]
    scored.insert(1, "received_at", times.loc[scored["id"]].to_numpy())
    scored.to_csv(out, index=False)
    return scored


def _by_scored_id(frame: pd.DataFrame, scored: pd.DataFrame, column: str) -> pd.Series:
    """`frame[column]` of each scored message (matched by id), on the scored file's index."""
    return pd.Series(frame.set_index("id").loc[scored["id"], column].to_numpy(), index=scored.index)


def _labelled(stream: pd.DataFrame, path: Path) -> Path:
    stream[["text", "label"]].to_csv(path, index=False)
    return path


def _retrain(parent: Path, fresh: Path, out: Path, config: ScenarioConfig, files: Path) -> Path:
    """`finesieve retrain PARENT --fresh FRESH --drifted new_traffic.csv`: the held-out new traffic (the held-out
    campaign among held-out old-style messages, labelled independently of the parent's decisions) is the sample
    the gate asks to improve."""
    drifted = {"new_traffic": load_fresh(files / "new_traffic.csv", parent)}
    fitted, _ = retrain(
        parent,
        load_fresh(fresh, parent),
        out,
        drifted=drifted,
        gate=config.gate,
        seed=config.seed,
        n_boot=config.n_boot,
        overwrite=True,
    )
    assert fitted.run_dir is not None
    return fitted.run_dir


def _detection(windows: list[dict], windows_before: int, size: int) -> dict:
    """The stream's windows in order: false alarms before the shift, the first alerting window after it."""
    before = [bool(w["alerts"]) for w in windows[:windows_before]]
    after = [i for i, w in enumerate(windows[windows_before:]) if w["alerts"]]
    first = after[0] if after else None
    return {
        "windows_before": windows_before,
        "alerting_before": int(sum(before)),
        "first_alerting_window_after": first,
        "messages_to_detection": (first + 1) * size if first is not None else None,
        "alerts": windows[windows_before + first]["alerts"] if first is not None else [],
    }


ALERT_KINDS = (
    "score drift",
    "flag rate",
    "input length drift",
    "out-of-vocabulary",
    "embedding drift",
    "queue precision",
    "overturn rate",
    "recall",
)


def _repeated_windows(config: ScenarioConfig, parts: dict[str, pd.DataFrame], parent: Path, out: Path) -> dict:
    """Windows of `window` messages drawn at random, `repeats` times each, from unshifted traffic (every old-style
    message the parent never trained on) and from shifted traffic (`campaign_share` of the window from the
    campaign): the share of each that raises an alert."""
    rng = np.random.default_rng(config.seed + 2)
    old = pd.concat([parts["stream_old"], parts["eval_old"]])
    pool = pd.concat(
        [
            old.assign(phase="old"),
            pd.concat([parts["campaign_stream"], parts["campaign_eval"]]).assign(phase="campaign"),
        ],
        ignore_index=True,
    )
    pool.insert(0, "id", [f"p{i:06d}" for i in range(len(pool))])
    pool.insert(1, "received_at", [(START + timedelta(minutes=i)).isoformat() + "Z" for i in range(len(pool))])
    pool[["id", "text"]].to_csv(out / "data" / "pool.csv", index=False)
    scored = _score(parent, out / "data" / "pool.csv", out / "pool_scored.csv", pool)
    labels = _by_scored_id(pool, scored, "label")
    simulate_reviews(scored, labels, config.audit_rate, config.seed + 3).to_csv(out / "pool_reviews.csv", index=False)
    traffic = read_scored_file(
        parent, out / "pool_scored.csv", reviews=out / "pool_reviews.csv", time_col="received_at"
    )
    reference = load_reference(parent)
    phase = _by_scored_id(pool, scored, "phase").to_numpy()
    old_rows, campaign_rows = np.flatnonzero(phase == "old"), np.flatnonzero(phase == "campaign")
    shares = sorted({*config.detection_shares, config.campaign_share})
    if round(max(shares) * config.window) > len(campaign_rows) or config.window > len(old_rows):
        raise ConfigError(f"window={config.window} needs more messages than the data leaves: lower it")

    def alerts(rows: np.ndarray) -> list[str]:
        return window_report(_sample(traffic, rows), reference, parent, embeddings=config.embeddings)["alerts"]

    def draw(share: float) -> np.ndarray:
        n_campaign = round(share * config.window)
        return np.concatenate(
            [
                rng.choice(campaign_rows, n_campaign, replace=False),
                rng.choice(old_rows, config.window - n_campaign, replace=False),
            ]
        )

    def kinds_of(fired: list[list[str]]) -> dict[str, int]:
        counts = {k: sum(any(a.startswith(k) for a in f) for f in fired) for k in ALERT_KINDS}
        return {k: n for k, n in counts.items() if n}

    unshifted = [alerts(draw(0.0)) for _ in range(config.repeats)]
    detection, kinds = {}, {}
    for share in shares:
        fired = [alerts(draw(share)) for _ in range(config.repeats)]
        detection[share] = sum(bool(a) for a in fired) / config.repeats
        kinds[share] = kinds_of(fired)
    return {
        "repeats": config.repeats,
        "window": config.window,
        "false_alarm_rate": sum(bool(a) for a in unshifted) / config.repeats,
        "alerts_in_unshifted_windows": kinds_of(unshifted),
        "detection_rate": detection[config.campaign_share],
        "detection_rate_by_share": detection,
        "alerts_in_shifted_windows": kinds[config.campaign_share],
    }


def _sample(traffic: Traffic, rows: np.ndarray):
    """The window holding exactly `rows` of `traffic`: they get consecutive minutes from START, the rest far later
    (reviews follow their message's new time)."""
    order = np.full(len(traffic.messages), -1)
    order[rows] = np.arange(len(rows))
    later = START + timedelta(days=3650)
    times = pd.Series(
        [START + timedelta(minutes=int(o)) if o >= 0 else later for o in order], index=traffic.messages.index
    )
    moved = dict(zip(traffic.messages["created_at"], times, strict=True))
    shuffled = Traffic(
        model=traffic.model,
        messages=traffic.messages.assign(created_at=times),
        scores=traffic.scores,
        reviews=traffic.reviews.assign(created_at=traffic.reviews["created_at"].map(moved)),
    )
    return shuffled.window(START, START + timedelta(minutes=len(rows)))


def _quality(arms: dict[str, Path], parent: Path, parts: dict[str, pd.DataFrame], files: Path) -> dict:
    """Each arm's ROC AUC on the parent's fixed test split (old) and on held-out new traffic (the held-out campaign
    among held-out old-style messages), and its recall of the held-out campaign at its own threshold."""
    old_test = run_data_splits(parent, flag="the parent run").dataset("test")
    assert isinstance(old_test, Dataset)  # the parent is a classification run: the scenario trained it
    new_eval = load_dataset(files / "new_traffic.csv", SPEC)
    n_campaign = len(parts["campaign_eval"])
    out = {}
    for name, run_dir in arms.items():
        run = load_run(run_dir)
        classes = [str(c) for c in run.scorer.classes_]

        def scores(texts, run=run, classes=classes):
            return positive_scores(run.scorer.predict_proba(texts), classes, POSITIVE, run.scorer.multilabel_)

        old_scores, new_scores = scores(old_test.texts), scores(new_eval.texts)
        out[name] = {
            "old_auc": roc_auc([label == "spam" for label in old_test.labels], old_scores),
            "new_auc": roc_auc([label == "spam" for label in new_eval.labels], new_scores),
            "campaign_recall": float(np.mean(new_scores[:n_campaign] >= (run.threshold or 0.5))),
            "threshold": run.threshold,
        }
    return out
