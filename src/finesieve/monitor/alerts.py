"""When a monitored window needs a person: thresholds (a YAML file, with defaults), the alerts they raise, and a
webhook that carries them.

    from finesieve.monitor.alerts import AlertThresholds, alerts_for, send_webhook
    thresholds = AlertThresholds.from_yaml("alerts.yaml")       # or AlertThresholds() for the defaults
    alerts = alerts_for(thresholds, drift, evals, inputs)        # ["score drift on 'spam': PSI 0.31 > 0.25 ...", ...]
    send_webhook("https://hooks.example.com/moderation", {"model": "spam", "alerts": alerts})

alerts.yaml (every key optional; a missing one keeps its default, None switches a check off):

    psi: 0.25                   # a class's score PSI above this ...
    drift_pvalue: 0.01          # ... and the KS test's p-value below this (a tiny window's PSI is noise)
    min_queue_precision: null   # reviewers find fewer violations among flags than this (upper bound of its interval)
    max_overturn_rate: null     # reviewers overturn more decisions than this (lower bound of its interval)
    min_recall: null            # recall from the audit sample below this (upper bound of its interval)
    length_psi: 0.25            # the text length histogram's PSI above this (and its KS p-value below drift_pvalue)
    max_oov_rise: 0.05          # the out-of-vocabulary rate this far above the reference's (absolute)
    embedding_pvalue: 0.001     # the embedding distance's permutation p-value at or below this
    max_flag_rate_change: 0.5   # the flag rate (review + block) moved this far from validation's, relatively

Nothing alerts on noise: drift needs both a large PSI and a significant KS test (5 messages can have a PSI of 2),
and a slow eval alerts only when its whole interval is past the threshold; a small window with a bad-looking
but uncertain figure is reported, not alerted on.

The input drift defaults were measured on real SMS traffic (a TF-IDF run on the SMS Spam Collection, train / val /
test 60 / 15 / 25%, reference embeddings saved): on 81 windows of 500 messages drawn from the unshifted test split,
no alert fired (0/81): the length PSI was at most 0.17 and its KS p-value at least 0.11, the OOV rate never rose
above the reference's (at most -0.005), and the MMD p-value was at least 0.008 (1 window in 81 at or below 0.01,
as a uniform null predicts). tests/monitor/test_inputs.py shows the shifted windows they catch.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from finesieve.data.errors import ConfigError
from finesieve.monitor.drift import ScoreDrift
from finesieve.monitor.inputs import InputDrift
from finesieve.monitor.slow_evals import SlowEvals, wilson

WEBHOOK_TIMEOUT_S = 10.0


class AlertThresholds(BaseModel):
    model_config = ConfigDict(extra="forbid")

    psi: float | None = Field(0.25, ge=0, description="Alert when a class's score PSI exceeds this ...")
    drift_pvalue: float = Field(
        0.01, gt=0, le=1, description="... and the shift is significant: the KS p-value is below this."
    )
    min_queue_precision: float | None = Field(None, ge=0, le=1, description="Alert below this queue precision.")
    max_overturn_rate: float | None = Field(None, ge=0, le=1, description="Alert above this overturn rate.")
    min_recall: float | None = Field(None, ge=0, le=1, description="Alert below this estimated recall.")
    length_psi: float | None = Field(
        0.25, ge=0, description="Alert when the text length PSI exceeds this and its KS p-value is below drift_pvalue."
    )
    max_oov_rise: float | None = Field(
        0.05, ge=0, le=1, description="Alert when the out-of-vocabulary rate exceeds the reference's by more than this."
    )
    embedding_pvalue: float | None = Field(
        0.001, gt=0, le=1, description="Alert when the embedding distance's permutation p-value is at or below this."
    )
    max_flag_rate_change: float | None = Field(
        0.5,
        gt=0,
        description="Alert when the window's flag rate (review + block) is, with 95% confidence, more than this "
        "share above or below the validation flag rate (0.5: outside 0.5x-1.5x).",
    )

    @classmethod
    def from_yaml(cls, path: str | Path) -> AlertThresholds:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"{path}: cannot read the alert thresholds ({err})") from err
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping such as `psi: 0.25`, found {type(data).__name__}")
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
            raise ConfigError(f"{path}: {problems} (keys: {sorted(cls.model_fields)})") from err


def alerts_for(
    thresholds: AlertThresholds,
    drift: dict[str, ScoreDrift],
    evals: SlowEvals,
    inputs: InputDrift | None = None,
    flags: tuple[int, int, float | None] | None = None,
) -> list[str]:
    """One line per threshold crossed, saying what, by how much, and on how many messages or reviews. `flags` is
    (messages, flagged, the reference flag rate) of the window."""
    alerts = []
    if thresholds.psi is not None:
        for name, d in drift.items():
            if d.psi > thresholds.psi and d.ks_pvalue < thresholds.drift_pvalue:
                alerts.append(
                    f"score drift on {name!r}: PSI {d.psi:.3f} > {thresholds.psi:g} "
                    f"(KS {d.ks:.3f}, p={d.ks_pvalue:.2g}, n={d.n})"
                )
    checks = (
        ("queue precision", evals.queue_precision, thresholds.min_queue_precision, "below"),
        ("overturn rate", evals.overturn_rate, thresholds.max_overturn_rate, "above"),
        ("recall", evals.recall, thresholds.min_recall, "below"),
    )
    for what, estimate, limit, side in checks:
        if limit is None or estimate.value is None:
            continue
        past = estimate.high < limit if side == "below" else estimate.low > limit  # type: ignore[operator]
        if past:
            alerts.append(f"{what} {estimate} is {side} {limit:g} with 95% confidence")
    alerts += _flag_rate_alerts(thresholds, *flags) if flags is not None else []
    return alerts + (_input_alerts(thresholds, inputs) if inputs is not None else [])


def _flag_rate_alerts(thresholds: AlertThresholds, n: int, flagged: int, reference: float | None) -> list[str]:
    change = thresholds.max_flag_rate_change
    if change is None or reference is None or n == 0:
        return []
    rate = wilson(flagged, n)
    low, high = reference * (1 - change), reference * (1 + change)
    assert rate.low is not None and rate.high is not None  # n > 0
    if rate.low > high or rate.high < low:
        side = "above" if rate.low > high else "below"
        return [
            f"flag rate {rate} is {side} the validation's {reference:.3f} by more than {change:g} of it "
            f"(n={n} messages)"
        ]
    return []


def _input_alerts(thresholds: AlertThresholds, inputs: InputDrift) -> list[str]:
    alerts = []
    length = inputs.length
    if thresholds.length_psi is not None and length["psi"] > thresholds.length_psi:
        if length["ks_pvalue"] < thresholds.drift_pvalue:
            alerts.append(
                f"input length drift: PSI {length['psi']:.3f} > {thresholds.length_psi:g} (KS {length['ks']:.3f}, "
                f"p={length['ks_pvalue']:.2g}, median {length['window_q50']:g} vs {length['reference_q50']} "
                f"characters, n={inputs.n})"
            )
    oov, ref_oov = inputs.oov_rate["window"], inputs.oov_rate["reference"]
    if thresholds.max_oov_rise is not None and oov is not None and ref_oov is not None:
        if oov - ref_oov > thresholds.max_oov_rise:
            alerts.append(
                f"out-of-vocabulary rate {oov:.3f} is {oov - ref_oov:.3f} above the reference's {ref_oov:.3f} "
                f"(> {thresholds.max_oov_rise:g}, n={inputs.n})"
            )
    embedding = inputs.embedding
    if thresholds.embedding_pvalue is not None and embedding is not None:
        if embedding.p_value <= thresholds.embedding_pvalue:
            alerts.append(
                f"embedding drift: MMD^2 {embedding.mmd:.4f}, permutation p={embedding.p_value:.2g} <= "
                f"{thresholds.embedding_pvalue:g} (n={embedding.n} sampled texts)"
            )
    return alerts


def send_webhook(url: str, payload: dict) -> int:
    """POST `payload` as JSON to `url`; returns the HTTP status. A failure raises ConfigError naming the URL."""
    body = json.dumps(payload, default=str).encode("utf-8")
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_S) as response:  # noqa: S310 - a configured URL
            return response.status
    except OSError as err:
        raise ConfigError(f"webhook {url}: the alert could not be delivered ({err})") from err
