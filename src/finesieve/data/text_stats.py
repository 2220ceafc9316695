"""Statistics of a set of texts, as drift monitoring compares them: word tokens and n-grams, the out-of-vocabulary
rate, the share of texts carrying each redaction placeholder, the length histogram and the mix of scripts.

    from finesieve.data.text_stats import tokens, oov_rate, entity_shares
    tokens("Call <PHONE> NOW")                 # ['call', '<PHONE>', 'now']
    entity_shares(texts)["PHONE"]              # share of texts holding <PHONE>

One home for these, so the reference statistics a run saves (`manifest.input_reference`) and a production window
(`monitor.inputs`) are counted the same way. Texts are taken as the scorer saw them: cleaned and redacted.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

from finesieve.data.redact import ENTITY_TYPES

LENGTH_BINS = (0, 20, 40, 60, 80, 100, 120, 140, 160, 200, 280, 400, 700, 1000, 2000, 5000, 20000)
SCRIPTS = ("latin", "cyrillic", "arabic", "cjk", "other")


# Word tokens: a placeholder as written, or a run of letters and digits (inner apostrophes kept: "don't").
PLACEHOLDER = re.compile("<(?:" + "|".join(ENTITY_TYPES) + ")>")
_TOKEN = re.compile(PLACEHOLDER.pattern + r"|[^\W_]+(?:'[^\W_]+)*")
# Unicode blocks of the scripts told apart, as (first, last) code points; a letter elsewhere is "other".
_SCRIPT_RANGES = (
    ("latin", ((0x41, 0x24F), (0x1E00, 0x1EFF), (0x2C60, 0x2C7F), (0xA720, 0xA7FF))),
    ("cyrillic", ((0x400, 0x52F), (0x1C80, 0x1C8F), (0x2DE0, 0x2DFF), (0xA640, 0xA69F))),
    ("arabic", ((0x600, 0x6FF), (0x750, 0x77F), (0x8A0, 0x8FF), (0xFB50, 0xFDFF), (0xFE70, 0xFEFF))),
    ("cjk", ((0x2E80, 0x2FDF), (0x3040, 0x30FF), (0x3100, 0x31FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF))),
    ("cjk", ((0xAC00, 0xD7AF), (0x1100, 0x11FF), (0xF900, 0xFAFF), (0x20000, 0x2FA1F), (0xFF66, 0xFF9F))),
)


def tokens(text: str) -> list[str]:
    """Word tokens, lowercased; placeholders (<PHONE>) kept as written: 'Call <PHONE> NOW' -> call, <PHONE>, now."""
    return [t if t.startswith("<") else t.lower() for t in _TOKEN.findall(text)]


def words(toks: Iterable[str]) -> list[str]:
    """The tokens that are words: neither a placeholder nor a plain number (those are no vocabulary)."""
    return [t for t in toks if not t.startswith("<") and not t.isdigit()]


def ngrams(toks: Sequence[str]) -> set[str]:
    """The word uni- and bigrams of one text's tokens, bigrams joined by a space."""
    return set(toks) | {f"{a} {b}" for a, b in zip(toks, toks[1:])}


def script_of(char: str) -> str:
    code = ord(char)
    for script, ranges in _SCRIPT_RANGES:
        if any(first <= code <= last for first, last in ranges):
            return script
    return "other"


def script_counts(texts: Iterable[str]) -> dict[str, int]:
    """Letters per script over `texts` (str.isalpha letters; digits, punctuation and emoji are not counted)."""
    counts = Counter({s: 0 for s in SCRIPTS})
    for text in texts:
        if text.isascii():  # most traffic: one cheap pass
            counts["latin"] += sum(c.isalpha() for c in text)
        else:
            counts.update(script_of(c) for c in text if c.isalpha())
    return dict(counts)


def length_histogram(texts: Iterable[str]) -> np.ndarray:
    """Texts per `LENGTH_BINS` bin of their length in characters (longer texts count in the last bin)."""
    lengths = np.fromiter((len(t) for t in texts), dtype=float)
    return np.histogram(np.clip(lengths, LENGTH_BINS[0], LENGTH_BINS[-1]), bins=np.asarray(LENGTH_BINS, float))[0]


def entity_shares(texts: Sequence[str]) -> dict[str, float]:
    """Per entity type: the share of `texts` holding its placeholder at least once."""
    held = Counter(e for t in texts for e in {m[1:-1] for m in PLACEHOLDER.findall(t)})
    return {e: held[e] / len(texts) if texts else 0.0 for e in ENTITY_TYPES}


def oov_rate(texts: Iterable[str], vocabulary: Iterable[str]) -> float | None:
    """Share of the word tokens of `texts` outside `vocabulary`; None when the texts hold no word."""
    known = set(vocabulary)
    n = outside = 0
    for text in texts:
        ws = words(tokens(text))
        n += len(ws)
        outside += sum(w not in known for w in ws)
    return outside / n if n else None


def ngram_document_counts(texts: Iterable[str]) -> Counter:
    """n-gram -> number of texts holding it at least once."""
    counts: Counter = Counter()
    for text in texts:
        counts.update(ngrams(tokens(text)))
    return counts
