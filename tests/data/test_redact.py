"""Tests for finesieve.data.redact: per-entity recall and false positives on the labelled PII cases, config,
spans, and a run over real tweets."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
from pydantic import ValidationError

from finesieve.data.normalize import clean
from finesieve.data.preprocess import Preprocessing, prepare
from finesieve.data.redact import ENTITY_TYPES, RedactionConfig, RedactionResult, Redactor, detect

CASES_PATH = Path(__file__).parent / "pii_cases.jsonl"
MIN_RECALL = 0.95  # per entity type
MAX_FALSE_POSITIVE_RATE = 0.03  # share of negative cases with anything redacted


def load_cases() -> list[dict]:
    with open(CASES_PATH, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


@pytest.fixture(scope="module")
def cases() -> list[dict]:
    return load_cases()


@pytest.fixture(scope="module")
def redactor() -> Redactor:
    return Redactor()


def redacted(text: str, **config) -> str:
    return Redactor(RedactionConfig(**config)).redact(clean(text)).text


# --- the labelled set ------------------------------------------------------------------------------------


def test_case_file_is_well_formed_and_large_enough(cases):
    per_type = Counter(e for c in cases for e in set(c["entities"]))
    negatives = sum(1 for c in cases if not c["entities"])
    assert all(set(c) == {"text", "entities"} and isinstance(c["text"], str) for c in cases)
    assert all(e in ENTITY_TYPES for c in cases for e in c["entities"])
    assert all(per_type[e] >= 40 for e in ENTITY_TYPES), per_type
    assert negatives >= 60


def test_recall_per_entity_type(cases, redactor):
    found, total, misses = Counter(), Counter(), []
    for case in cases:
        result = redactor.redact(clean(case["text"]))
        for entity, n in Counter(case["entities"]).items():
            total[entity] += 1
            if result.counts.get(entity, 0) >= n:
                found[entity] += 1
            else:
                misses.append(f"{entity}: {case['text']!r} -> {result.text!r}")
    recall = {e: found[e] / total[e] for e in ENTITY_TYPES}
    low = {e: round(r, 3) for e, r in recall.items() if r < MIN_RECALL}
    assert not low, f"recall below {MIN_RECALL}: {low}; misses:\n" + "\n".join(misses)


def test_false_positive_rate_on_negatives(cases, redactor):
    negatives = [c["text"] for c in cases if not c["entities"]]
    hits = [(t, redactor.redact(clean(t)).text) for t in negatives]
    hits = [(t, r) for t, r in hits if r != clean(t)]
    rate = len(hits) / len(negatives)
    assert rate <= MAX_FALSE_POSITIVE_RATE, f"false-positive rate {rate:.3f}: {hits}"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("text me on 555 123 4567 and we skip the fees", "text me on <PHONE> and we skip the fees"),
        ("call (555) 123-4567", "call <PHONE>"),
        ("555.123.4567", "<PHONE>"),
        ("5551234567", "<PHONE>"),
        ("+44 20 7946 0958", "<PHONE>"),
        ("5 5 5 1 2 3 4 5 6 7", "<PHONE>"),
        ("five five five one two three four five six seven", "<PHONE>"),
        ("555 one two three 45 67", "<PHONE>"),
        ("oh seven nine one one, one two three four five six", "<PHONE>"),
        ("555-l23-4567", "<PHONE>"),
        ("my email is j.smith at gmail dot com", "my email is <EMAIL>"),
        ("john(at)gmail(dot)com", "<EMAIL>"),
        ("john [at] gmail [dot] com", "<EMAIL>"),
        ("john @ gmail . com", "<EMAIL>"),
        ("see bit.ly/abc", "see <URL>"),
        ("example.com", "<URL>"),
        ("shop.co.uk/x", "<URL>"),
        ("visit example dot com", "visit <URL>"),
        ("https://t.co/AbC and www.x.org", "<URL> and <URL>"),
        ("RT @Ivan_splash: hi", "RT <HANDLE>: hi"),
        ("insta: kim.crafts", "insta: <HANDLE>"),
        ("wa: mike_sells", "wa: <HANDLE>"),
        ("ship to 77 Sunset Blvd Apt 4, Los Angeles, CA 90028", "ship to <ADDRESS>"),
        ("4111 1111 1111 1111 exp 04/27", "<CARD> exp 04/27"),
    ],
)
def test_obfuscated_forms(raw, expected):
    assert redacted(raw) == expected


@pytest.mark.parametrize(
    "text",
    [
        "it costs 150",
        "at 5pm",
        "in 2019",
        "2 bedrooms",
        "10/10",
        "meet @ the store",
        "look at the dot",
        "born 12/05/1990",
        "the 2019-2020 model",
        "4111 1111 1111 1112",
    ],  # last one fails the Luhn check
)
def test_numbers_and_words_that_are_not_personal_data(text):
    assert redacted(text) == text


# --- result, spans and config ----------------------------------------------------------------------------


def test_spans_point_at_the_input_text(cases, redactor):
    for case in cases:
        text = clean(case["text"])
        result = redactor.redact(text)
        rebuilt, last = [], 0
        for start, end, entity in result.spans:
            assert last <= start < end <= len(text)
            rebuilt += [text[last:start], f"<{entity}>"]
            last = end
        assert "".join(rebuilt) + text[last:] == result.text
    text = "mail john.doe@gmail.com or call 555 123 4567"
    result = redactor.redact(text)
    assert [(text[s:e], entity) for s, e, entity in result.spans] == [
        ("john.doe@gmail.com", "EMAIL"),
        ("555 123 4567", "PHONE"),
    ]
    assert result.counts == {"EMAIL": 1, "PHONE": 1}
    assert isinstance(result, RedactionResult)


def test_redaction_is_idempotent(cases, redactor):
    for case in cases:
        once = redactor.redact(clean(case["text"])).text
        assert redactor.redact(once).text == once, case["text"]


def test_adjacent_entities():
    assert redacted("555 123 4567/john@gmail.com") == "<PHONE>/<EMAIL>"
    assert redacted("@amy@bob") == "<HANDLE><HANDLE>"
    assert redacted("RT@UberFacts: x") == "RT<HANDLE>: x"  # a mention glued to the word before it


def test_per_field_config():
    config = RedactionConfig(fields={"title": ("URL",), "notes": ()})
    redactor = Redactor(config)
    text = "see shop.com or call 555 123 4567"
    assert redactor.redact(text).text == "see <URL> or call <PHONE>"  # unlisted field: all entities
    assert redactor.redact(text, field="title").text == "see <URL> or call 555 123 4567"
    assert redactor.redact(text, field="notes").text == text
    assert config.entities_for("body") == ENTITY_TYPES


def test_disabled_entity_stays_whole():
    # With EMAIL off, the URL pattern must not take the e-mail's domain.
    assert redacted("mail john@gmail.com or see shop.com", entities=("URL",)) == "mail john@gmail.com or see <URL>"


def test_disabled_redaction_passes_text_through():
    result = Redactor(RedactionConfig(enabled=False)).redact("call 555 123 4567")
    assert result == RedactionResult("call 555 123 4567", {}, ())


def test_entity_names_are_case_insensitive():
    assert RedactionConfig(entities=("phone", "Email")).entities == ("PHONE", "EMAIL")


def test_unknown_entity_is_rejected_with_the_valid_names():
    with pytest.raises(ValidationError) as err:
        RedactionConfig(entities=("PHONE", "FAX"))
    message = str(err.value)
    assert "'FAX'" in message
    assert all(name in message for name in ENTITY_TYPES)
    with pytest.raises(ValidationError) as err:
        RedactionConfig(fields={"notes": ("EMAIL", "SSN")})
    assert "'SSN'" in str(err.value) and "fields['notes']" in str(err.value)


def test_unknown_config_key_is_rejected():
    with pytest.raises(ValidationError, match="entites"):
        RedactionConfig(entites=("PHONE",))


def test_redact_takes_one_string():
    with pytest.raises(TypeError, match="preprocess.prepare"):
        Redactor().redact(["call 555 123 4567"])


def test_prepare_totals_the_redactions():
    texts, totals = prepare(["call 555 123 4567", "mail a.b@c.com and d@e.org", "nothing here"])
    assert texts == ["call <PHONE>", "mail <EMAIL> and <EMAIL>", "nothing here"]
    assert totals == {"PHONE": 1, "EMAIL": 2}


# --- real data -------------------------------------------------------------------------------------------

MENTION = re.compile(r"(?<![\w@])@[A-Za-z_]\w*")


def test_real_tweets_mentions_and_links(davidson_slice):
    texts = [clean(t) for t in davidson_slice["text"]]
    out, totals = prepare(texts, Preprocessing(clean=False))
    with_mention = [i for i, t in enumerate(texts) if MENTION.search(t)]
    with_link = [i for i, t in enumerate(texts) if "http://t.co/" in t]
    assert len(with_mention) > 500 and len(with_link) > 100  # the slice really exercises both
    assert not [out[i] for i in with_mention if MENTION.search(out[i])]
    assert all("<HANDLE>" in out[i] for i in with_mention)
    assert not [out[i] for i in with_link if "t.co/" in out[i]]
    assert all("<URL>" in out[i] for i in with_link)
    assert any(o.startswith("RT <HANDLE>:") for o in out)
    # Tweets carry almost no phones, cards or addresses: a flood of them would mean false positives.
    assert totals.get("PHONE", 0) + totals.get("CARD", 0) + totals.get("ADDRESS", 0) < 0.01 * len(texts)


def test_detect_returns_sorted_disjoint_spans(davidson_slice):
    for text in davidson_slice["text"][:500]:
        spans = detect(clean(text))
        assert spans == sorted(spans)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
