"""Personal-data redaction: replace contact and payment details in a message with typed placeholders.

    EMAIL   <EMAIL>    john.doe@gmail.com, john at gmail dot com, john(at)gmail(dot)com, john @ gmail . com
    URL     <URL>      https://..., www.x.y, bit.ly/abc, example.com, shop.co.uk/x, example dot com
    HANDLE  <HANDLE>   @username, and the name after a platform: "insta: name", "my snap is name", "cashapp $name"
    CARD    <CARD>     13-19 digits, optionally grouped by spaces or dashes, passing the Luhn check
    ADDRESS <ADDRESS>  house number + street name + suffix (St, Ave, Rd...), optional unit and city/state/ZIP or
                       UK postcode tail; P.O. boxes; UK postcodes on their own
    PHONE   <PHONE>    at least 7 digits written as digits, spaced digits, digit words ("five five five", "oh"
                       for zero) or a mix, with the usual separators; so prices, times, years and dates stay

Input is expected to be `finesieve.data.normalize.clean()`-ed first: the patterns are written for Latin
letters and ASCII digits, and a zero-width space or a Cyrillic "о" inside an address would otherwise hide it.
Spans are given in the coordinates of the text passed to `redact`.

Detectors run in a fixed priority order over the same text, and each later one sees the earlier finds masked
out, so an e-mail is never half-taken by the URL or @handle patterns and a card never becomes a phone:
    URL with scheme or www > EMAIL > HANDLE after a platform name > URL bare or "dot" > @HANDLE > CARD > ADDRESS > PHONE
All detectors run whatever is configured, and only the configured entities are replaced: with EMAIL off, an
e-mail stays whole rather than having its domain taken by the URL pattern.

Redaction works one message at a time (the service calls it per request); `data.preprocess.prepare` is the one
loop over many (clean, then redact), for datasets and for scoring.

Usage:
    from finesieve.data.redact import Redactor, RedactionConfig
    r = Redactor(RedactionConfig(fields={"title": ("URL",)}))
    r.redact("text me on 555 123 4567").text           # 'text me on <PHONE>'
    r.redact("see shop.com, 555 123 4567", field="title").text   # 'see <URL>, 555 123 4567'
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["ENTITY_TYPES", "EntityType", "RedactionConfig", "RedactionResult", "Redactor", "detect"]

EntityType = Literal["EMAIL", "PHONE", "URL", "HANDLE", "ADDRESS", "CARD"]
ENTITY_TYPES: tuple[EntityType, ...] = get_args(EntityType)

Span = tuple[int, int]


# --- configuration ---------------------------------------------------------------------------------------


def _known_entities(value: object, where: str) -> object:
    """Upper-case entity names and refuse unknown ones, naming them and listing the valid ones."""
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, (list, tuple, set, frozenset)):
        return value  # not a sequence: pydantic reports the type error
    names = [v.upper() if isinstance(v, str) else v for v in value]
    bad = [v for v in names if v not in ENTITY_TYPES]
    if bad:
        raise ValueError(
            f"unknown entity name(s) {', '.join(repr(b) for b in bad)} in {where}: valid entities are "
            f"{', '.join(ENTITY_TYPES)}; fix the spelling or remove them"
        )
    return tuple(dict.fromkeys(names))  # de-duplicated, order kept


class RedactionConfig(BaseModel):
    """Which personal data to redact, overall and per column. Entity names are case-insensitive."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description="Redact at all; False passes text through unchanged.")
    entities: tuple[EntityType, ...] = Field(
        ENTITY_TYPES, description="Entities redacted in every field not listed in `fields`."
    )
    fields: dict[str, tuple[EntityType, ...]] = Field(
        default_factory=dict,
        description="Per-field overrides: column name -> the entities redacted in that column (may be empty).",
    )

    @field_validator("entities", mode="before")
    @classmethod
    def _check_entities(cls, value: object) -> object:
        return _known_entities(value, "entities")

    @field_validator("fields", mode="before")
    @classmethod
    def _check_fields(cls, value: object) -> object:
        if not isinstance(value, dict):
            return value
        return {name: _known_entities(ents, f"fields[{name!r}]") for name, ents in value.items()}

    def entities_for(self, field: str) -> tuple[EntityType, ...]:
        """The entities redacted in `field`: its override, else `entities`; none when redaction is off."""
        if not self.enabled:
            return ()
        return self.fields.get(field, self.entities)


@dataclass(frozen=True)
class RedactionResult:
    """One redacted message: the new text, how many of each entity, and where each was in the input text."""

    text: str
    counts: dict[str, int]  # entity -> occurrences replaced; entities not found are absent
    spans: tuple[tuple[int, int, str], ...]  # (start, end, entity) in the input text, sorted by start


# --- shared vocabulary -----------------------------------------------------------------------------------

# Everyday words that follow "my insta is", "at", "dot" in ordinary sentences: a handle, e-mail local part or
# domain equal to one of these is read as prose ("my insta is private", "find us at ... ", "the dot com era").
_COMMON_WORDS = frozenset(
    """a about above acc account after again all also always am an and any anyone anything app are around as ask
    at available away back banned be because been before being below best better between blocked both broken busy
    but buy by call can cash channel chat check close closed come cool could day days dead deal deleted did dm dms
    do does done down each either else email even ever every fake fine first for free from full get give go going
    gone good got great group had hacked handle has have he her here hers him his home how i id if in instead into
    is it its just last later let like link live ll locked long look lot me message messages mine more most msg
    much must my name need never new next nice no none not now number of off ok okay old on once one only open or
    other our out over page pay phone photos pic pics please pls post posts price private public read ready really
    reel reels right same say see sell send she should slow so some soon sorry status still story stuff such sure
    suspended take text than thanks that the their them then there these they thing this those though through
    time to today tomorrow tonight too up us use user username very video videos wait want was way we well were
    what when where which while who why will with work would yes yet you your yours""".split()
)
_LETTER = re.compile(r"[A-Za-z]")

# Top-level domains. Strong ones are taken after a bare "name." ; weak ones are also English words ("it", "me",
# "so", "no"), so a bare domain ending in one needs a path (t.me/x, wa.me/123) or a scheme/www/e-mail around it.
_TLD_STRONG = (
    "com net org edu gov mil int io co uk ca au nz ie de fr es nl eu ru cn jp br mx za ch se dk fi pl pt gr cz hu "
    "ro tr ua kr hk sg tw vn ph pk ng ke ar cl info biz ly app dev shop store online site xyz ai tv club top blog "
    "link page pro mobi tech news live cc gg gl gd ws sh tk ml ga cf gq icu vip cloud website"
).split()
_TLD_WEAK = "me at be it is in to so do am as by go la ma no us my id".split()
_TLDS = sorted(set(_TLD_STRONG) | set(_TLD_WEAK), key=lambda t: (-len(t), t))
_TLD_ALL = "(?:" + "|".join(_TLDS) + ")"
_TLD_STRONG_RE = "(?:" + "|".join(sorted(_TLD_STRONG, key=lambda t: (-len(t), t))) + ")"

# Mail providers: "name at gmail" needs no ".com", and a common word before "at gmail dot com" is still a mailbox.
_PROVIDERS_NO_TLD = (
    "gmail googlemail yahoo ymail hotmail outlook icloud aol protonmail gmx yandex btinternet rediffmail comcast"
).split()
_PROVIDERS = frozenset(_PROVIDERS_NO_TLD) | set("live msn me mac mail proton zoho qq 163 sky verizon att".split())
_PROVIDER_NO_TLD_RE = "(?:" + "|".join(_PROVIDERS_NO_TLD) + ")"


# --- URL -------------------------------------------------------------------------------------------------

_URL_END = r"[^\s<>\"\x00.,;:!?)\]}'…]"  # a URL does not end on sentence punctuation
_URL_SCHEME = re.compile(rf"(?<![\w@])(?:(?:h[tx]{{2}}ps?|ftp)://|www\d{{0,3}}\.)(?:[^\s<>\"\x00]*{_URL_END})?", re.I)
_LABEL = r"[a-z0-9](?:[a-z0-9\-]*[a-z0-9])?"
_URL_BARE = re.compile(
    rf"(?<![\w@.\-])(?:{_LABEL}\.)+(?P<tld>[a-z]{{2,12}})(?![\w\-])(?!\.[a-z0-9])"
    rf"(?P<path>/(?:[^\s<>\"\x00]*{_URL_END})?)?",
    re.I,
)
_DOT_WORD = r"(?:\s*[(\[{]\s*dot\s*[)\]}]\s*|\s+dot\s+)"
_URL_DOT_WORD = re.compile(
    rf"(?<![\w@.\-])(?P<first>{_LABEL})(?:(?:{_DOT_WORD}|\.){_LABEL})*(?:{_DOT_WORD}|\.){_TLD_STRONG_RE}(?![\w\-])"
    rf"(?:(?:\s+slash\s+|/)(?:[^\s<>\"\x00]*{_URL_END})?)?",
    re.I,
)


def _find_url_scheme(text: str) -> Iterator[Span]:
    for m in _URL_SCHEME.finditer(text):
        yield m.span()


def _find_url_bare(text: str) -> Iterator[Span]:
    for m in _URL_BARE.finditer(text):
        tld = m["tld"].lower()
        if tld in _TLD_STRONG or (tld in _TLD_WEAK and m["path"]):
            yield m.span()


def _find_url_dot_word(text: str) -> Iterator[Span]:
    for m in _URL_DOT_WORD.finditer(text):
        if m["first"].lower() not in _COMMON_WORDS:  # "the dot com era"
            yield m.span()


# --- EMAIL -----------------------------------------------------------------------------------------------

_LOCAL_PART = rf"[\w%+\-]+(?:(?:\.|{_DOT_WORD})[\w%+\-]+)*"
_AT_STRONG = r"(?:\s?@\s?|\s*[(\[{]\s*at\s*[)\]}]\s*)"  # @, (at), [at], {at}: unambiguous
_EMAIL_STRONG = re.compile(
    rf"(?<![\w.%+\-])(?P<local>{_LOCAL_PART}){_AT_STRONG}"
    rf"(?:{_LABEL}(?:(?:\s?\.\s?|{_DOT_WORD}){_LABEL})*(?:\s?\.\s?|{_DOT_WORD}){_TLD_ALL}(?![\w\-])"
    rf"|{_PROVIDER_NO_TLD_RE}\b(?!\s?\.\s?\w))",
    re.I,
)
# " at " as a word is also plain English ("meet at home", "apply at jobs.biz"), so: the domain must end in a
# TLD with a written dot ("gmail.com", "gmail dot com") or be a known provider; the local part must not be an
# everyday word; and unless the domain is a known provider, the local part must look like a mailbox name
# (j.smith, sam_r, dan99) or an e-mail word must come just before ("email zoe at zoedesigns dot com").
_EMAIL_AT_WORD = re.compile(
    rf"(?<![\w.%+\-])(?P<local>{_LOCAL_PART})\s+at\s+(?P<domain>{_LABEL})"
    rf"(?P<tld>(?:(?:\.|{_DOT_WORD}){_LABEL})*(?:\.|{_DOT_WORD}){_TLD_ALL})?(?![\w\-/]|\.\w)",
    re.I,
)
_MAILBOX_LIKE = re.compile(r"[\d._%+\-]|\sdot\s|[(\[{]dot[)\]}]", re.I)
_EMAIL_CUE = re.compile(r"\b(?:e-?\s?mail|mail|gmail|address|contact|write)\b", re.I)


# "m a r k 7 7 at gmail dot com": the local part spelled out with spaces, of which the pattern took the last char.
_SPACED_LOCAL = re.compile(r"(?:(?<![\w.])[A-Za-z0-9] ){2,}\Z")


def _with_spaced_local(text: str, m: re.Match) -> Span:
    start = m.start()
    if len(m["local"]) == 1:
        spaced = _SPACED_LOCAL.search(text, max(0, start - 64), start)
        if spaced:
            start = spaced.start()
    return start, m.end()


def _find_email_strong(text: str) -> Iterator[Span]:
    for m in _EMAIL_STRONG.finditer(text):
        yield _with_spaced_local(text, m)


def _find_email_at_word(text: str) -> Iterator[Span]:
    pos = 0
    while (m := _EMAIL_AT_WORD.search(text, pos)) is not None:
        local, domain = m["local"].lower(), m["domain"].lower()
        if domain in _PROVIDERS_NO_TLD or (m["tld"] and domain in _PROVIDERS):
            ok = local not in _COMMON_WORDS or bool(m["tld"])  # "look at gmail" is not an address
        else:
            ok = (
                bool(m["tld"])
                and local not in _COMMON_WORDS
                and (
                    _MAILBOX_LIKE.search(m["local"]) is not None
                    or _EMAIL_CUE.search(text, max(0, m.start() - 40), m.start()) is not None
                )
            )
        if not ok:
            pos = m.start() + 1  # "find us at shop dot com": retry further on, the domain may still be a URL
            continue
        yield _with_spaced_local(text, m)
        pos = m.end()


# --- HANDLE ----------------------------------------------------------------------------------------------

# Platforms whose name is rarely a plain word; the weak ones (wa, sc, line, signal...) need an explicit marker:
# "sc: name", "line id name", "signal username is name".
_PLATFORM_STRONG = (
    r"insta(?:gram)?|ig|snap(?:chat)?|telegram|whats\s?app|kik|twitter|tik\s?tok|facebook|fb|discord|wechat|"
    r"skype|venmo|cash\s?app|paypal|zelle|twitch|youtube|onlyfans|reddit"
)
_PLATFORM_WEAK = r"wa|sc|tg|tt|yt|signal|line|viber|threads"
_MARKER_NEEDED = frozenset({"line"})  # "stat line: Bud", "punch line: ..." — only "line id: name" counts
_PLATFORM_WEAK_SET = frozenset(_PLATFORM_WEAK.split("|"))
_HANDLE_LABELLED = re.compile(
    rf"\b(?P<platform>{_PLATFORM_STRONG}|{_PLATFORM_WEAK})\b"
    r"(?:\s+(?:me|us))?"
    r"(?P<marker>\s+(?:id|user\s?name|handle|name|acc(?:ount)?|tag))?"
    r"(?P<sep>\s*[:=]\s*|\s*[-\u2013\u2014>\u2192]+\s*|\s+is\s*:?\s*|\s+)"
    r"(?P<name>(?P<prefix>[@$]\s?)?[A-Za-z0-9_](?:[\w.\-]*[A-Za-z0-9_])?(?:#\d{4})?)"
    r"(?![\w/@]|\.\w)",
    re.I,
)
# "username: fastdeals" names a handle whatever platform came before (or none).
_HANDLE_MARKED = re.compile(
    r"\b(?:user\s?name|handle)\s*(?:[:=]|\bis\b:?)\s*"
    r"(?P<name>[@$]?[A-Za-z0-9_](?:[\w.\-]*[A-Za-z0-9_])?(?:#\d{4})?)(?![\w/@]|\.\w)",
    re.I,
)
_HANDLE_LIKE = re.compile(r"[\d_.\-#]")
# "wall..One", "pics.See": a sentence run together, not a handle
_RUN_TOGETHER = re.compile(r"\.\.|[a-z]\.[A-Z][a-z]")
# "my snap is jessx" names a handle; "Twitter is confusing" talks about the platform
_POSSESSIVE = re.compile(r"\b(?:my|his|her|their|our|your)\s+\Z", re.I)
_PLATFORM_WORD = re.compile(rf"(?:{_PLATFORM_STRONG}|{_PLATFORM_WEAK})\Z", re.I)

# @name, as on Twitter/Instagram/TikTok, also ".@name", "RT@name" and "@@name"; all-digit ids of 5+ digits
# (@100046729). Not "@ the store" (space), not "@5pm", "@ 10" or "msgs@150p" (times and prices), not after a
# slash (a URL path). A word glued before the @ is allowed: e-mails have been masked by the time this runs, so
# an "x@y" left over is a mention.
_HANDLE_AT = re.compile(
    r"(?<!/)@(?!\d+(?:[:.]\d+)?\s?(?:am|pm|p|ppm|pence|k|x|gb|mb|kg|g|ml|cm|mm|min|mins|hr|hrs)\b)"
    r"(?:(?=[\w.]*[A-Za-z])\w(?:[\w.]*\w)?|\d{5,}(?!\w))",
    re.I,
)
_SENTENCE_JOIN = re.compile(r"\.\.|\.(?=[A-Z][a-z])")  # "@kiosk.Valid 4-7/12": the handle ends at the dot


def _find_handle_labelled(text: str) -> Iterator[Span]:
    pos = 0
    while (m := _HANDLE_LABELLED.search(text, pos)) is not None:
        name = m["name"]
        bare = name.lstrip("@$ ").lower()
        platform = m["platform"].lower()
        sep = m["sep"].strip().lower()
        punctuated = sep not in ("", "is")  # "ig: name", "fb - name", "username is: name"
        handle_like = _HANDLE_LIKE.search(bare) is not None and not _RUN_TOGETHER.search(name)
        if m["prefix"] or punctuated:
            explicit = True
        elif sep == "is":  # "kik name is thot", "my snap is jessx"; not "Twitter is confusing"
            owned = _POSSESSIVE.search(text, max(0, m.start() - 8), m.start()) is not None
            explicit = bool(m["marker"]) or handle_like or owned
        else:  # bare space: "add my snap tommyk99", "telegram username cheapiphones_uk"
            explicit = handle_like
        ok = (
            explicit
            and _LETTER.search(bare) is not None
            and bare not in _COMMON_WORDS
            and not _PLATFORM_WORD.match(bare)
            and (platform not in _PLATFORM_WEAK_SET or bool(m["prefix"] or m["marker"] or punctuated))
            and (platform not in _MARKER_NEEDED or bool(m["marker"]))
        )
        if ok:
            yield m.start("name"), m.end("name")
            pos = m.end()
        else:
            pos = m.start() + 1


def _find_handle_marked(text: str) -> Iterator[Span]:
    for m in _HANDLE_MARKED.finditer(text):
        bare = m["name"].lstrip("@$").lower()
        if _LETTER.search(bare) and bare not in _COMMON_WORDS:
            yield m.span("name")


def _find_handle_at(text: str) -> Iterator[Span]:
    for m in _HANDLE_AT.finditer(text):
        cut = _SENTENCE_JOIN.search(m.group())
        yield m.start(), m.start() + cut.start() if cut else m.end()


# --- CARD ------------------------------------------------------------------------------------------------

_CARD = re.compile(r"(?<![\d+\-])\d(?:[ \-]?\d){12,}(?!\d)")


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _find_cards(text: str) -> Iterator[Span]:
    for m in _CARD.finditer(text):
        chunk = m.group()
        # Where a card may end: after any digit group. Longest first; the digits left after the card may only be
        # a short tail (expiry month, CVV typed right after it), never another long number.
        ends = [
            i + 1 for i, ch in enumerate(chunk) if ch.isdigit() and (i + 1 == len(chunk) or not chunk[i + 1].isdigit())
        ]
        total = sum(ch.isdigit() for ch in chunk)
        for end in reversed(ends):
            part = chunk[:end]
            digits = part.replace(" ", "").replace("-", "")
            if total - len(digits) > 4:
                break
            first_group = re.match(r"\d+", part).group()
            if (
                13 <= len(digits) <= 19
                and digits[0] in "23456"  # card networks (Visa 4, Mastercard 2/5, Amex/Diners/JCB 3, Discover 6)
                and (first_group == digits or len(first_group) == 4)  # grouped cards start with 4 digits; phones rarely
                and _luhn_ok(digits)
            ):
                yield m.start(), m.start() + end
                break


# --- ADDRESS ---------------------------------------------------------------------------------------------

_STREET_SUFFIX = (
    r"(?:street|st|avenue|ave|av|road|rd|boulevard|blvd|lane|ln|drive|dr|court|ct|way|place|pl|terrace|terr|ter|"
    r"parkway|pkwy|highway|hwy|circle|cir|square|sq|trail|trl|crescent|cres|close|grove|gardens|gdns|mews|row|"
    r"loop|pike|plaza|alley|aly|expressway|expy)"
)
# Words that follow a number in ordinary sentences ("5 minute drive", "2 lane road", "3 in a row", "1 TB hard
# drive", "room for 2 at my place"): none may be part of a street name.
_NOT_STREET_WORDS = (
    "a an the my your our his her their its this that these those at in on by for from to of with and or but if is "
    "are was be will can per each every more less most some any no not only just about around near past off out "
    "over under into onto min mins minute minutes hour hours hr hrs sec secs second seconds day days week weeks "
    "month months year years yr yrs mile miles mi km kms block blocks ft feet foot inch inches meter meters metre "
    "metres cm mm lb lbs kg kgs pound pounds dollar dollars buck bucks quid euro euros cent cents piece pieces pc "
    "pcs item items unit units time times people person persons guy guys kid kids bed beds bedroom bedrooms bath "
    "baths bathroom bathrooms car cars seat seats door doors story stories storey floor floors level levels star "
    "stars gb tb mb hard external flash usb ssd hdd way ways lane lanes am pm x "
    # text-speak ("2 ne way", "4 u")
    "ne go u ur r n da wen wid"
).split()
_DIRECTION = r"(?:north|south|east|west|[ns][ew]|[nsew])\.?"
_NAME_WORD = rf"(?!(?:{'|'.join(_NOT_STREET_WORDS)})\b)(?:[a-z][a-z'\u2019\-]+|\d{{1,3}}(?:st|nd|rd|th))"
_STREET_NAME = rf"(?:(?:st|saint|mt|ft|fort)\.?\s+)?{_NAME_WORD}(?:\s+{_NAME_WORD}){{0,2}}"
_UNIT = r"(?:apt|apartment|unit|suite|ste|flat|fl|floor|rm|room|#)\.?\s*#?\s*[a-z0-9\-]{1,6}(?![\w])"
_UK_POSTCODE = r"(?-i:[A-Z]{1,2}\d[A-Z\d]?\s?\d[ABD-HJLNP-UW-Z]{2})\b"  # inward letters never C I K M O V
_CITY = r"(?-i:[A-Z][a-z]+(?:\s[A-Z][a-z]+){0,2})"
_STATE_ZIP = r"(?-i:[A-Z]{2})\s+\d{5}(?:-\d{4})?\b"
_TAIL = rf"(?:,?\s+{_CITY},?\s+(?:{_STATE_ZIP}|{_UK_POSTCODE})|,?\s+(?:{_STATE_ZIP}|{_UK_POSTCODE}))?"
_STREET_ADDRESS = re.compile(
    rf"(?<![\w$£€#.,\-/:])(?:(?:apt|apartment|unit|suite|flat)\.?\s*#?\s*[a-z0-9\-]{{1,6}},?\s+)?"
    rf"\d{{1,6}}[a-z]?(?:\s?-\s?\d{{1,6}}[a-z]?)?\s+(?:{_DIRECTION}\s+)?{_STREET_NAME}\s+{_STREET_SUFFIX}\b\.?"
    rf"(?:\s+{_DIRECTION}(?!\w))?(?:,?\s*{_UNIT})?{_TAIL}",
    re.I,
)
_PO_BOX = re.compile(rf"\bp\.?\s?o\.?\s*box\s+\d{{1,6}}\b{_TAIL}", re.I)
_POSTCODE = re.compile(rf"(?<![\w\-]){_UK_POSTCODE}(?!-)")


def _finder(pattern: re.Pattern) -> Callable[[str], Iterator[Span]]:
    def find(text: str) -> Iterator[Span]:
        for m in pattern.finditer(text):
            yield m.span()

    return find


# --- PHONE -----------------------------------------------------------------------------------------------

_DIGIT_WORDS = {
    "zero": "0",
    "oh": "0",
    "o": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
}
_DIGIT_WORD = r"(?:zero|oh|o|one|two|three|four|five|six|seven|eight|nine)"
_DIGIT_WORD_RE = re.compile(rf"\b{_DIGIT_WORD}\b", re.I)
_DIGIT_WORD_LOWER = re.compile(rf"\b{_DIGIT_WORD}\b")  # for lower-cased text: twice as fast as re.I
# A digit group; O/o/l/I typed for 0/1 inside it ("555-l23-4567", "2O1") count as digits.
# A digit group. Digits glued to letters on the left are part of a code (tracking "1Z999AA10123456784", model
# numbers). The check on the character before is written after the first digit, so that the pattern starts
# with a character class and the regex engine can jump between candidates (8x faster on tweets).
_NUM_REST = r"(?:[\dOolI]*\d)?(?:[OolI](?![a-z]))?"  # O/o/l/I typed for 0/1 inside a number: "555-l23-4567"
_NUM_FIRST = rf"(?:\+\d|\d(?<![a-z\d]\d)){_NUM_REST}"
_NUM_GROUP = rf"(?:{_NUM_FIRST}|(?<![a-z])[OolI]\d{_NUM_REST})"
_WORD_UNIT = rf"\b(?:(?:double|triple)\s+)?{_DIGIT_WORD}\b|\b(?:double|triple)\s+\d(?!\d)"
_PHONE_UNIT = rf"(?:{_NUM_GROUP}|{_WORD_UNIT})"
_PHONE_SEP = r"(?:\s*[\-.\u2010-\u2015/]\s*|\s*\(\s*|\s*\)\s*[\-.]?\s*|\s*,\s*|\s+)"
# Runs of number units. Messages without any digit word take the digits-only pattern, which is much cheaper.
_PHONE_RUN = re.compile(rf"(?:{_NUM_FIRST}|{_WORD_UNIT})(?:{_PHONE_SEP}{_PHONE_UNIT})*", re.I)
_PHONE_RUN_DIGITS = re.compile(rf"{_NUM_FIRST}(?:{_PHONE_SEP}{_NUM_GROUP})*", re.I)
_PHONE_UNIT_RE = re.compile(_PHONE_UNIT, re.I)
_LOOKALIKE_DIGITS = str.maketrans({"O": "0", "o": "0", "l": "1", "I": "1", "+": None})


@dataclass(frozen=True)
class _Unit:
    start: int
    end: int
    digits: str
    word: bool  # written as a digit word ("five", "oh")


def _unit(m: re.Match, offset: int) -> _Unit:
    raw = m.group()
    lower = raw.lower()
    if lower[0].isalpha() and not (lower[0] in "oli" and len(lower) > 1 and lower[1].isdigit()):
        parts = lower.split()
        times = {"double": 2, "triple": 3}.get(parts[0], 1)
        digit = parts[-1] if parts[-1].isdigit() else _DIGIT_WORDS[parts[-1]]
        return _Unit(offset + m.start(), offset + m.end(), digit * times, True)
    return _Unit(offset + m.start(), offset + m.end(), raw.translate(_LOOKALIKE_DIGITS), False)


def _is_date(digits: str) -> bool:
    """YYYYMMDD with a plausible year, month and day."""
    if len(digits) != 8:
        return False
    year, month, day = int(digits[:4]), int(digits[4:6]), int(digits[6:])
    return 1950 <= year <= 2099 and 1 <= month <= 12 and 1 <= day <= 31


def _looks_like_number_not_phone(text: str, units: list[_Unit]) -> bool:
    """Dates, years and ranges, prices, IPs, decimals, thousands and counted lists written only in digits."""
    if any(u.word for u in units):
        return False  # spelled-out digits are deliberate
    groups = [u.digits for u in units]
    seps = [text[a.end : b.start].strip() for a, b in zip(units, units[1:])]
    start = units[0].start
    if start > 0 and text[start - 1] in "$£€¥#@":
        return True  # a price, an order number, an @id
    if text[start] == "+":
        return False
    if len(groups) == 1:
        return _is_date(groups[0])  # 20240117
    sizes = [len(g) for g in groups]
    if len(groups) == 3 and len(set(seps)) == 1 and seps[0] in ("/", ".", "-"):
        if (sizes[0] <= 2 and sizes[1] <= 2 and sizes[2] in (2, 4)) or (
            sizes[0] == 4 and sizes[1] <= 2 and sizes[2] <= 2
        ):
            return True  # 12/05/1990, 3.4.2024, 2024-05-12
    if len(groups) == 4 and set(seps) == {"."} and max(sizes) <= 3:
        return True  # 192.168.1.10
    if set(seps) <= {".", ","} and len(groups) >= 3 and sizes[0] <= 3 and all(s == 3 for s in sizes[1:]):
        return True  # 1.500.000
    if len(groups) == 2:
        a, b = int(groups[0]), int(groups[1])
        if seps[0] == "." and sizes != [3, 4]:
            return True  # 12345.67, 3.14159265
        if sizes == [4, 4] and 1950 <= a <= 2099 and seps[0] in ("-", "/"):
            return True  # invoice 2024-0117
        if (
            seps[0] in ("-", "\u2013", "/", "")
            and b > a
            and (
                (groups[0].endswith("0") and groups[1].endswith("0"))
                or groups[1].endswith("000")
                or all(1900 <= n <= 2099 for n in (a, b))
            )
        ):
            return True  # 1000-1500, 1-100000, 2019-2020
    if len(groups) >= 3 and max(sizes) <= 2 and not groups[0].startswith("0"):
        steps = {int(b) - int(a) for a, b in zip(groups, groups[1:])}
        if len(steps) == 1 and steps.pop() > 0:
            return True  # lots 12 13 14 15, sizes 6 8 10 12
    return False


def _phone_span(text: str, units: list[_Unit]) -> Span | None:
    if not 7 <= sum(len(u.digits) for u in units) <= 15 or _looks_like_number_not_phone(text, units):
        return None
    start = units[0].start
    if start > 0 and text[start - 1] == "(":  # "(555) 123-4567": keep the bracket inside the placeholder
        start -= 1
    return start, units[-1].end


_LIST_SEP = re.compile(r",|\s/|/\s")


def _phone_segments(text: str, units: list[_Unit]) -> Iterator[list[_Unit]]:
    """Cut a run into the numbers it holds.

    A comma or a spaced slash separates numbers ("150, 200, 250"; "02/28 / 455" is expiry / CVV). So does a
    spaced dash or dot in a run otherwise written tight ("718-622-0221 - 24", "69866.18 . 30"), and an opening
    bracket that never closes ("61200 (25p)").
    """
    seps = [text[a.end : b.start] for a, b in zip(units, units[1:])]
    tight = any(sep.strip() in ("-", ".") and sep == sep.strip() for sep in seps)
    cuts = set()
    for i, sep in enumerate(seps):
        both_digits = not units[i].word and not units[i + 1].word
        if both_digits and _LIST_SEP.search(sep):
            cuts.add(i)
        elif tight and both_digits and sep.strip() in ("-", ".") and sep != sep.strip():
            cuts.add(i)
        elif "(" in sep and not any(")" in later for later in seps[i:]):
            cuts.add(i)
    seg = [units[0]]
    for i, cur in enumerate(units[1:]):
        if i in cuts:
            yield seg
            seg = []
        seg.append(cur)
    yield seg


def _trim_words(units: list[_Unit]) -> list[_Unit]:
    # "call 555 123 4567 one more time": a lone digit word against a long digit group is prose, not the number.
    if len(units) > 2 and units[-1].word and not units[-2].word and len(units[-2].digits) >= 3:
        units = units[:-1]
    if len(units) > 2 and units[0].word and not units[1].word and len(units[1].digits) >= 3:
        units = units[1:]
    return units


def _two_phones(text: str, units: list[_Unit]) -> Iterator[Span]:
    """ "555 123 4567 555 987 6543": two numbers of the same shape typed back to back. A long id split in two
    ("4111 1111 1111 1112", a tracking number) has too few groups or halves of different shapes."""
    half = len(units) // 2
    left, right = units[:half], units[half:]
    if len(units) % 2 or half < 3 or [len(u.digits) for u in left] != [len(u.digits) for u in right]:
        return
    spans = _phone_span(text, left), _phone_span(text, right)
    if spans[0] and spans[1]:
        yield from spans


def _find_phones(text: str) -> Iterator[Span]:
    runs = _PHONE_RUN if _DIGIT_WORD_RE.search(text) else _PHONE_RUN_DIGITS
    for run in runs.finditer(text):
        if run.end() - run.start() < 7:
            continue  # fewer than 7 characters cannot hold 7 digits
        units = [_unit(u, run.start()) for u in _PHONE_UNIT_RE.finditer(run.group())]
        for seg in _phone_segments(text, units):
            seg = _trim_words(seg)
            span = _phone_span(text, seg)
            if span is not None:
                yield span
            elif sum(len(u.digits) for u in seg) > 15:
                yield from _two_phones(text, seg)


# --- detection and replacement ---------------------------------------------------------------------------

_MASK = "\x00"  # stands in for found entities so later patterns neither match them nor run across them

# Cheap tests on the whole message that every match of a detector needs. Most messages hold no personal data,
# and these let them skip the expensive patterns (a ~10x speed-up on tweets). They look at the lower-cased
# text and its digit count; masking only removes matches, so deciding once on the unmasked text is safe.
_DROP_DIGITS = str.maketrans("", "", "0123456789")
# an @ followed by a dotted domain or a provider ("RT @user:" does not pass), or a bracketed (at); each pattern
# starts with a literal or a character class so the engine can skip ahead
_EMAIL_GATE = re.compile(rf"@\s?(?:[\w\-]+\s?(?:\.\s?\w|[(\[{{]?\s*dot\b)|{_PROVIDER_NO_TLD_RE}\b)")
_AT_BRACKET_GATE = re.compile(r"[(\[{]\s*at\s*[)\]}]")
_AT_WORD_GATE = re.compile(rf"\sat\s+(?:[a-z0-9][a-z0-9\-]*(?:\.[a-z]|\s*[(\[{{]?\s*dot\b)|{_PROVIDER_NO_TLD_RE}\b)")
_PLATFORM_GATE = re.compile(rf"\b(?:{_PLATFORM_STRONG}|{_PLATFORM_WEAK})\b")
_DOMAIN_GATE = re.compile(r"[a-z0-9]\.[a-z]")
_STREET_GATE = re.compile(r"\d[a-z]{0,2}\s+[a-z0-9]")
_POSTCODE_GATE = re.compile(r"[A-Z]\d")  # on the original text: postcodes are written in capitals


def _phone_gate(text: str, low: str, ndigits: int) -> bool:
    # 7 digits are needed; allow one look-alike letter ("555 2O1 7788") and count digit words only when needed
    return ndigits >= 6 or ndigits + len(_DIGIT_WORD_LOWER.findall(low)) >= 6


Gate = Callable[[str, str, int], bool]  # (text, lower-cased text, number of ASCII digits) -> may this match?

# Priority order; see the module docstring for why.
_DETECTORS: tuple[tuple[EntityType, Callable[[str], Iterable[Span]], Gate], ...] = (
    ("URL", _find_url_scheme, lambda text, low, nd: "://" in low or "www" in low),
    ("EMAIL", _find_email_strong, lambda text, low, nd: bool(_EMAIL_GATE.search(low) or _AT_BRACKET_GATE.search(low))),
    ("EMAIL", _find_email_at_word, lambda text, low, nd: _AT_WORD_GATE.search(low) is not None),
    ("HANDLE", _find_handle_labelled, lambda text, low, nd: _PLATFORM_GATE.search(low) is not None),
    ("HANDLE", _find_handle_marked, lambda text, low, nd: "name" in low or "handle" in low),
    ("URL", _find_url_bare, lambda text, low, nd: _DOMAIN_GATE.search(low) is not None),
    ("URL", _find_url_dot_word, lambda text, low, nd: "dot" in low),
    ("HANDLE", _find_handle_at, lambda text, low, nd: "@" in low),
    ("CARD", _find_cards, lambda text, low, nd: nd >= 13),
    ("ADDRESS", _finder(_STREET_ADDRESS), lambda text, low, nd: nd > 0 and _STREET_GATE.search(low) is not None),
    ("ADDRESS", _finder(_PO_BOX), lambda text, low, nd: nd > 0 and "box" in low),
    ("ADDRESS", _finder(_POSTCODE), lambda text, low, nd: nd > 0 and _POSTCODE_GATE.search(text) is not None),
    ("PHONE", _find_phones, _phone_gate),
)


def detect(text: str) -> list[tuple[int, int, str]]:
    """Every entity found in `text`, as sorted, non-overlapping (start, end, entity) spans."""
    found: list[tuple[int, int, str]] = []
    low = text.lower()
    ndigits = len(text) - len(text.translate(_DROP_DIGITS))
    masked = text
    for entity, find, gate in _DETECTORS:
        if not gate(text, low, ndigits):
            continue
        spans = list(find(masked))
        if not spans:
            continue
        found.extend((s, e, entity) for s, e in spans)
        pieces, last = [], 0
        for s, e in sorted(spans):
            pieces += [masked[last:s], _MASK * (e - s)]
            last = e
        pieces.append(masked[last:])
        masked = "".join(pieces)
    found.sort()
    return found


class Redactor:
    """Replaces personal data with `<ENTITY>` placeholders, per `RedactionConfig`; one message per call."""

    def __init__(self, config: RedactionConfig | None = None) -> None:
        self.config = config if config is not None else RedactionConfig()

    def redact(self, text: str, field: str = "text") -> RedactionResult:
        """Redact one `clean()`-ed message; `field` picks the per-field entities from the config."""
        if not isinstance(text, str):
            raise TypeError(
                f"Redactor.redact takes one message as str, got {type(text).__name__}: "
                "pass a single string, or use finesieve.data.preprocess.prepare for several (it cleans, then redacts)"
            )
        wanted = self.config.entities_for(field)
        if not wanted or not text:
            return RedactionResult(text, {}, ())
        spans = tuple(span for span in detect(text) if span[2] in wanted)
        if not spans:
            return RedactionResult(text, {}, ())
        pieces, counts, last = [], {}, 0
        for start, end, entity in spans:
            pieces += [text[last:start], f"<{entity}>"]
            counts[entity] = counts.get(entity, 0) + 1
            last = end
        pieces.append(text[last:])
        return RedactionResult("".join(pieces), counts, spans)
