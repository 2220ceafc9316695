"""When a monitored window needs a person: thresholds (a YAML file, with defaults), the alerts they raise, and a
webhook that carries them.

    from finesieve.monitor.alerts import AlertThresholds, alerts_for, send_webhook
    thresholds = AlertThresholds.from_yaml("alerts.yaml")       # or AlertThresholds() for the defaults
    alerts = alerts_for(thresholds, drift, evals)                # ["score drift on 'spam': PSI 0.31 > 0.25 ...", ...]
    send_webhook("https://hooks.example.com/moderation", {"model": "spam", "alerts": alerts})

alerts.yaml (every key optional; a missing one keeps its default, None switches a check off):

    psi: 0.25                   # a class's score PSI above this ...
    drift_pvalue: 0.01          # ... and the KS test's p-value below this (a tiny window's PSI is noise)
    min_queue_precision: null   # reviewers find fewer violations among flags than this (upper bound of its interval)
    max_overturn_rate: null     # reviewers overturn more decisions than this (lower bound of its interval)
    min_recall: null            # recall from the audit sample below this (upper bound of its interval)

Nothing alerts on noise: drift needs both a large PSI and a significant KS test (5 messages can have a PSI of 2),
and a slow eval alerts only when its whole interval is past the threshold; a small window with a bad-looking
but uncertain figure is reported, not alerted on.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from finesieve.data.errors import ConfigError
from finesieve.monitor.drift import ScoreDrift
from finesieve.monitor.slow_evals import SlowEvals

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


def alerts_for(thresholds: AlertThresholds, drift: dict[str, ScoreDrift], evals: SlowEvals) -> list[str]:
    """One line per threshold crossed, saying what, by how much, and on how many messages or reviews."""
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
