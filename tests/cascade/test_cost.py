"""The cost model: measured latency x price table, weighted by the share of messages each stage sees."""

import pytest

from finesieve.cascade.cost import (
    PriceTable,
    StageCost,
    api_per_million,
    cascade_per_million,
    cascade_seconds_per_message,
    count_prompt_tokens,
    load_prices,
)
from finesieve.data.errors import ConfigError


def test_stage_cost_per_million_by_hand():
    prices = PriceTable(cpu_core_hour=0.05, gpu_hour=3.0)
    model = StageCost("model", seconds_per_message=0.006, cores=2)
    # 1e6 messages x 6 ms = 6,000 s = 1.667 h, on 2 cores at 0.05 per core-hour.
    assert model.per_million(prices) == pytest.approx(6000 / 3600 * 2 * 0.05)
    assert model.messages_per_second() == pytest.approx(1 / 0.006)
    gpu = StageCost("model", seconds_per_message=0.0005, cores=16, device="gpu")
    assert gpu.per_million(prices) == pytest.approx(500 / 3600 * 3.0)  # a GPU is priced per GPU-hour, not per core


def test_cascade_pays_each_stage_on_the_share_it_sees():
    prices = PriceTable(cpu_core_hour=0.04)
    stages = {
        "rules": StageCost("rules", 0.00005, 2),
        "prefilter": StageCost("prefilter", 0.0003, 2),
        "model": StageCost("model", 0.006, 2),
    }
    reach = {"rules": 1.0, "prefilter": 0.97, "model": 0.1}
    expected = sum(stages[s].per_million(prices) * share for s, share in reach.items())
    assert cascade_per_million(stages, reach, prices) == pytest.approx(expected)
    assert cascade_per_million(stages, {"model": 1.0}, prices) == pytest.approx(stages["model"].per_million(prices))
    # The cascade's latency bound: 0.05 + 0.97 * 0.3 + 0.1 * 6 ms per message.
    assert cascade_seconds_per_message(stages, reach) == pytest.approx(0.00005 + 0.97 * 0.0003 + 0.1 * 0.006)
    with pytest.raises(ValueError, match="no measured cost"):
        cascade_per_million(stages, {"llm": 0.2}, prices)


def test_measured_cost_needs_messages():
    with pytest.raises(ValueError, match="no messages were timed"):
        StageCost.measured("model", 1.0, 0)
    c = StageCost.measured("model", seconds=2.0, n_messages=400)
    assert c.seconds_per_message == pytest.approx(0.005) and c.cores >= 1


def test_api_cost():
    prices = PriceTable(
        api_input_per_million_tokens=0.15, api_output_per_million_tokens=0.6, api_output_tokens_per_message=1
    )
    # 200 prompt tokens per message: 200 M input tokens and 1 M output tokens per million messages.
    assert api_per_million(200, prices) == pytest.approx(200 * 0.15 + 0.6)


def test_price_file(tmp_path):
    good = tmp_path / "prices.yaml"
    good.write_text("cpu_core_hour: 0.1\ncurrency: EUR\n")
    table = load_prices(good)
    assert table.cpu_core_hour == 0.1 and table.currency == "EUR" and table.gpu_hour == PriceTable().gpu_hour
    bad = tmp_path / "bad.yaml"
    bad.write_text("cpu_core_hr: 0.1\n")
    with pytest.raises(ConfigError, match="cpu_core_hr"):
        load_prices(bad)
    bad.write_text("cpu_core_hour: -1\n")
    with pytest.raises(ConfigError, match="cpu_core_hour"):
        load_prices(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_prices(tmp_path / "missing.yaml")
    assert load_prices(None) == PriceTable()


def test_prompt_tokens_count_the_whole_prompt():
    texts = ["you are a lovely person", "I will find where you live"]
    tokens = count_prompt_tokens("builtin:davidson", texts)
    assert tokens > 30  # instructions and definitions, not just the message
    longer = count_prompt_tokens("builtin:davidson", [t + " and more words here" for t in texts])
    assert longer == pytest.approx(tokens + 4, abs=1)
