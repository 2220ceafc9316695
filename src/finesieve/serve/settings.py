"""The moderation service's settings: one object, read from keyword arguments or `FINESIEVE_*` environment variables.

    from finesieve.serve.settings import ServiceSettings
    settings = ServiceSettings(runs={"spam": "runs/cascade"}, database_url="sqlite:///./finesieve.db")
    # or: FINESIEVE_RUNS='{"spam": "runs/cascade"}' FINESIEVE_PORT=8080 python -c "..."

`finesieve serve` builds it from its flags; `create_app(settings)` (finesieve.serve.app) is the only reader.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """How the service runs: its database, its models, its network address and its limits."""

    model_config = SettingsConfigDict(env_prefix="FINESIEVE_", extra="forbid", protected_namespaces=())

    database_url: str = Field(
        "sqlite:///./finesieve.db",
        description="SQLAlchemy URL: sqlite:///PATH (WAL mode) or postgresql+psycopg://USER@HOST:PORT/DB.",
    )
    sqlite_synchronous: Literal["full", "normal"] = Field(
        "full",
        description="SQLite only: 'full' syncs every commit to disk (an answered decision survives a power loss); "
        "'normal' syncs at checkpoints only (survives a killed process, not a power loss; lower tail latency).",
    )
    runs: dict[str, str | Path] = Field(
        default_factory=dict,
        description="Model name -> run directory, or a registry reference (registry:spam@champion, registry:spam/3) "
        "resolved at start-up and at each reload; requests name a model by its key here.",
    )
    default_model: str | None = Field(None, description="Model used when a request names none; the first of `runs`.")
    shadow: dict[str, str | Path] = Field(
        default_factory=dict,
        description="Model name (a key of `runs`) -> the run or registry reference (e.g. registry:spam@challenger) "
        "that also scores each of its messages after the live decision; stored in shadow_scores, never acted on.",
    )
    registry_uri: str | None = Field(
        None,
        description="MLflow registry store for registry: references (default: $FINESIEVE_REGISTRY_URI, else "
        "sqlite:///registry/mlflow.db; finesieve.registry).",
    )
    registry_poll_s: float | None = Field(
        None,
        gt=0,
        description="Check the registry aliases of `runs` and `shadow` this often (seconds) and switch to a moved "
        "alias's run without dropping requests; None: only on POST /v1/admin/models/{name}/reload.",
    )
    shadow_queue_max: int = Field(
        10_000, ge=1, description="Messages waiting for the shadow model at most; past it they are skipped (counted)."
    )
    host: str = Field("127.0.0.1", description="Address to listen on; anything but loopback needs API keys.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port to listen on.")
    require_auth: bool = Field(
        True, description="Refuse requests without a valid API key; off only for a loopback service with no keys."
    )
    audit_rate: float = Field(
        0.02, ge=0.0, le=1.0, description="Share of delivered messages also queued for review, as a quality audit."
    )
    retention_days: int | None = Field(
        None, ge=1, description="Delete stored texts older than this many days (decisions are kept); None: keep."
    )
    failure_action: Literal["review", "block"] = Field(
        "review", description="Action for a message the model failed on (error or timeout); never deliver."
    )
    model_timeout_s: float = Field(10.0, gt=0, description="Seconds a batch may take in the model before failing.")
    max_batch: int = Field(256, ge=1, description="Most messages in one request.")
    batch_wait_ms: float = Field(
        5.0,
        ge=0,
        description="Most milliseconds a request waits for others to share its model call (dynamic batching).",
    )
    batch_max: int = Field(64, ge=1, description="Most texts gathered into one model call from concurrent requests.")
    max_text_chars: int = Field(20_000, ge=1, description="Longest message text accepted, in characters.")
    max_request_bytes: int = Field(1_000_000, ge=1, description="Largest request body accepted, in bytes (else 413).")
    workers: int = Field(1, ge=1, description="Server processes; above 1 each loads the runs itself (needs RAM).")
    log_format: Literal["text", "json"] = Field("text", description="Log lines: readable text, or one JSON object.")
    shutdown_timeout_s: float = Field(
        30.0, gt=0, description="On SIGTERM, seconds in-flight requests get to finish before they are cut off."
    )
    review_lease_s: float = Field(600.0, gt=0, description="Seconds a reviewer holds a leased item before it returns.")
    undo_window_s: float = Field(120.0, ge=0, description="Seconds after a decision in which its reviewer may undo it.")
    session_ttl_s: float = Field(43_200.0, gt=0, description="Seconds a reviewer's login session lasts (12 h).")
    key_cache_s: float = Field(
        5.0,
        ge=0,
        description="Seconds a found API key is trusted before the database is asked again: a revoked key stops "
        "working within this time. 0: look the key up on every request.",
    )
    rate_limit_per_s: float = Field(1000.0, gt=0, description="Requests per second each API key may make (refill).")
    rate_limit_burst: float = Field(2000.0, ge=1, description="Requests an API key may make at once (bucket size).")
    login_failures_per_minute: int = Field(
        5, ge=1, description="Failed logins allowed per username and per client address in a minute (then 429)."
    )
    monitor_window_s: float = Field(
        3600.0,
        ge=0,
        description="Trailing seconds of traffic the monitor's finesieve_monitor_* gauges on /metrics cover; 0: off.",
    )
    monitor_interval_s: float = Field(
        60.0, ge=0, description="Seconds between updates of the monitor's gauges (a database read each); 0: off."
    )

    @model_validator(mode="after")
    def _default_model_is_served(self) -> ServiceSettings:
        if self.default_model is not None and self.default_model not in self.runs:
            raise ValueError(
                f"default_model {self.default_model!r} is not one of the served models {sorted(self.runs)}: "
                "name one of those, or add its run to `runs`"
            )
        return self

    @model_validator(mode="after")
    def _shadows_are_of_served_models(self) -> ServiceSettings:
        unknown = sorted(set(self.shadow) - set(self.runs))
        if unknown:
            raise ValueError(
                f"shadow names {unknown}, which are not served models {sorted(self.runs)}: a shadow scores the "
                "messages of a served model, so key it by one of those names"
            )
        return self

    @property
    def model_names(self) -> list[str]:
        return list(self.runs)

    @property
    def fallback_model(self) -> str | None:
        """The model a request without `model` gets."""
        return self.default_model or next(iter(self.runs), None)


LOOPBACK_HOSTS = {"127.0.0.1", "::1", "localhost"}


def is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS or host.startswith("127.")
