"""Task prompts: the policy written for a language model, shared by every prompt baseline.

A task prompt names each class, defines it (the policy text a moderator would read), and fixes the one
word the model answers with for it. `render` writes the prompt so that it ends exactly where that word
goes, so a scorer can read the probability of each answer word from the next-token distribution.

    name: sms_spam
    instruction: Decide whether this text message is spam.
    labels:                     # class name -> definition
      spam: Unsolicited advertising, prize or premium-rate offers ...
      ham: A message between people who know each other ...
    label_words:                # class name -> the single word the model answers with
      spam: spam
      ham: normal
    examples:                   # optional few-shot examples, written for the prompt (not taken from test data)
      - {text: "WIN a free cruise! Reply YES now", label: spam}

Usage:
    from finesieve.models.prompts import load_prompt
    prompt = load_prompt("builtin:davidson")          # or a path to a YAML file
    print(prompt.render("some tweet", few_shot=True))  # "...\\nMessage: some tweet\\nAnswer:"
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from finesieve.data.errors import ConfigError, config_error
from finesieve.data.normalize import clean
from finesieve.models.base import infer_multilabel, label_tuples

__all__ = ["PromptExample", "TaskPrompt", "load_prompt", "builtin_prompts", "check_labels_match"]


class PromptExample(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(description="An example message, written for the prompt.")
    label: str = Field(description="Its class name (a key of `labels`).")


class TaskPrompt(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Prompt name, shown in reports.")
    description: str = Field("", description="What the task is, for people reading the file.")
    instruction: str = Field(description="What the model is asked to do; the first paragraph of the prompt.")
    labels: dict[str, str] = Field(description="Class name -> its definition (the policy text), in display order.")
    label_words: dict[str, str] = Field(description="Class name -> the single word the model answers with.")
    examples: list[PromptExample] = Field(
        default_factory=list, description="Few-shot examples, used when few_shot=True."
    )

    @model_validator(mode="after")
    def _check(self) -> TaskPrompt:
        problems = []
        if not self.instruction.strip():
            problems.append("'instruction' is empty: say what the model must decide")
        if len(self.labels) < 2:
            problems.append(f"'labels' holds {len(self.labels)} class(es): a task needs at least two")
        for name, text in self.labels.items():
            if not text or not text.strip():
                problems.append(f"class '{name}' has an empty description in 'labels': write its definition")
        missing = [c for c in self.labels if c not in self.label_words]
        if missing:
            problems.append(
                f"classes {missing} have no entry in 'label_words': give each class the word the model answers with"
            )
        unknown = [c for c in self.label_words if c not in self.labels]
        if unknown:
            problems.append(
                f"'label_words' names {unknown}, which are not classes in 'labels' {list(self.labels)}: add them or fix the name"
            )
        seen: dict[str, str] = {}
        for name, word in self.label_words.items():
            if not word or not word.strip() or len(word.split()) != 1 or word != word.strip():
                problems.append(
                    f"label word {word!r} of class '{name}' must be one word without spaces (the model answers with it)"
                )
                continue
            key = word.casefold()
            if key in seen:
                problems.append(
                    f"classes '{seen[key]}' and '{name}' share the label word {word!r}: label words must be distinct"
                )
            seen[key] = name
        for i, ex in enumerate(self.examples):
            if ex.label not in self.labels:
                problems.append(f"examples[{i}] has label {ex.label!r}, not a class in 'labels' {list(self.labels)}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def classes(self) -> list[str]:
        """Class names, sorted: the `classes_` order of the scorers built on this prompt."""
        return sorted(self.labels)

    def render(self, text: str, few_shot: bool = False) -> str:
        """The prompt for one message, ending right before the answer word ("...\\nAnswer:").

        The message is cleaned (`finesieve.data.normalize.clean`: whitespace and line breaks collapsed), so a
        message cannot start a new "Answer:" line of its own.
        """
        words = [self.label_words[c] for c in self.labels]
        choices = ", ".join(words[:-1]) + " or " + words[-1]
        parts = [self.instruction.strip(), "", "Categories:"]
        parts += [f"- {self.label_words[c]}: {' '.join(d.split())}" for c, d in self.labels.items()]
        parts += ["", f"Answer with exactly one word: {choices}.", ""]
        if few_shot and self.examples:
            parts += ["Examples:", ""]
            for ex in self.examples:
                parts += [f"Message: {clean(ex.text)}", f"Answer: {self.label_words[ex.label]}", ""]
        parts += [f"Message: {clean(text)}", "Answer:"]
        return "\n".join(parts)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(), sort_keys=False, allow_unicode=True, width=110)


def builtin_prompts() -> list[str]:
    """Names of the prompts shipped with finesieve (`builtin:NAME`)."""
    files = resources.files("finesieve") / "prompts"
    return sorted(p.name.removesuffix(".yaml") for p in files.iterdir() if p.name.endswith(".yaml"))


def load_prompt(path: str | Path | TaskPrompt) -> TaskPrompt:
    """Read and validate a task prompt: `builtin:NAME` (see `builtin_prompts()`) or a YAML file path."""
    if isinstance(path, TaskPrompt):
        return path
    path = str(path)
    if path.startswith("builtin:"):
        name = path.split(":", 1)[1]
        available = builtin_prompts()
        if name not in available:
            raise ConfigError(f"no built-in prompt '{name}': choose one of {['builtin:' + a for a in available]}")
        text = (resources.files("finesieve") / "prompts" / f"{name}.yaml").read_text(encoding="utf-8")
    else:
        if not Path(path).is_file():
            raise ConfigError(
                f"{path}: prompt file not found: check the path, or use builtin:NAME ({builtin_prompts()})"
            )
        text = Path(path).read_text(encoding="utf-8")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path}: a prompt file must be a YAML mapping with name, instruction, labels and label_words"
        )
    return validate_prompt(raw, source=path)


def validate_prompt(raw: dict, source: str = "prompt") -> TaskPrompt:
    """A TaskPrompt from a mapping; every problem reported in one ConfigError."""
    try:
        return TaskPrompt.model_validate(raw)
    except ValidationError as err:
        raise config_error(err, f"{source}: invalid prompt", TaskPrompt) from None


def check_labels_match(prompt: TaskPrompt, labels: Sequence, multilabel: bool | None) -> bool:
    """Check that every label of the data is a class of the prompt; returns the resolved `multilabel`.

    A prompt scorer is not trained, so it can only answer with the prompt's classes: a label the prompt does
    not define is an error (not silently scored as something else). A prompt class absent from the data is
    fine (a small sample may lack a rare class).
    """
    if multilabel is None:
        multilabel = infer_multilabel(labels)
    found = sorted({c for t in label_tuples(labels, multilabel) for c in t})
    unknown = [c for c in found if c not in prompt.labels]
    if unknown:
        raise ConfigError(
            f"labels {unknown} are not classes of prompt '{prompt.name}' ({prompt.classes}): map the data's labels to "
            "the prompt's class names, or use a prompt written for these labels (add them to 'labels' and 'label_words')"
        )
    return multilabel


def prompt_for_classes(classes: Sequence[str]) -> str:
    """The built-in prompt that defines every one of `classes` (the first such, by name)."""
    for name in builtin_prompts():
        prompt = load_prompt(f"builtin:{name}")
        if set(classes) <= set(prompt.classes):
            return f"builtin:{name}"
    raise ConfigError(
        f"no built-in prompt defines the classes {sorted(classes)}: write one (see "
        f"src/finesieve/prompts/*.yaml) and pass it with --prompt"
    )
