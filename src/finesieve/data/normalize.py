"""Text normalisation: undo the tricks people use to slip contact details and abuse past a filter.

Two layers, both pure functions of their input (the raw message is kept elsewhere, e.g. `text_raw` in
`finesieve.data.dataset`):

    clean(text)        Unicode hygiene, safe to run before PII redaction and fit for storage: NFKC (folds
                       fullwidth, mathematical and circled letters), invisible characters removed, control
                       characters turned into spaces, Cyrillic/Greek/Armenian look-alike letters folded to Latin,
                       whitespace collapsed. Keeps case, digits and punctuation (@ . : / stay as they are).
    deobfuscate(text)  Lossy folding for scoring features only: casefold, leet inside words (ph0ne -> phone,
                       wh@tsapp -> whatsapp), spaced-out letters joined (p h o n e -> phone), runs of 4+ identical
                       letters cut to 2 (soooooo -> soo). Placeholders such as <PHONE> pass through unchanged.
    normalize_for_scoring(text) = deobfuscate(clean(text))

Both run on millions of messages: regexes and translate tables are built once at import, and pure-ASCII
text (most of it) takes a short path.

Usage:
    from finesieve.data.normalize import clean, normalize_for_scoring
    clean("call me on wh\u0430ts\u0430pp\u200b  now")    # 'call me on whatsapp now' (Cyrillic а folded)
    normalize_for_scoring("Text my ph0ne <PHONE>")       # 'text my phone <PHONE>'
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["clean", "deobfuscate", "normalize_for_scoring"]

# --- clean -----------------------------------------------------------------------------------------------

# Characters that render as nothing (or as a blank) and are used to split words past keyword filters:
# soft hyphen, combining grapheme joiner, Arabic letter mark, Hangul fillers, Khmer invisible vowels,
# Mongolian variation selectors, zero-width space/joiners and direction marks, bidi embeddings/overrides and
# isolates, word joiner and invisible operators, variation selectors, BOM, tag characters (which can smuggle
# hidden ASCII). ZWJ inside emoji sequences goes too: an emoji family splits into its members, which is harmless.
_INVISIBLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u206f"
    "\u3164\ufe00-\ufe0f\ufeff\uffa0\U000e0000-\U000e007f\U000e0100-\U000e01ef]+"
)

# Control characters (Unicode category Cc: C0, DEL, C1) become spaces, then every whitespace run one space.
_SPACES = re.compile(r"[\s\x00-\x1f\x7f-\x9f]+")


def _enclosed_letters() -> dict[int, str]:
    """Enclosed letters that NFKC leaves alone (negative circled/squared) or wraps in brackets (parenthesized)."""
    table: dict[int, str] = {}
    for i in range(26):
        upper, lower = chr(ord("A") + i), chr(ord("a") + i)
        table[0x249C + i] = lower  # ⒜ -> a (NFKC would give "(a)")
        table[0x1F110 + i] = upper  # 🄐 -> A (NFKC would give "(A)")
        table[0x1F150 + i] = upper  # 🅐 negative circled
        table[0x1F170 + i] = upper  # 🅰 negative squared
    # Regional indicators (🇦) are left alone on purpose: pairs of them are national flags.
    return table


_ENCLOSED = _enclosed_letters()
_ENCLOSED_RE = re.compile("[\u249c-\u24b5\U0001f110-\U0001f129\U0001f150-\U0001f169\U0001f170-\U0001f189]")

# Look-alike letters from other scripts, by hand: the ones seen in spam, not Unicode's full confusables list
# (which also maps letters to digits and would change numbers). Upper and lower case each map to their own case.
_LOOKALIKES = {
    # Cyrillic
    "а": "a",
    "с": "c",
    "ԁ": "d",
    "е": "e",
    "һ": "h",
    "і": "i",
    "ј": "j",
    "к": "k",
    "ӏ": "l",
    "о": "o",
    "р": "p",
    "ԛ": "q",
    "ѕ": "s",
    "ѵ": "v",
    "ԝ": "w",
    "х": "x",
    "у": "y",
    "ү": "y",
    "А": "A",
    "В": "B",
    "С": "C",
    "Е": "E",
    "Н": "H",
    "І": "I",
    "Ј": "J",
    "К": "K",
    "Ӏ": "I",
    "М": "M",
    "О": "O",
    "Р": "P",
    "Ԛ": "Q",
    "Ѕ": "S",
    "Т": "T",
    "Ѵ": "V",
    "Ԝ": "W",
    "Х": "X",
    "У": "Y",
    "Ү": "Y",
    # Greek
    "α": "a",
    "ϲ": "c",
    "ε": "e",
    "η": "n",
    "ι": "i",
    "ϳ": "j",
    "κ": "k",
    "ν": "v",
    "ο": "o",
    "ρ": "p",
    "υ": "u",
    "χ": "x",
    "γ": "y",
    "ω": "w",
    "Α": "A",
    "Β": "B",
    "Ε": "E",
    "Ζ": "Z",
    "Η": "H",
    "Ι": "I",
    "Κ": "K",
    "Μ": "M",
    "Ν": "N",
    "Ο": "O",
    "Ρ": "P",
    "Τ": "T",
    "Υ": "Y",
    "Χ": "X",
    "Ϲ": "C",
    "Ϳ": "J",
    # Armenian
    "օ": "o",
    "ս": "u",
    "հ": "h",
    "ո": "n",
    "ց": "g",
    "ք": "f",
    "Ս": "U",
    "Օ": "O",
    # Latin letters that are not ASCII but pass for it
    "ı": "i",
    "ȷ": "j",
    "ɑ": "a",
    "ɡ": "g",
    "ɩ": "i",
    "ʏ": "y",
    "ᴀ": "A",
    "ʙ": "B",
    "ᴄ": "C",
    "ᴅ": "D",
    "ᴇ": "E",
    "ɢ": "G",
    "ʜ": "H",
    "ɪ": "I",
    "ᴊ": "J",
    "ᴋ": "K",
    "ʟ": "L",
    "ᴍ": "M",
    "ɴ": "N",
    "ᴏ": "O",
    "ᴘ": "P",
    "ʀ": "R",
    "ᴛ": "T",
    "ᴜ": "U",
    "ᴠ": "V",
    "ᴡ": "W",
    "ᴢ": "Z",
}
_FOLD = str.maketrans(_LOOKALIKES)
_LOOKALIKE_RE = re.compile("[" + "".join(_LOOKALIKES) + "]")
# A letter of these scripts that has no Latin look-alike means the message is really written in that script:
# then only words that mix in Latin letters are folded, and "сор"/"рау" in a Russian message stay Russian.
_OTHER_SCRIPT_RE = re.compile("[\u0370-\u03ff\u0400-\u052f\u0531-\u0587\u1f00-\u1fff]")
# A word: letters with their combining marks, so that a mark composing onto a folded letter (Cyrillic А + U+0301
# -> Á) cannot move a word boundary between two passes.
_LETTER_RUN = re.compile(
    "(?:[^\\W\\d_]|[\u0300-\u036f\u0483-\u0489\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f])+"
)
_LATIN = re.compile("[A-Za-z]")


def _fold_word(m: re.Match) -> str:
    word = m.group()
    return word.translate(_FOLD) if _LATIN.search(word) else word


def _fold_lookalikes(text: str) -> str:
    native = any(ch not in _LOOKALIKES for ch in _OTHER_SCRIPT_RE.findall(text))
    folded = _LETTER_RUN.sub(_fold_word, text) if native else text.translate(_FOLD)
    # A folded letter can now compose with a following combining mark (Cyrillic е + U+0301 -> é): renormalise
    # so that clean() stays idempotent.
    return unicodedata.normalize("NFKC", folded)


def clean(text: str) -> str:
    """Unicode-clean one message for redaction, scoring and storage; keeps case, digits and punctuation.

    NFKC; invisible characters (zero-width, bidi controls, variation selectors, soft hyphen...) removed;
    control characters become spaces; look-alike Cyrillic/Greek/Armenian letters folded to Latin; enclosed
    letters unwrapped; whitespace runs collapsed to one space; ends stripped. Idempotent: clean(clean(t)) == clean(t).
    """
    if text.isascii():  # nothing to fold: the common case, kept cheap
        return _SPACES.sub(" ", text).strip()
    text = _INVISIBLE.sub("", text)
    if _ENCLOSED_RE.search(text):
        text = text.translate(_ENCLOSED)
    text = unicodedata.normalize("NFKC", text)
    if _LOOKALIKE_RE.search(text):
        text = _fold_lookalikes(text)
    return _SPACES.sub(" ", text).strip()


# --- deobfuscate -----------------------------------------------------------------------------------------

# Placeholders written by finesieve.data.redact: an upper-case tag in angle brackets. Kept verbatim.
_PLACEHOLDER = re.compile(r"(<[A-Z][A-Z_]*>)")

_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i"})
_LEET_DIGITS = frozenset("013457")

# A token with a leet run between two letters (ph0ne, wh@tsapp, m0n3y). Only such tokens are touched, so pure
# numbers (555), prices ($50), model names (ps5, mp3, b4) and times (5pm) are left alone.
_LEET_TOKEN = re.compile(r"(?<!\S)\S*[^\W\d_][013457@$!]+[^\W\d_]\S*")
_LEET_INNER = re.compile(r"(?<=[^\W\d_])[013457@$!]+(?=[^\W\d_])")
_LEET_INNER_NO_AT = re.compile(r"(?<=[^\W\d_])[013457$!]+(?=[^\W\d_])")
# Once a token is known to be leet-speak, a leet digit at either end that touches a letter is leet too (h3ll0).
_LEET_EDGE = re.compile(r"(?<![^\W_])[013457$]+(?=[^\W\d_])|(?<=[^\W\d_])[013457]+(?![^\W_])")
_EMAILISH = re.compile(r"[\w.+-]@[\w-]+\.[^\W\d_]{2,}")

# Three or more single characters separated by one consistent separator: p h o n e, w.h.a.t.s, c-a-s-h.
# Digits and @/$ are allowed in the run (p h 0 n e) and decided on in _join_spaced.
_SPACED = re.compile(r"(?<![^\W_])[^\W_@$](?:(?: ?[.\-_*] ?| )[^\W_]|(?: ?[.\-_*] ?| )[@$]){2,}(?![^\W_])")
_SPACED_SEP = re.compile(r" ?[.\-_*] ?| ")

# "$cam", "$ex": a dollar sign standing for s at the start of a word (never before a digit: "$50" is a price).
_DOLLAR_S = re.compile(r"(?<![\w$])\$(?=[^\W\d_]{2,}\b)")

_REPEATS = re.compile(r"([^\W\d_])\1{3,}")


def _joinable(chars: str) -> bool:
    """Mostly letters, of which at least three; any digit a leet digit, so "a 5 b" or "5 5 5 1 2 3" (a spaced
    phone number) are not joined."""
    letters = sum(ch.isalpha() for ch in chars)
    if letters < 3 or len(chars) - letters >= letters:
        return False
    return not any(ch.isdigit() and ch not in _LEET_DIGITS for ch in chars)


def _join_spaced(m: re.Match) -> str:
    run = m.group()
    seps = _SPACED_SEP.findall(run)
    chars = _SPACED_SEP.sub("", run)
    if len(set(seps)) == 1:
        return chars.translate(_LEET) if _joinable(chars) else run
    # Mixed separators ("i h.a.t.e", "p.s. i"): each stretch spelled with one separator is joined on its own when
    # it is a spaced-out word, so the space in "i h.a.t.e" stays and "h.a.t.e" becomes "hate".
    joined = [False] * len(seps)
    start = 0
    for end in range(1, len(seps) + 1):
        if end == len(seps) or seps[end] != seps[start]:
            if _joinable(chars[start : end + 1]):
                joined[start:end] = [True] * (end - start)
            start = end
    out = [chars[0]]
    for k, sep in enumerate(seps):
        out.append(chars[k + 1] if joined[k] else sep + chars[k + 1])
    return _fold_joined(out, joined)


def _fold_joined(out: list[str], joined: list[bool]) -> str:
    """`out` (the first char, then each separator-or-nothing + char) with leet folded in joined stretches only, so a
    lone "4" between words stays a number."""
    pieces = []
    for k, piece in enumerate(out):
        inside = (k > 0 and joined[k - 1]) or (k < len(joined) and joined[k])
        pieces.append(piece[:-1] + piece[-1].translate(_LEET) if inside else piece)
    return "".join(pieces)


def _unleet(m: re.Match) -> str:
    token = m.group()
    inner = _LEET_INNER_NO_AT if _EMAILISH.search(token) else _LEET_INNER  # keep an unredacted e-mail's @
    token = inner.sub(lambda r: r.group().translate(_LEET), token)
    return _LEET_EDGE.sub(lambda r: r.group().translate(_LEET), token)


def _deobfuscate_plain(text: str) -> str:
    text = text.casefold()
    text = _SPACED.sub(_join_spaced, text)  # before leet, so "p h 0 n e" joins and then folds
    if _LEET_INNER.search(text):  # cheap gate: most messages have no leet at all
        text = _LEET_TOKEN.sub(_unleet, text)
    if "$" in text:
        text = _DOLLAR_S.sub("s", text)
    return _REPEATS.sub(r"\1\1", text)


def deobfuscate(text: str) -> str:
    """Fold obfuscations for scoring features (lossy; never stored): casefold, leet, spaced letters, long runs.

    `<PHONE>`-style placeholders are kept verbatim. Expects `clean()`-ed text.
    """
    if "<" not in text:
        return _deobfuscate_plain(text)
    parts = _PLACEHOLDER.split(text)  # odd indices are the placeholders themselves
    return "".join(part if i % 2 else _deobfuscate_plain(part) for i, part in enumerate(parts))


def normalize_for_scoring(text: str) -> str:
    """The text a scorer sees: `deobfuscate(clean(text))`."""
    return deobfuscate(clean(text))
