"""LangChain runnables over the moderation service: decide a chain's input, or stop the chain when it is blocked.

    from langchain_core.runnables import RunnableLambda
    from finesieve.client import AsyncModerationClient, ModerationClient
    from finesieve.client.langchain import FinesieveGuard, FinesieveModeration, ModerationBlocked

    client = ModerationClient("http://127.0.0.1:8000", api_key="fsk_...")
    FinesieveModeration(client).invoke("hi mum")                      # -> Decision
    chain = FinesieveGuard(client) | prompt | llm                      # input passes through unchanged when delivered
    chain.invoke({"input": "WINNER!! Claim your prize now"})           # raises ModerationBlocked (err.decision)

Inputs: a string, a dict (its `input_key` item, a string or a chat message), or a chat message (its text). Both
runnables have `invoke`/`batch` (with `client`, a ModerationClient) and `ainvoke`/`abatch` (with `async_client`, an
AsyncModerationClient); `batch` sends the whole list in one API call. The guard passes deliveries (and reviews,
unless `block_on_review=True`) and raises `ModerationBlocked` on a block. Needs `pip install 'finesieve[langchain]'`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

try:
    from langchain_core.messages import BaseMessage
    from langchain_core.runnables import Runnable, RunnableConfig
except ImportError as err:  # the client itself works without LangChain; only this module needs it
    raise ImportError(
        "finesieve.client.langchain needs langchain-core (1.x): pip install 'finesieve[langchain]'"
    ) from err

from finesieve.client.errors import ModerationBlocked
from finesieve.client.http import AsyncModerationClient, ModerationClient
from finesieve.client.results import Decision
from finesieve.data.errors import ConfigError

__all__ = ["FinesieveGuard", "FinesieveModeration", "ModerationBlocked"]


def input_text(value: Any, input_key: str) -> str:
    """The text to moderate in a runnable's input: a string, a chat message's text, or a dict's `input_key` item."""
    if isinstance(value, Mapping):
        if input_key not in value:
            raise ConfigError(
                f"the input dict has no {input_key!r} key (it has {sorted(map(str, value))}): set input_key= to the "
                "key holding the text"
            )
        value = value[input_key]
    if isinstance(value, BaseMessage):
        return str(value.text)
    if isinstance(value, str):
        return value
    raise ConfigError(
        f"cannot moderate a {type(value).__name__}: give a string, a chat message, or a dict with the text under "
        f"{input_key!r}"
    )


class _ServiceCalls:
    """What both runnables share: the clients, the model, the input key, and one API call per (a)batch."""

    def __init__(
        self,
        client: ModerationClient | None,
        async_client: AsyncModerationClient | None,
        model: str | None,
        input_key: str,
        owner: str,
    ):
        if client is None and async_client is None:
            raise ConfigError(
                f"{owner} needs client= (a ModerationClient), async_client= (an AsyncModerationClient) or both"
            )
        self.client, self.async_client = client, async_client
        self.model, self.input_key, self.owner = model, input_key, owner

    def decide(self, inputs: list[Any]) -> list[Decision]:
        if self.client is None:
            raise ConfigError(
                f"{self.owner}.invoke/batch need client= (a ModerationClient); only async_client= was given"
            )
        return self.client.moderate([input_text(v, self.input_key) for v in inputs], self.model)

    async def adecide(self, inputs: list[Any]) -> list[Decision]:
        if self.async_client is None:
            raise ConfigError(
                f"{self.owner}.ainvoke/abatch need async_client= (an AsyncModerationClient); only client= was given"
            )
        return await self.async_client.moderate([input_text(v, self.input_key) for v in inputs], self.model)


class FinesieveModeration(Runnable[Any, Decision]):
    """A runnable that returns the service's Decision on its input (see the module docstring)."""

    def __init__(
        self,
        client: ModerationClient | None = None,
        *,
        async_client: AsyncModerationClient | None = None,
        model: str | None = None,
        input_key: str = "input",
    ):
        self.calls = _ServiceCalls(client, async_client, model, input_key, type(self).__name__)

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Decision:
        return self._call_with_config(lambda value: self.calls.decide([value])[0], input, config)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Decision:
        async def decide(value: Any) -> Decision:
            return (await self.calls.adecide([value]))[0]

        return await self._acall_with_config(decide, input, config)

    def batch(
        self,
        inputs: list[Any],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Decision]:
        return self._batch_with_config(self._decide, inputs, config, return_exceptions=return_exceptions)

    async def abatch(
        self,
        inputs: list[Any],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Decision]:
        return await self._abatch_with_config(self._adecide, inputs, config, return_exceptions=return_exceptions)

    # LangChain's batch helpers take functions whose lists may hold an Exception per input; ours never do.
    def _decide(self, inputs: list[Any]) -> list[Exception | Decision]:
        return [*self.calls.decide(inputs)]

    async def _adecide(self, inputs: list[Any]) -> list[Exception | Decision]:
        return [*await self.calls.adecide(inputs)]


class FinesieveGuard(Runnable[Any, Any]):
    """A runnable that returns its input unchanged unless the service blocks it (see the module docstring).

    `block_on_review=True` stops messages sent to review too; by default they pass (a person reviews them later).
    """

    def __init__(
        self,
        client: ModerationClient | None = None,
        *,
        async_client: AsyncModerationClient | None = None,
        model: str | None = None,
        input_key: str = "input",
        block_on_review: bool = False,
    ):
        self.calls = _ServiceCalls(client, async_client, model, input_key, type(self).__name__)
        self.block_on_review = block_on_review

    def _passes(self, value: Any, decision: Decision) -> Any:
        """The input unchanged, or a ModerationBlocked (returned, so a batch can report it per input)."""
        stopped = decision.action == "block" or (self.block_on_review and decision.action == "review")
        return ModerationBlocked(decision) if stopped else value

    def _guard(self, inputs: list[Any]) -> list[Any]:
        return [self._passes(v, d) for v, d in zip(inputs, self.calls.decide(inputs), strict=True)]

    async def _aguard(self, inputs: list[Any]) -> list[Any]:
        return [self._passes(v, d) for v, d in zip(inputs, await self.calls.adecide(inputs), strict=True)]

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return self._call_with_config(lambda value: _raised(self._guard([value])[0]), input, config)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        async def guard(value: Any) -> Any:
            return _raised((await self._aguard([value]))[0])

        return await self._acall_with_config(guard, input, config)

    def batch(
        self,
        inputs: list[Any],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        """One API call for all inputs; a blocked input raises ModerationBlocked, or stands in the list for it
        with return_exceptions=True."""
        return self._batch_with_config(self._guard, inputs, config, return_exceptions=return_exceptions)

    async def abatch(
        self,
        inputs: list[Any],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        return await self._abatch_with_config(self._aguard, inputs, config, return_exceptions=return_exceptions)


def _raised(outcome: Any) -> Any:
    if isinstance(outcome, ModerationBlocked):
        raise outcome
    return outcome
