"""Request and response bodies of the moderation service (pydantic; FastAPI validates and documents them).

    POST /v1/moderate      ModerateRequest -> ModerateResponse
    POST /v1/moderations   OpenAIModerationRequest -> OpenAIModerationResponse (the OpenAI moderation API's shape)
    GET  /v1/messages/ID   -> StoredMessage

Requests refuse unknown fields, so a misspelt field is a 422 naming it rather than silently ignored.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ID_MAX = 200  # the messages.id column's width


class MessageRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(
        None,
        min_length=1,
        max_length=ID_MAX,
        description="Your message id: a retry with it returns the stored decision.",
    )
    text: str = Field(min_length=1, description="The message text (stored only after redaction).")


class ModerateRequest(BaseModel):
    """Either a batch (`messages`) or one message (`text`, optional `id`)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str | None = Field(None, description="Model to use; the service's default when omitted.")
    messages: list[MessageRequest] | None = Field(None, min_length=1, description="A batch of messages.")
    id: str | None = Field(None, min_length=1, max_length=ID_MAX, description="One message's id (with `text`).")
    text: str | None = Field(None, min_length=1, description="One message's text (instead of `messages`).")

    @model_validator(mode="after")
    def _one_form(self) -> ModerateRequest:
        if self.messages is not None and (self.text is not None or self.id is not None):
            raise ValueError("send either `messages` (a batch) or `text` with an optional `id`, not both")
        if self.messages is None and self.text is None:
            raise ValueError("nothing to moderate: send `messages: [{id, text}, ...]` or `text`")
        return self

    def batch(self) -> list[MessageRequest]:
        return self.messages if self.messages is not None else [MessageRequest(id=self.id, text=self.text or "")]


class Decision(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    id: str = Field(description="The message id: yours, or a generated uuid4.")
    action: str = Field(description="deliver | review | block")
    category: str = Field(description="The positive category behind a review or block; empty for deliveries.")
    score: float | None = Field(description="Positive score of the deciding stage; null when the model failed.")
    category_scores: dict[str, float] = Field(description="Probability per positive category.")
    stage_scores: dict[str, float] = Field(description="Positive score per cascade stage that ran.")
    decided_by: str = Field(description="rules | prefilter | model | failure")
    rules_fired: list[str] = Field(description="Names of the rules that fired.")
    model: str
    model_version: str = Field(description="Run directory name @ sha256 of its manifest.json.")
    latency_ms: float = Field(description="Time spent preparing and deciding the batch this message came in.")
    failure: str | None = Field(description="Why the model did not decide (error or timeout); null otherwise.")
    duplicate: bool = Field(description="True when the id was seen before: this is the stored decision.")


class ModerateResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model: str
    results: list[Decision] = Field(description="One decision per message, in request order.")


class StoredMessage(Decision):
    created_at: datetime = Field(description="When it was decided, UTC (RFC 3339).")
    text_length: int = Field(description="Characters of the redacted text.")
    text_stored: bool = Field(description="False once the retention period has deleted the text.")

    @field_validator("created_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        # The database keeps naive UTC; answered without a zone it would not be an RFC 3339 date-time.
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class OpenAIModerationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    input: str | list[str] = Field(description="One text or a list of texts.")
    model: str | None = None

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class OpenAIModerationResult(BaseModel):
    flagged: bool
    categories: dict[str, bool]
    category_scores: dict[str, float]


class OpenAIModerationResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    id: str
    model: str
    results: list[OpenAIModerationResult]
