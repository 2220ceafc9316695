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
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from finesieve.serve import store
from finesieve.serve.db import utcnow

QUEUE_REASONS, QUEUE_STATES = ("flagged", "audit", "failure"), ("pending", "leased", "decided")
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

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route=route, method=method, status=str(status)).inc()
        self.latency.labels(route=route).observe(seconds)

    def observe_stages(self, model: str, seconds: dict[str, float]) -> None:
        for stage, value in seconds.items():
            self.stage_latency.labels(model=model, stage=stage).observe(value)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
