"""Prometheus metrics of the moderation service, on a registry of its own (one per app, so tests can build many).

finesieve_requests_total{route, method, status}     requests answered
finesieve_request_seconds{route}                    latency histogram per route template (/v1/messages/{id})
finesieve_decisions_total{model, action}            messages decided (duplicates not counted again)
finesieve_model_errors_total{model}                 messages the model failed on (error or timeout)
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)  # seconds


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
        self.model_errors = Counter(
            "finesieve_model_errors", "Messages the model failed on.", ["model"], registry=self.registry
        )

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route=route, method=method, status=str(status)).inc()
        self.latency.labels(route=route).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
