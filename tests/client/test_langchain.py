"""The LangChain runnables against the real service: FinesieveModeration decides, FinesieveGuard passes or stops.

Chains are real langchain-core chains (`guard | RunnableLambda(...)`); the service is the one of
tests/client/conftest.py, whose spam cascade blocks PRIZE by its `prize` rule.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from langchain_core.messages import HumanMessage
from langchain_core.runnables import RunnableLambda

from finesieve.client import AsyncModerationClient, ModerationClient
from finesieve.client.langchain import FinesieveGuard, FinesieveModeration, ModerationBlocked
from finesieve.data.errors import ConfigError

PRIZE = "WINNER!! Claim your prize now"
CLEAN = "are we still on for lunch tomorrow"
MODERATE = "/v1/moderate"


@pytest.fixture
def client(service):
    with ModerationClient(service.url, service.keys["all"]) as client:
        yield client


def test_moderation_decides_a_string_a_dict_item_and_a_chat_message(client):
    moderation = FinesieveModeration(client, input_key="question")
    from_text = moderation.invoke(PRIZE)
    from_dict = moderation.invoke({"question": PRIZE, "user": "u1"})
    from_message = moderation.invoke(HumanMessage(PRIZE))
    for decision in (from_text, from_dict, from_message):
        assert (decision.action, decision.decided_by, decision.rules_fired) == ("block", "rules", ["prize"])
    assert len({from_text.id, from_dict.id, from_message.id}) == 3  # three messages, three ids
    assert FinesieveModeration(client, model="tfidf").invoke(CLEAN).model == "tfidf"
    with pytest.raises(ConfigError, match=r"no 'question' key \(it has \['input'\]\).*input_key="):
        moderation.invoke({"input": PRIZE})
    with pytest.raises(ConfigError, match="cannot moderate a int"):
        moderation.invoke(3)


def test_guard_passes_a_clean_message_through_a_chain_and_stops_a_blocked_one(client):
    seen = []
    chain = FinesieveGuard(client) | RunnableLambda(lambda value: seen.append(value) or f"answered: {value['input']}")
    assert chain.invoke({"input": CLEAN}) == f"answered: {CLEAN}"
    with pytest.raises(ModerationBlocked, match=r"stopped by finesieve: action 'block'.*rules prize") as err:
        chain.invoke({"input": PRIZE})
    assert (err.value.decision.action, err.value.decision.decided_by) == ("block", "rules")
    assert PRIZE not in str(err.value)  # the message text stays out of the error (and so out of logs)
    assert seen == [{"input": CLEAN}]  # the step after the guard never saw the blocked input


def test_guard_blocks_reviews_only_when_asked(client, sms_unseen):
    decisions = FinesieveModeration(client).batch(sms_unseen.text.head(300).tolist())
    reviewed = next(t for t, d in zip(sms_unseen.text, decisions) if d.action == "review")
    assert FinesieveGuard(client).invoke(reviewed) == reviewed
    with pytest.raises(ModerationBlocked) as err:
        FinesieveGuard(client, block_on_review=True).invoke(reviewed)
    assert err.value.decision.action == "review"


def test_batch_sends_one_api_call_and_reports_blocked_inputs_in_place(client, service):
    guard = FinesieveGuard(client)
    before = service.requests(MODERATE, 200)
    outputs = guard.batch([CLEAN, PRIZE, "see you at 7"], return_exceptions=True)
    assert service.requests(MODERATE, 200) - before == 1
    assert outputs[0] == CLEAN and outputs[2] == "see you at 7"
    assert isinstance(outputs[1], ModerationBlocked) and outputs[1].decision.action == "block"
    with pytest.raises(ModerationBlocked):
        guard.batch([CLEAN, PRIZE])
    decisions = FinesieveModeration(client).batch([CLEAN, PRIZE])
    assert [d.action for d in decisions][1] == "block"


def test_async_invoke_and_batch(service):
    async def calls():
        # The async client lives and closes inside the one event loop that uses its connections.
        async with AsyncModerationClient(service.url, service.keys["all"]) as async_client:
            return await guarded_calls(async_client)

    async def guarded_calls(async_client):
        guard = FinesieveGuard(async_client=async_client)
        chain = guard | RunnableLambda(lambda value: value.upper())
        passed = await chain.ainvoke(CLEAN)
        with pytest.raises(ModerationBlocked):
            await chain.ainvoke(PRIZE)
        before = service.requests(MODERATE, 200)
        outputs = await guard.abatch([PRIZE, CLEAN], return_exceptions=True)
        one_call = service.requests(MODERATE, 200) - before == 1
        decision = await FinesieveModeration(async_client=async_client).ainvoke(HumanMessage(PRIZE))
        decisions = await FinesieveModeration(async_client=async_client).abatch([CLEAN, PRIZE])
        with pytest.raises(ConfigError, match=r"invoke/batch need client="):
            guard.invoke(CLEAN)
        return passed, outputs, one_call, decision, decisions

    passed, outputs, one_call, decision, decisions = asyncio.run(calls())
    assert passed == CLEAN.upper() and one_call
    assert isinstance(outputs[0], ModerationBlocked) and outputs[1] == CLEAN
    assert decision.action == "block" and [d.action for d in decisions][1] == "block"


def test_the_client_imports_without_langchain_and_the_integration_says_how_to_install_it():
    script = (
        "import sys; sys.modules['langchain_core'] = None\n"  # as if langchain-core were not installed
        "import finesieve.client\n"
        "try:\n"
        "    import finesieve.client.langchain\n"
        "except ImportError as err:\n"
        "    print(err)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert "pip install 'finesieve[langchain]'" in result.stdout
