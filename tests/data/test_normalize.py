"""Tests for finesieve.data.normalize: Unicode cleaning (safe before redaction) and scoring-time de-obfuscation."""

from __future__ import annotations

import random

import pytest

from finesieve.data.normalize import clean, deobfuscate, normalize_for_scoring

CYR_O, CYR_P, CYR_E, CYR_A, CYR_C = "\u043e", "\u0440", "\u0435", "\u0430", "\u0441"


# --- clean -----------------------------------------------------------------------------------------------


def test_cyrillic_lookalikes_fold_to_latin():
    spoofed = f"{CYR_P}h{CYR_O}n{CYR_E}"  # "рhоnе": Cyrillic р, о, е with Latin h, n
    assert not spoofed.isascii()
    assert clean(spoofed) == "phone"
    assert clean(f"wh{CYR_A}ts{CYR_A}pp me") == "whatsapp me"
    assert clean("\u0420\u0410\u0423 now") == "PAY now"  # all-Cyrillic look-alike word in a Latin message


def test_greek_and_other_lookalikes_fold():
    assert clean("\u039f\u03a1\u0395\u039d") == "OPEN"  # Greek capitals Ο Ρ Ε Ν
    assert clean("c\u03bfntact") == "contact"  # Greek omicron
    assert clean("\u0455\u0441\u0430m") == "scam"  # Cyrillic ѕ с а


def test_text_written_in_cyrillic_or_greek_is_left_alone():
    # Only look-alikes in Latin text are folded: a Russian or Greek message keeps its own letters.
    assert clean("\u041f\u0440\u0438\u0432\u0435\u0442, \u043a\u0430\u043a \u0434\u0435\u043b\u0430?") == (
        "\u041f\u0440\u0438\u0432\u0435\u0442, \u043a\u0430\u043a \u0434\u0435\u043b\u0430?"
    )
    assert (
        clean("\u039a\u03b1\u03bb\u03b7\u03bc\u03ad\u03c1\u03b1") == "\u039a\u03b1\u03bb\u03b7\u03bc\u03ad\u03c1\u03b1"
    )
    # ...but a mixed-script word inside such a message is still folded
    assert (
        clean(f"\u041f\u0440\u0438\u0432\u0435\u0442 {CYR_P}h{CYR_O}ne") == "\u041f\u0440\u0438\u0432\u0435\u0442 phone"
    )


@pytest.mark.parametrize(
    "raw",
    [
        "wh\u200bats\u200dapp",  # zero-width space and joiner
        "what\u00adsapp",  # soft hyphen
        "\u202ewhatsapp\u202c",  # bidi override
        "whats\u2060app\ufeff",  # word joiner, BOM
        "what\ufe0fsapp\u034f",  # variation selector, combining grapheme joiner
        "\u2066whatsapp\u2069",  # bidi isolate
    ],
)
def test_invisible_characters_are_removed(raw):
    assert clean(raw) == "whatsapp"


def test_fullwidth_math_and_enclosed_letters_fold():
    assert clean("\uff37\uff48\uff41\uff54\uff53\uff41\uff50\uff50") == "Whatsapp"  # fullwidth
    assert clean("\U0001d42f\U0001d41e\U0001d427\U0001d426\U0001d428") == "venmo"  # mathematical bold
    assert clean("\u24c5\u24d7\u24de\u24dd\u24d4") == "Phone"  # circled
    assert clean("\U0001f170\U0001f17f\U0001f17f") == "APP"  # negative squared (NFKC leaves these)
    assert clean("\u249f\u24a3") == "dh"  # parenthesized: NFKC would give "(d)(h)"
    assert clean("\uff10\uff17\uff17") == "077"  # fullwidth digits become ASCII digits


def test_controls_become_spaces_and_whitespace_collapses():
    assert clean("  call\tme\n\nnow\x00ok\x85  ") == "call me now ok"
    assert clean("a\u00a0\u2003b") == "a b"


def test_keeps_case_digits_and_punctuation_for_redaction():
    text = "Call 555-123-4567 or J.Doe@Mail.com: http://x.co/a?b=1 #42 $5 (ok)!"
    assert clean(text) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "plain ascii text",
        f"{CYR_P}h{CYR_O}n{CYR_E} \u200b me",
        "e\u0301 \u0435\u0301 caf\u00e9",  # Latin e + acute, Cyrillic е + acute (folds, then composes)
        "\u041f\u0440\u0438\u0432\u0435\u0442 \u0435\u0301",
        "\uff37\u200b\u00ad\u24c5 \U0001f170 \u249c",
        "a\x00\u0301b",
    ],
)
def test_clean_is_idempotent(text):
    once = clean(text)
    assert clean(once) == once


def test_clean_is_idempotent_on_random_mixtures():
    pool = (
        "aeopcxyAEOPCXY019 @.:/-_\t\n"
        "\u0430\u0435\u043e\u0440\u0441\u0443\u0445\u0456\u0455\u041e\u0420\u0410\u0434\u0436"  # Cyrillic
        "\u03bf\u03b1\u039f\u0391\u03bb\u03ad"  # Greek
        "\u200b\u200d\u00ad\u202e\ufe0f\u2060\ufeff\x00\x85"  # invisible and control
        "\u0301\u0308\uff41\uff10\u24d0\U0001f170\u249c\u00e9\u00df\ufb01"  # marks, fullwidth, enclosed
    )
    rng = random.Random(0)
    for _ in range(2000):
        text = "".join(rng.choice(pool) for _ in range(rng.randint(0, 24)))
        once = clean(text)
        assert clean(once) == once, repr(text)


def test_clean_is_pure_and_raw_text_stays_available(davidson_slice):
    raw = davidson_slice["text"].copy()
    cleaned = davidson_slice["text"].map(clean)
    assert davidson_slice["text"].equals(raw)  # the raw column is untouched: callers keep it beside the clean one
    assert all(isinstance(t, str) for t in cleaned)
    assert not any("\u200b" in t or "\n" in t or "  " in t for t in cleaned)
    assert all(clean(t) == t for t in cleaned)


# --- deobfuscate -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("ph0ne", "phone"),
        ("wh@tsapp", "whatsapp"),
        ("h3ll0 m0n3y", "hello money"),
        ("c4$h", "cash"),
        ("1nst4gram", "instagram"),
        ("p h o n e", "phone"),
        ("w.h.a.t.s.a.p.p", "whatsapp"),
        ("c-a-s-h app", "cash app"),
        ("p h 0 n e", "phone"),
        ("soooooo good", "soo good"),
        ("Text ME", "text me"),
        ("$cam alert", "scam alert"),
    ],
)
def test_deobfuscate_folds_tricks(raw, expected):
    assert deobfuscate(raw) == expected


@pytest.mark.parametrize(
    "text",
    [
        "555",
        "call 555 123 4567",
        "5 5 5 1 2 3",  # a spaced number is not letters: left for the phone redactor
        "at 5pm",
        "mp3 ps5 b4 4k",
        "$50 each",
        "10/10",
        "a i",  # two single letters are ordinary words, not a spaced-out word
        "too good",  # runs of 3 or fewer are kept
        "wow! great",
    ],
)
def test_deobfuscate_leaves_numbers_and_normal_words(text):
    assert deobfuscate(text) == text


def test_placeholders_survive_deobfuscate():
    assert deobfuscate("Text <PHONE> or <EMAIL> n0w") == "text <PHONE> or <EMAIL> now"
    assert deobfuscate("x<URL><HANDLE>Y") == "x<URL><HANDLE>y"
    assert deobfuscate("<CARD>") == "<CARD>"


def test_unredacted_email_keeps_its_at_sign():
    assert deobfuscate("mail j0hn@gmail.com") == "mail john@gmail.com"


def test_normalize_for_scoring_is_deobfuscate_of_clean():
    raw = f"Wh{CYR_A}ts\u200bApp ME on ph0ne   <PHONE>"
    assert normalize_for_scoring(raw) == deobfuscate(clean(raw)) == "whatsapp me on phone <PHONE>"


def test_normalize_for_scoring_on_real_data(davidson_slice):
    out = [normalize_for_scoring(t) for t in davidson_slice["text"]]
    assert len(out) == len(davidson_slice)
    assert all(t == t.casefold() or "<" in t for t in out)
