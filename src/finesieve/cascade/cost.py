"""What moderation costs per million messages: measured latency per stage times a price table.

    prices = load_prices("prices.yaml")        # or PriceTable() for the illustrative defaults
    fine_tuned = StageCost("model", seconds_per_message=0.0067, cores=2)
    fine_tuned.per_million(prices)                                   # the model on every message
    cascade_per_million({"prefilter": pre, "model": fine_tuned}, {"prefilter": 1.0, "model": 0.09}, prices)
    api_per_million(tokens_per_message=180, prices=prices)          # a prompt baseline on a hosted API

Local stages are charged for the wall time they took on this machine times the cores the process could use
(a conservative share: a 2-core machine scoring at 150 msgs/s pays for both cores), at `cpu_core_hour`, or at
`gpu_hour` when the stage ran on a GPU. A cascade pays for each stage on the share of messages that reach it.
A hosted prompt baseline pays per token: the prompt (instructions, definitions, the message) in and one
label word out. Token counts of hosted models differ; `count_prompt_tokens` uses the packaged MiniLM
WordPiece tokenizer as an estimate.

The default prices are illustrative list prices, not quotes: replace them with your own contract (a YAML
file with any of the PriceTable fields).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from finesieve.data.errors import ConfigError, config_error

MILLION = 1_000_000


class PriceTable(BaseModel):
    model_config = ConfigDict(extra="forbid")

    currency: str = Field("USD", description="Currency of every price below.")
    cpu_core_hour: float = Field(
        0.05,
        ge=0,
        description=(
            "Price of one vCPU for an hour (on-demand general-purpose cloud instances list about 0.04-0.05 USD)."
        ),
    )
    gpu_hour: float = Field(3.0, ge=0, description="Price of one GPU for an hour (on-demand H100 lists about 2-4 USD).")
    api_model: str = Field("gpt-4o-mini", description="Hosted model the prompt baseline is priced on.")
    api_input_per_million_tokens: float = Field(0.15, ge=0, description="API price per million prompt tokens.")
    api_output_per_million_tokens: float = Field(0.60, ge=0, description="API price per million generated tokens.")
    api_output_tokens_per_message: int = Field(1, ge=0, description="Tokens generated per message (one label word).")
    note: str = Field(
        "illustrative list prices; replace with your own contract", description="Where the prices come from."
    )


def load_prices(path: str | Path | None = None) -> PriceTable:
    """The price table in a YAML file (any subset of PriceTable's fields), or the defaults."""
    if path is None:
        return PriceTable()
    path = Path(path)
    if not path.exists():
        raise ConfigError(
            f"{path}: price table not found; write a YAML file with fields of PriceTable, e.g. 'cpu_core_hour: 0.05'"
        )
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return PriceTable.model_validate(raw)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    except ValidationError as err:
        raise config_error(err, f"{path}: invalid price table", PriceTable) from None


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass
class StageCost:
    """Measured latency of one stage: wall seconds per message over a batch, and what it ran on."""

    name: str
    seconds_per_message: float
    cores: int = 1
    device: str = "cpu"  # "cpu" or "gpu"

    @classmethod
    def measured(cls, name: str, seconds: float, n_messages: int, device: str = "cpu") -> StageCost:
        if n_messages <= 0:
            raise ValueError(f"stage '{name}': no messages were timed, so no latency can be measured")
        return cls(name, seconds / n_messages, available_cores(), device)

    def messages_per_second(self) -> float:
        return 1.0 / self.seconds_per_message if self.seconds_per_message > 0 else float("inf")

    def per_million(self, prices: PriceTable) -> float:
        hourly = prices.gpu_hour if self.device == "gpu" else self.cores * prices.cpu_core_hour
        return self.seconds_per_message * MILLION / 3600 * hourly

    def to_dict(self, prices: PriceTable) -> dict:
        return {
            "seconds_per_message": self.seconds_per_message,
            "messages_per_second": self.messages_per_second(),
            "cores": self.cores,
            "device": self.device,
            "cost_per_million": self.per_million(prices),
        }


def cascade_per_million(stages: dict[str, StageCost], reach: dict[str, float], prices: PriceTable) -> float:
    """Cost per million messages when stage s sees a share reach[s] of them (1.0 for the first stage)."""
    unknown = sorted(set(reach) - set(stages))
    if unknown:
        raise ValueError(f"reach names stages {unknown} with no measured cost; measure them or drop them")
    return sum(stages[name].per_million(prices) * share for name, share in reach.items())


def cascade_seconds_per_message(stages: dict[str, StageCost], reach: dict[str, float]) -> float:
    return sum(stages[name].seconds_per_message * share for name, share in reach.items())


def api_per_million(tokens_per_message: float, prices: PriceTable) -> float:
    """Hosted API cost per million messages for a prompt of `tokens_per_message` tokens and a one-word answer."""
    return (
        tokens_per_message * prices.api_input_per_million_tokens
        + prices.api_output_tokens_per_message * prices.api_output_per_million_tokens
    )


def count_prompt_tokens(prompt, texts: Sequence[str], few_shot: bool = False) -> float:
    """Mean tokens of the rendered prompt over `texts` (estimated with the packaged MiniLM tokenizer)."""
    from transformers import AutoTokenizer

    from finesieve.models.prompts import load_prompt
    from finesieve.models.text_classifier import resolve_model

    task = load_prompt(prompt)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("packaged:all-MiniLM-L6-v2"))
    texts = list(texts)
    if not texts:
        raise ValueError("no texts to count prompt tokens on")
    rendered = [task.render(t, few_shot=few_shot) for t in texts]
    counts = [len(ids) for ids in tokenizer(rendered, add_special_tokens=False)["input_ids"]]
    return sum(counts) / len(counts)
