"""Reading settings at the edge: YAML files, flags and `--set key=value` strings, checked into pydantic configs.

    config = load_finetune_config("ft.yaml", {"max_steps": 100}, ["lora_r=8"])   # a FinetuneConfig

The fine-tuning configuration itself (`FinetuneConfig`, every knob with its default and help text) lives
beside the scorer it configures, in `finesieve.models.finetune_config`.
"""

from __future__ import annotations

from pathlib import Path

from finesieve.models.finetune_config import FinetuneConfig


def parse_assignments(items) -> dict:
    """`--set key=value` strings -> {key: value}, values parsed as YAML (numbers, booleans, lists)."""
    import yaml

    from finesieve.data.errors import ConfigError

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: write key=value, e.g. --set lora_r=8")
        out[key.strip()] = yaml.safe_load(value)
    return out


def load_finetune_config(path=None, overrides: dict | None = None, assignments: list[str] = ()) -> FinetuneConfig:
    """Settings from a YAML file, then named overrides, then `key=value` strings (parsed as YAML values)."""
    import yaml

    from finesieve.data.errors import ConfigError

    raw: dict = {}
    if path is not None:
        try:
            raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"--config {path}: cannot read it ({err}); pass a YAML file of settings") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"--config {path}: not valid YAML ({err})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping of settings, got {type(raw).__name__}")
    raw.update(overrides or {})
    raw.update(parse_assignments(assignments))
    return validate_settings(FinetuneConfig, raw, "fine-tuning settings (--config, flags, --set)")


def validate_settings(model, raw: dict, where: str):
    """`model.model_validate(raw)`, with every problem as one ConfigError (unknown keys get "did you mean")."""
    from pydantic import ValidationError

    from finesieve.data.errors import config_error

    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise config_error(err, where, model) from None
