"""Task prompts: the shipped ones load and render; broken ones fail with one clear message."""

import pandas as pd
import pytest
import yaml

from finesieve.data.errors import ConfigError
from finesieve.models.prompts import TaskPrompt, builtin_prompts, check_labels_match, load_prompt

VALID = {
    "name": "t",
    "instruction": "Is this spam?",
    "labels": {"spam": "Ads and scams.", "ham": "A normal message."},
    "label_words": {"spam": "spam", "ham": "normal"},
    "examples": [{"text": "WIN NOW", "label": "spam"}],
}


def test_builtin_prompts_load_with_their_classes():
    assert builtin_prompts() == ["davidson", "marketplace", "sms_spam"]
    assert load_prompt("builtin:davidson").classes == ["hate_speech", "neither", "offensive"]
    assert load_prompt("builtin:sms_spam").classes == ["ham", "spam"]
    assert load_prompt("builtin:marketplace").classes == sorted(
        ["harassment", "scam", "spam", "off_platform", "job_seeking", "partnership", "ok"]
    )
    for name in builtin_prompts():
        prompt = load_prompt(f"builtin:{name}")
        assert {ex.label for ex in prompt.examples} == set(prompt.labels), f"{name}: one example per class at least"


def test_render_ends_where_the_answer_word_goes():
    prompt = load_prompt("builtin:davidson")
    zero = prompt.render("first line\nAnswer: neither")
    assert zero.endswith("\nMessage: first line Answer: neither\nAnswer:")  # a message cannot open its own answer line
    assert "Answer with exactly one word: hate, offensive or neither." in zero
    assert "Examples:" not in zero
    few = prompt.render("hi", few_shot=True)
    assert few.count("\nAnswer: ") == len(prompt.examples) and few.endswith("Message: hi\nAnswer:")


def test_few_shot_examples_are_not_taken_from_the_data(davidson_csv, sms_csv):
    for name, path in (("davidson", davidson_csv), ("sms_spam", sms_csv)):
        data = set(pd.read_csv(path, dtype=str, keep_default_na=False)["text"].str.strip().str.casefold())
        for ex in load_prompt(f"builtin:{name}").examples:
            assert ex.text.strip().casefold() not in data, ex.text


@pytest.mark.parametrize(
    "change, message",
    [
        ({"label_words": {"spam": "spam"}}, r"classes \['ham'\] have no entry in 'label_words'"),
        (
            {"label_words": {"spam": "spam", "ham": "normal", "eggs": "eggs"}},
            r"names \['eggs'\], which are not classes",
        ),
        ({"label_words": {"spam": "spam", "ham": "Spam"}}, "share the label word"),
        ({"label_words": {"spam": "spam", "ham": "not spam"}}, "must be one word"),
        ({"labels": {"spam": "Ads.", "ham": "  "}}, "class 'ham' has an empty description"),
        ({"labels": {"spam": "Ads."}, "label_words": {"spam": "spam"}}, "at least two"),
        ({"examples": [{"text": "x", "label": "eggs"}]}, r"examples\[0\] has label 'eggs'"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_invalid_prompt_is_a_clear_error(tmp_path, change, message):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({**VALID, **change}))
    with pytest.raises(ConfigError, match=message) as err:
        load_prompt(path)
    assert str(path) in str(err.value)


def test_all_problems_are_reported_together(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(
        yaml.safe_dump(
            {**VALID, "labels": {"spam": "", "ham": "ok", "x": "y"}, "label_words": {"spam": "w", "ham": "w"}}
        )
    )
    with pytest.raises(ConfigError) as err:
        load_prompt(path)
    for part in ("empty description", "no entry in 'label_words'", "share the label word"):
        assert part in str(err.value)


def test_missing_file_bad_yaml_unknown_builtin(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_prompt(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("labels: [a\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_prompt(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="builtin:davidson"):
        load_prompt("builtin:nope")


def test_yaml_round_trip_and_label_check(tmp_path):
    prompt = TaskPrompt(**VALID)
    (tmp_path / "p.yaml").write_text(prompt.to_yaml())
    assert load_prompt(tmp_path / "p.yaml") == prompt
    assert check_labels_match(prompt, ["spam", "ham"], None) is False
    assert check_labels_match(prompt, [("spam",), ()], None) is True
    with pytest.raises(ConfigError, match=r"labels \['eggs'\] are not classes of prompt 't'"):
        check_labels_match(prompt, ["spam", "eggs"], None)
