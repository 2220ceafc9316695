"""Prometheus metrics of the moderation service, on a registry of its own (one per app, so tests can build many).

finesieve_requests_total{route, method, status}     requests answered
finesieve_request_seconds{route}                    latency histogram per route template (/v1/messages/{id})
finesieve_decisions_total{model, action}            messages decided (duplicates not counted again)
finesieve_deciding_stage_total{model, stage}        messages decided by each stage (rules, prefilter, model,
                                                    failure): the share reaching the model is the route fraction
finesieve_stage_seconds{model, stage}               latency histogram of each cascade stage, per batch it decided
finesieve_model_errors_total{model}                 messages the model failed on (error or timeout)
finesieve_queue_items{reason, state}                review items by reason and state, counted at scrape time
finesieve_queue_oldest_seconds                      age of the oldest review item not yet decided (0: none)

The monitor's figures over the trailing `monitor_window_s`, per served model, set by finesieve.serve.monitor_task
(NaN: not measured in the window, e.g. no reviews yet; `_low`/`_high`: the 95% interval's bounds):
finesieve_monitor_messages{model}                   messages decided in the window
finesieve_monitor_score_psi{model, category}        PSI of the category's scores against the run's validation
finesieve_monitor_flag_rate{model}                  share of the window's messages reviewed or blocked
finesieve_monitor_reference_flag_rate{model}        the same share on the run's validation split
finesieve_monitor_queue_precision{model}            violations among reviewed flags (also _low, _high)
finesieve_monitor_overturn_rate{model}              reviews that disagree with the model (also _low, _high)
finesieve_monitor_recall{model}                     recall estimated from the audit sample (also _low, _high)
finesieve_monitor_alerting{model}                   1 while the monitor's alerts fire (default thresholds), else 0
finesieve_monitor_updated_timestamp_seconds{model}  when the figures were last computed (Unix time)
finesieve_monitor_errors_total{model}               monitor runs that failed (logged; the figures keep their values)
"""

from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from finesieve.serve import store
from finesieve.serve.db import utcnow

QUEUE_REASONS, QUEUE_STATES = ("flagged", "audit", "failure"), ("pending", "leased", "decided")
SLOW_EVALS = ("queue_precision", "overturn_rate", "recall")  # keys of the monitor report's "slow_evals"
NAN = float("nan")
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)  # seconds


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "finesieve_requests", "Requests answered.", ["route", "method", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "finesieve_request_seconds", "Request latency.", ["route"], buckets=LATENCY_BUCKETS, registry=self.registry
        )
        self.decisions = Counter(
            "finesieve_decisions", "Messages decided.", ["model", "action"], registry=self.registry
        )
        self.deciding_stage = Counter(
            "finesieve_deciding_stage",
            "Messages decided, by deciding stage.",
            ["model", "stage"],
            registry=self.registry,
        )
        self.stage_latency = Histogram(
            "finesieve_stage_seconds",
            "Seconds a cascade stage took on one batch.",
            ["model", "stage"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.model_errors = Counter(
            "finesieve_model_errors", "Messages the model failed on.", ["model"], registry=self.registry
        )

        self.queue_items = Gauge(
            "finesieve_queue_items", "Review items by reason and state.", ["reason", "state"], registry=self.registry
        )
        self.queue_oldest = Gauge(
            "finesieve_queue_oldest_seconds", "Age of the oldest undecided review item.", registry=self.registry
        )
        self._monitor_gauges()

    def _monitor_gauges(self) -> None:
        def gauge(name: str, doc: str, labels: tuple[str, ...] = ("model",)) -> Gauge:
            return Gauge(f"finesieve_monitor_{name}", doc, list(labels), registry=self.registry)

        self.monitor_messages = gauge("messages", "Messages decided in the monitor's trailing window.")
        self.monitor_psi = gauge("score_psi", "Score PSI per category against validation.", ("model", "category"))
        self.monitor_flag_rate = gauge("flag_rate", "Share of the window's messages reviewed or blocked.")
        self.monitor_reference_flag_rate = gauge("reference_flag_rate", "Flag rate on the run's validation split.")
        self.monitor_slow_evals = {
            (figure, bound): gauge(
                f"{figure}{suffix}", f"{figure.replace('_', ' ').capitalize()} from reviewers{what} (NaN: unmeasured)."
            )
            for figure in SLOW_EVALS
            for bound, suffix, what in (
                ("value", "", ""),
                ("low", "_low", ", 95% interval's lower bound"),
                ("high", "_high", ", 95% interval's upper bound"),
            )
        }
        self.monitor_alerting = gauge("alerting", "1 while the monitor's alerts fire, else 0.")
        self.monitor_updated = gauge("updated_timestamp_seconds", "When the monitor's figures were last computed.")
        self.monitor_errors = Counter(
            "finesieve_monitor_errors", "Monitor runs that failed.", ["model"], registry=self.registry
        )
        self._monitored_categories: dict[str, set[str]] = {}  # model -> categories with a PSI series

    def refresh_queue(self, engine: Engine) -> None:
        """Set the queue gauges from the database: every worker process reports the same shared queue."""
        with Session(engine) as session:
            counts, oldest = store.queue_depth(session)
        for reason in QUEUE_REASONS:  # known series report 0 rather than vanish when they empty
            for state in QUEUE_STATES:
                self.queue_items.labels(reason=reason, state=state).set(0)
        for (reason, state), n in counts.items():
            self.queue_items.labels(reason=reason, state=state).set(n)
        self.queue_oldest.set((utcnow() - oldest).total_seconds() if oldest is not None else 0.0)

    def observe_monitor(self, model: str, report: dict) -> None:
        """Set `model`'s monitor gauges from one `finesieve.serve.monitoring.monitor_report` window."""
        self.monitor_messages.labels(model=model).set(report["messages"])
        categories = self._monitored_categories.setdefault(model, set())
        categories.update(report["drift"])
        for category in categories:  # one scored in an earlier window but not this one: NaN, not a stale value
            psi = report["drift"].get(category, {}).get("psi")
            self.monitor_psi.labels(model=model, category=category).set(_or_nan(psi))
        flag_rate = report["flag_rate"]
        self.monitor_flag_rate.labels(model=model).set(_or_nan(flag_rate["window"]))
        self.monitor_reference_flag_rate.labels(model=model).set(_or_nan(flag_rate["reference"]))
        for (figure, bound), gauge in self.monitor_slow_evals.items():
            gauge.labels(model=model).set(_or_nan(report["slow_evals"][figure][bound]))
        self.monitor_alerting.labels(model=model).set(1 if report["alerts"] else 0)
        self.monitor_updated.labels(model=model).set(time.time())

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route=route, method=method, status=str(status)).inc()
        self.latency.labels(route=route).observe(seconds)

    def observe_stages(self, model: str, seconds: dict[str, float]) -> None:
        for stage, value in seconds.items():
            self.stage_latency.labels(model=model, stage=stage).observe(value)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _or_nan(value: float | None) -> float:
    return NAN if value is None else float(value)
