"""The monitor inside the service: every `monitor_interval_s`, each served model's last `monitor_window_s` of traffic
goes through `monitor_report`, and its figures become the finesieve_monitor_* gauges on /metrics.

    task = start_monitor(settings, moderator, metrics)   # in the app's lifespan; None when switched off (either 0)
    ...
    await stop_monitor(task)                              # on shutdown

The report reads the database on a worker thread (`asyncio.to_thread`), so requests never wait for it. A failure
is logged and counted (finesieve_monitor_errors_total) and the loop goes on: the monitor can never take the service
down. A run without reference statistics (trained by an older finesieve) is skipped with one log line. Alerts use
the default thresholds (`AlertThresholds()`); a model that starts or stops alerting is logged once, not every tick.
Under `--workers N` every worker computes the same figures from the shared database; any one of them answers a scrape.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from finesieve.serve.db import utcnow
from finesieve.serve.logs import LOGGER_NAME
from finesieve.serve.metrics import ServiceMetrics
from finesieve.serve.moderation import Moderator
from finesieve.serve.monitoring import monitor_report
from finesieve.serve.settings import ServiceSettings

logger = logging.getLogger(f"{LOGGER_NAME}.monitor")


class ServiceMonitor:
    """What one tick does, and what it remembers between ticks: models already skipped, alerts already logged."""

    def __init__(self, settings: ServiceSettings, moderator: Moderator, metrics: ServiceMetrics):
        self.settings, self.moderator, self.metrics = settings, moderator, metrics
        self.skipped: set[tuple[str, str]] = set()  # (model, run directory) without reference statistics
        self.alerting: dict[str, bool] = {}  # model -> whether it was alerting at the last tick

    def update(self) -> None:
        """Compute and set every served model's figures (blocking: run it on a worker thread)."""
        since = utcnow() - timedelta(seconds=self.settings.monitor_window_s)
        # The models are read at each tick: a promotion or rollback may have swapped a model's run since the last.
        for name, served in list(self.moderator.models.items()):
            run_dir = str(served.run.path)
            if served.run.manifest.reference is None:
                if (name, run_dir) not in self.skipped:
                    self.skipped.add((name, run_dir))
                    logger.info(
                        "monitor_skipped",
                        extra={"fields": {"model": name, "run": run_dir, "why": "no reference statistics"}},
                    )
                continue
            try:
                # No embedding distance here: seconds of CPU per tick on the serving machine (`finesieve monitor` has it)
                report = monitor_report(self.settings.database_url, run_dir, name, since=since, embeddings=False)
                self.metrics.observe_monitor(name, report)
            except Exception:  # noqa: BLE001 - a failing monitor must never take the service down
                self.metrics.monitor_errors.labels(model=name).inc()
                logger.error("monitor_failed", exc_info=True, extra={"fields": {"model": name, "run": run_dir}})
                continue
            self._log_alerts(name, report["alerts"])

    def _log_alerts(self, model: str, alerts: list[str]) -> None:
        """One line when a model starts alerting (with its alerts) and one when it stops: the figures in an alert's
        text move at every tick, and the gauges carry them in between."""
        alerting = bool(alerts)
        if alerting == self.alerting.get(model, False):
            return
        self.alerting[model] = alerting
        if alerting:
            logger.warning("monitor_alert", extra={"fields": {"model": model, "alerts": alerts}})
        else:
            logger.info("monitor_alerts_cleared", extra={"fields": {"model": model}})


async def monitor_periodically(monitor: ServiceMonitor, interval_s: float) -> None:
    while True:
        try:
            await asyncio.to_thread(monitor.update)
        except Exception:  # noqa: BLE001 - update catches per model; this is the last guard of the loop
            logger.error("monitor_failed", exc_info=True)
        await asyncio.sleep(interval_s)


def start_monitor(settings: ServiceSettings, moderator: Moderator, metrics: ServiceMetrics) -> asyncio.Task | None:
    """The monitor's background task on the running loop, or None when `monitor_window_s` or `_interval_s` is 0."""
    if not settings.monitor_window_s or not settings.monitor_interval_s:
        return None
    monitor = ServiceMonitor(settings, moderator, metrics)
    return asyncio.create_task(monitor_periodically(monitor, settings.monitor_interval_s), name="finesieve-monitor")


async def stop_monitor(task: asyncio.Task | None) -> None:
    """Cancel the task and wait for it. A report already running on its thread finishes there, unwaited: it holds
    an engine of its own, not the app's."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
