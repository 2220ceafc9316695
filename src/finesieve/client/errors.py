"""What the moderation client raises: one class per way a call can fail, each carrying the server's own words.

    from finesieve.client import ModerationClient, InvalidRequestError, ServiceUnreachableError
    try:
        client.moderate(text)
    except InvalidRequestError as err:      # 422: err.fields == ["body.text"], err.detail the server's list
        ...
    except ServiceUnreachableError:         # no answer after every retry (connection refused, timeouts, 502-504)
        ...

Only failures worth retrying are retried (finesieve.client.retry); every other 4xx is raised at once, because
sending the same request again cannot change the answer. `ModerationBlocked` is what `FinesieveGuard`
(finesieve.client.langchain) raises; it lives here so code can catch it without importing LangChain.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from finesieve.client.results import Decision


class ModerationError(Exception):
    """Base of every error the moderation client raises."""


class ServiceUnreachableError(ModerationError):
    """No usable answer after every attempt: connection errors, timeouts, or 429/502/503/504 to the last."""

    def __init__(self, message: str, *, attempts: int, status_code: int | None = None):
        super().__init__(message)
        self.attempts, self.status_code = attempts, status_code


class ModerationAPIError(ModerationError):
    """The service answered with an error that a retry would not change (a 4xx, or a 500)."""

    def __init__(self, message: str, *, status_code: int, detail: Any):
        super().__init__(message)
        self.status_code, self.detail = status_code, detail


class AuthenticationError(ModerationAPIError):
    """401: the API key is missing, malformed, unknown or revoked."""


class PermissionDeniedError(ModerationAPIError):
    """403: the API key may not use the model asked for."""


class NotFoundError(ModerationAPIError):
    """404: no stored message with that id for this key."""


class RequestTooLargeError(ModerationAPIError):
    """413: the request body is over the service's limit; send smaller batches."""


class InvalidRequestError(ModerationAPIError):
    """422: the request names a field the service refused; `fields` lists each as `body.messages.3.text`."""

    def __init__(self, message: str, *, status_code: int, detail: Any, fields: list[str]):
        super().__init__(message, status_code=status_code, detail=detail)
        self.fields = fields


class ServerError(ModerationAPIError):
    """A 5xx the client does not retry (500: a fault in the service, which a retry would likely meet again)."""


class ModerationBlocked(ModerationError):
    """A guarded message was blocked (or sent to review, when the guard blocks on review); `decision` says why."""

    def __init__(self, decision: Decision):
        rules = f", rules {', '.join(decision.rules_fired)}" if decision.rules_fired else ""
        super().__init__(
            f"message {decision.id!r} stopped by finesieve: action {decision.action!r}, category "
            f"{decision.category!r}, decided by {decision.decided_by}{rules} (model {decision.model_version})"
        )
        self.decision = decision
