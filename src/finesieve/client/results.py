"""What the moderation service answers, as typed objects: `Decision`, `StoredMessage` and `Readiness`.

    decision = client.moderate("WINNER!! Claim your prize now")
    decision.action, decision.category, decision.decided_by     # 'block', 'spam', 'rules'
    decision.blocked                                            # True

These mirror the server's response schemas (finesieve.serve.schemas) without importing them: the client talks HTTP
only. Unknown fields are ignored, so a newer service that adds a field does not break an older client.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

_LENIENT = ConfigDict(extra="ignore", frozen=True, protected_namespaces=())


class Decision(BaseModel):
    """The service's decision on one message (or, with `duplicate=True`, the decision it stored earlier)."""

    model_config = _LENIENT

    id: str = Field(description="The message id: yours, or the one the client generated before the first attempt.")
    action: str = Field(description="deliver | review | block")
    category: str = Field(description="The positive category behind a review or block; empty for deliveries.")
    score: float | None = Field(description="Positive score of the deciding stage; None when the model failed.")
    category_scores: dict[str, float] = Field(description="Probability per positive category.")
    stage_scores: dict[str, float] = Field(description="Positive score per cascade stage that ran.")
    decided_by: str = Field(description="rules | prefilter | model | failure")
    rules_fired: list[str] = Field(description="Names of the rules that fired.")
    model: str = Field(description="The served model's name.")
    model_version: str = Field(description="Run directory name @ sha256 of its manifest.json.")
    latency_ms: float = Field(description="Server time spent preparing and deciding the batch.")
    failure: str | None = Field(description="Why the model did not decide (error or timeout); None otherwise.")
    duplicate: bool = Field(description="True when the id was seen before: this is the stored decision.")

    @property
    def delivered(self) -> bool:
        return self.action == "deliver"

    @property
    def blocked(self) -> bool:
        return self.action == "block"


class StoredMessage(Decision):
    """A stored decision read back by id (the text itself is never returned)."""

    created_at: datetime
    text_length: int = Field(description="Characters of the redacted text.")
    text_stored: bool = Field(description="False once the retention period has deleted the text.")


class Readiness(BaseModel):
    """GET /readyz: whether the models are loaded and the database reachable (`problems` says what is not)."""

    model_config = _LENIENT

    status: str
    models: list[str] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list)

    @property
    def ready(self) -> bool:
        return self.status == "ready" and not self.problems
