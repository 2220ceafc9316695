"""The evasion tricks: each kind changes words as documented, leaves placeholders, mentions and URLs alone, is
seeded, and the ones `normalize` is meant to undo are undone; augmentation copies a share of the rows."""

import random

import pytest

from finesieve.data.evasion import EVASION_KINDS, EvasionConfig, augment_with_evasion, evade, evade_texts
from finesieve.data.normalize import normalize_for_scoring

TEXT = "@bob I really hate those people <PHONE> http://x.co/abc #tags go away"


def letters(text: str) -> str:
    return "".join(ch for ch in text if ch.isalpha())


@pytest.mark.parametrize("kind", EVASION_KINDS)
def test_each_kind_changes_words_but_not_protected_tokens(kind):
    out = evade(TEXT, kind, random.Random(3), rate=1.0)
    assert out != TEXT
    for token in ("@bob", "<PHONE>", "http://x.co/abc", "#tags"):
        assert token in out, (kind, out)


def test_kinds_do_what_they_say():
    rng = random.Random(0)
    word = "vermin"
    swapped = evade(word, "swap", rng, rate=1.0)
    assert sorted(swapped) == sorted(word) and swapped != word and swapped[0] == "v" and swapped[-1] == "n"
    dropped = evade(word, "drop", rng, rate=1.0)
    assert len(dropped) == len(word) - 1 and dropped[0] == "v" and dropped[-1] == "n"
    doubled = evade(word, "double", rng, rate=1.0)
    assert len(doubled) == len(word) + 1 and letters(doubled).replace("", "") != word
    assert evade("go away now", "join", random.Random(1), rate=1.0).count(" ") < 2
    split = evade(word, "split", rng, rate=1.0)
    assert split.replace(" ", "") == word and " " in split
    leet = evade("assassin", "leet", rng, rate=1.0)
    assert leet != "assassin" and any(ch in leet for ch in "4@5$1!")
    look = evade("peace", "lookalike", rng, rate=1.0)
    assert look != "peace" and not look.isascii() and len(look) == 5
    sep = evade(word, "separator", rng, rate=1.0)
    assert any(s in sep for s in ".-*_") and letters(sep) == word


def test_short_words_and_empty_messages_are_left_alone():
    for text in ("", "ok", "<PHONE> @x", "12 34"):
        assert evade(text, "swap", random.Random(0)) == text


def test_evade_texts_is_seeded_and_per_message():
    texts = ["you are a disgrace to this country", "nobody wants you here", "lovely weather today"]
    a, kinds_a = evade_texts(texts, EvasionConfig(seed=1))
    b, kinds_b = evade_texts(texts, EvasionConfig(seed=1))
    assert (a, kinds_a) == (b, kinds_b)
    c, _ = evade_texts(texts, EvasionConfig(seed=2))
    assert c != a
    # A message's evasion does not depend on the others.
    alone, _ = evade_texts(texts[:1], EvasionConfig(seed=1))
    assert alone[0] == a[0]
    only_leet, kinds = evade_texts(texts, EvasionConfig(kinds=("leet",), seed=1))
    assert set(kinds) == {"leet"}


@pytest.mark.parametrize(
    ("evaded", "plain"),
    [
        ("I h.a.t.e those", "i hate those"),  # a space before the word, dots inside it: mixed separators
        ("you f-r-e-a-k", "you freak"),
        ("s\u0441um", "scum"),  # Cyrillic с
        ("tr4sh", "trash"),
        ("i h.4.t.e u", "i hate u"),
    ],
)
def test_normalize_undoes_the_tricks_it_is_meant_to(evaded, plain):
    assert normalize_for_scoring(evaded) == plain


def test_normalize_keeps_mixed_separator_runs_that_are_not_words():
    assert normalize_for_scoring("p.s. i love it") == "p.s. i love it"
    assert normalize_for_scoring("a 4 b.a.d") == "a 4 bad"  # the lone 4 stays a number


def test_augmentation_copies_a_seeded_share():
    texts = [f"message number {i} about something different" for i in range(200)]
    rows, copies = augment_with_evasion(texts, 0.25, seed=0)
    assert len(rows) == len(copies) == 50
    assert all(copies[k] != texts[i] for k, i in enumerate(rows))
    assert augment_with_evasion(texts, 0.25, seed=0) == (rows, copies)
    assert augment_with_evasion(texts, 0.25, seed=1)[0] != rows
    with pytest.raises(ValueError, match="outside"):
        augment_with_evasion(texts, 1.5)
