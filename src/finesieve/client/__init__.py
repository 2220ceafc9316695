"""The moderation service's Python client: it talks HTTP only, and imports nothing of the service.

    from finesieve.client import ModerationClient
    with ModerationClient("http://127.0.0.1:8000", api_key="fsk_...") as client:
        decision = client.moderate("WINNER!! Claim your prize now")
        decision.action, decision.category, decision.decided_by

`AsyncModerationClient` has the same methods, awaited (finesieve.client.http). The LangChain runnables
(`FinesieveModeration`, `FinesieveGuard`) are in finesieve.client.langchain, which needs
`pip install 'finesieve[langchain]'`; importing this package does not need LangChain.
"""

from finesieve.client.errors import (
    AuthenticationError,
    InvalidRequestError,
    ModerationAPIError,
    ModerationBlocked,
    ModerationError,
    NotFoundError,
    PermissionDeniedError,
    RequestTooLargeError,
    ServerError,
    ServiceUnreachableError,
)
from finesieve.client.http import AsyncModerationClient, ClientConfig, ModerationClient
from finesieve.client.results import Decision, Readiness, StoredMessage

__all__ = [
    "AsyncModerationClient",
    "AuthenticationError",
    "ClientConfig",
    "Decision",
    "InvalidRequestError",
    "ModerationAPIError",
    "ModerationBlocked",
    "ModerationClient",
    "ModerationError",
    "NotFoundError",
    "PermissionDeniedError",
    "Readiness",
    "RequestTooLargeError",
    "ServerError",
    "ServiceUnreachableError",
    "StoredMessage",
]
