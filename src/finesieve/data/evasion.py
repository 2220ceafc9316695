"""The spelling tricks people use to slip a message past a filter, applied on purpose: to test a scorer against
them (an evasion test set built from a held-out split) and to train on them (augmentation).

    config = EvasionConfig(seed=0)                          # every kind, about half the words of each message
    evaded, kinds = evade_texts(["I hate all of them"], config)   # one kind drawn per message
    evade("you are a disgrace", "leet", random.Random(0))   # e.g. 'you 4r3 a d1sgr4c3'

Each kind changes words as a person would, keeping the message readable to another person:

    swap        two neighbouring inner letters swapped        hate -> htae
    drop        one inner letter left out                     idiot -> idot
    double      one letter doubled                            stupid -> stuupid
    join        the space after a word left out               go away -> goaway
    split       a space put inside a word                     vermin -> ver min
    leet        letters written as digits or signs            scum -> 5cum, trash -> tr4$h
    lookalike   Latin letters replaced by Cyrillic look-alikes  kill -> kіll (Cyrillic і)
    separator   a separator inside a word, or between all its letters  f.r.e.a.k, fre*ak

Only words of three or more letters are changed; redaction placeholders (<PHONE>), @mentions, #hashtags and URLs
never are, so a message's structure survives. `finesieve.data.normalize` undoes some of these (look-alikes, leet
inside words, letters spaced out with one separator); the others (swaps, dropped and doubled letters, joined and
split words, partial separators) only a model that has seen them can read: that is what augmentation is for.
Everything is seeded: the same texts and config give the same output on every machine.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["EVASION_KINDS", "EvasionConfig", "augment_with_evasion", "evade", "evade_texts"]

EvasionKind = Literal["swap", "drop", "double", "join", "split", "leet", "lookalike", "separator"]
EVASION_KINDS: tuple[EvasionKind, ...] = ("swap", "drop", "double", "join", "split", "leet", "lookalike", "separator")

# Leet spellings seen in evasive messages; a letter with several gets one drawn at random.
_LEET = {"a": "4@", "e": "3", "i": "1!", "o": "0", "s": "5$", "t": "7", "l": "1", "g": "9"}
# Cyrillic letters that look like Latin ones (the same set `normalize.clean` folds back).
_LOOKALIKE = {"a": "а", "c": "с", "e": "е", "i": "і", "o": "о", "p": "р", "x": "х", "y": "у", "s": "ѕ", "j": "ј"}
_SEPARATORS = ".-*_"

# A whitespace-separated token; words inside it are runs of letters (apostrophes allowed: "don't").
_TOKEN = re.compile(r"\S+")
_WORD = re.compile(r"[^\W\d_]{3,}(?:'[^\W\d_]+)?")
_PROTECTED = re.compile(r"^(?:<[A-Z][A-Z_]*>|[@#]\w+|https?://\S+|www\.\S+)")


class EvasionConfig(BaseModel):
    """How an evasion set is made: which kinds, how many words of each message, the seed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kinds: tuple[EvasionKind, ...] = Field(
        EVASION_KINDS, min_length=1, description="Kinds drawn from, one per message."
    )
    rate: float = Field(0.5, gt=0, le=1, description="Share of each message's eligible words changed (at least one).")
    seed: int = Field(0, ge=0, description="Seed: the same texts and config give the same evasions.")


def _inner_positions(word: str) -> range:
    return range(1, len(word) - 1)


def _change_word(word: str, kind: EvasionKind, rng: random.Random) -> str:
    """`word` (3+ letters) as `kind` changes it; 'join' is handled on the message, not here."""
    if kind == "swap":
        if len(word) < 4:
            return word[1] + word[0] + word[2:]
        i = rng.randrange(1, len(word) - 2)
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if kind == "drop":
        i = rng.choice(_inner_positions(word))
        return word[:i] + word[i + 1 :]
    if kind == "double":
        i = rng.randrange(len(word))
        return word[: i + 1] + word[i] + word[i + 1 :]
    if kind == "split":
        i = rng.randrange(1, len(word))
        return word[:i] + " " + word[i:]
    if kind == "leet":
        spots = [i for i, ch in enumerate(word) if ch.lower() in _LEET]
        if not spots:
            return _change_word(word, "double", rng)
        chosen = {i for i in spots if rng.random() < 0.6} or {rng.choice(spots)}
        return "".join(rng.choice(_LEET[ch.lower()]) if i in chosen else ch for i, ch in enumerate(word))
    if kind == "lookalike":
        spots = [i for i, ch in enumerate(word) if ch in _LOOKALIKE]
        if not spots:
            return _change_word(word, "double", rng)
        chosen = {i for i in spots if rng.random() < 0.5} or {rng.choice(spots)}
        return "".join(_LOOKALIKE[ch] if i in chosen else ch for i, ch in enumerate(word))
    if kind == "separator":
        sep = rng.choice(_SEPARATORS)
        if rng.random() < 0.5:  # every letter apart: f.r.e.a.k
            return sep.join(word)
        i = rng.choice(_inner_positions(word))
        return word[:i] + sep + word[i:]
    raise ValueError(f"unknown evasion kind {kind!r}: use one of {', '.join(EVASION_KINDS)}")


def evade(text: str, kind: EvasionKind, rng: random.Random, rate: float = 0.5) -> str:
    """`text` with about `rate` of its eligible words (at least one, when it has any) changed by `kind`.

    Messages with no word of three or more letters outside placeholders, mentions and URLs come back unchanged."""
    tokens = [(m.start(), m.end()) for m in _TOKEN.finditer(text)]
    # (token index, word span inside the text) of every word that may change
    words = [
        (t, m.start() + start, m.end() + start)
        for t, (start, end) in enumerate(tokens)
        if not _PROTECTED.match(text[start:end])
        for m in [_WORD.search(text[start:end])]
        if m is not None
    ]
    if not words:
        return text
    chosen = [w for w in words if rng.random() < rate] or [rng.choice(words)]
    out, last = [], 0
    for t, start, end in chosen:  # in text order: `words` is, and the filter keeps it
        out.append(text[last:start])
        word = text[start:end]
        if kind == "join":
            # The word kept, the whitespace after its token removed (when another token follows).
            tok_end = tokens[t][1]
            if t + 1 < len(tokens):
                out.append(text[start:tok_end])
                last = tokens[t + 1][0]
                continue
            out.append(word)
        else:
            out.append(_change_word(word, kind, rng))
        last = end
    out.append(text[last:])
    return "".join(out)


def evade_texts(texts: Sequence[str], config: EvasionConfig | None = None) -> tuple[list[str], list[str]]:
    """(evaded texts, the kind used for each): one kind drawn per message, seeded by `config.seed` and the message's
    position, so a message's evasion does not depend on the others."""
    config = config or EvasionConfig()
    evaded, kinds = [], []
    for i, text in enumerate(texts):
        rng = random.Random(config.seed * 1_000_003 + i)
        kind = config.kinds[rng.randrange(len(config.kinds))]
        evaded.append(evade(text, kind, rng, config.rate))
        kinds.append(kind)
    return evaded, kinds


def augment_with_evasion(texts: Sequence[str], share: float, seed: int = 0) -> tuple[list[int], list[str]]:
    """Training augmentation: (row indices, evaded copies) for a seeded `share` of `texts`, each copy evaded by one
    kind drawn at random. The caller adds the copies with their rows' labels; the originals stay."""
    if not 0 <= share <= 1:
        raise ValueError(f"augment share {share} is outside [0, 1]")
    rng = random.Random(seed)
    rows = sorted(rng.sample(range(len(texts)), round(share * len(texts))))
    evaded, _ = evade_texts([texts[i] for i in rows], EvasionConfig(seed=seed + 1))
    keep = [(i, e) for i, e in zip(rows, evaded) if e != texts[i]]  # a message with no eligible word adds nothing
    return [i for i, _ in keep], [e for _, e in keep]
