"""The rules that find personal data in one resume: `Doc` holds a text, its same-length folded view and the
spans found so far; each `find_*` function adds the spans of its kind (contacts, "Key: value" labels, strong and
weak patterns, names by rule and their later mentions). `anonymiser.py` runs them in order and merges the spans.
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

from finesieve.data.anonymise.patterns import (
    AGE_STRONG,
    AGE_WEAK,
    ATTRIBUTION,
    AWARD_OR_YEAR_LINE,
    BIRTH,
    CAP_PAIR,
    CHILDREN_STRONG,
    CITIZEN,
    CLOSING,
    COLOUR,
    CONTACT_WORDS,
    DATE_RE,
    DEMONYM_ALONE,
    DIGIT_GROUPS,
    FIELD_BEFORE,
    FIELD_END,
    FIRST_FIELD,
    FULL_URL,
    GENDER_HONORIFIC,
    GENDER_WORDS,
    HEADING_PREFIX,
    HEALTH_WEAK,
    LABEL_RE,
    LABEL_TABLE,
    LANGUAGES_LINE,
    LIST_ITEM,
    LOWER_WORD,
    MACHINE_TOKEN,
    MARITAL_STRONG,
    MARITAL_WEAK,
    MY_NAME,
    NAME_BEFORE_CONTACT,
    NAME_RUN,
    NATIONAL_ID,
    NEXT_KEY,
    NON_LATIN_HEADINGS,
    NOT_NAME,
    ORG_AFTER,
    PAREN_NAME,
    PARTICLES,
    PEOPLE_CUE,
    PERSON_NAMED_ORGS,
    PERSONAL_TYPES,
    PHOTO,
    PHYSICAL_STRONG,
    PHYSICAL_WEAK,
    PLACE,
    PLATFORM_LABEL,
    PRIORITY,
    PROFILE_URL,
    PRONOUN,
    PRONOUN_LINE,
    RANK,
    RELATIVE_LABEL,
    RELIGION_WEAK,
    ROLE_LABEL,
    SECTION_ANY,
    SECTION_PERSONAL,
    SECTION_PUBLICATIONS,
    SECTION_REFERENCES,
    SENTENCE_END,
    SIGNED,
    SINGLE_SPACE_LABEL,
    SPANISH_HE,
    TECH_URL,
    TITLED_NAME,
    VALUE_LIMIT,
    WEAK_LABELS,
    YEAR,
)
from finesieve.data.redact import detect as detect_contacts

# --- text helpers ------------------------------------------------------------------------------------------

_FOLD = {i: i - 0xFEE0 for i in range(0xFF01, 0xFF5F)}  # full-width ASCII forms -> ASCII, one for one
_FOLD.update({ord(c): " " for c in "\u3000\u00a0\u2007\u202f\u2009\u200a\u2002\u2003\u200b\ufeff"})


def _fold(text: str) -> str:
    """A same-length view of `text` for the patterns: full-width forms as ASCII, odd spaces as spaces."""
    return text.translate(_FOLD)


@lru_cache(maxsize=4096)
def script(char: str) -> str:
    """The script of a letter, from its Unicode name: LATIN, CJK, HIRAGANA, DEVANAGARI, CYRILLIC, ARABIC..."""
    try:
        name = unicodedata.name(char)
    except ValueError:
        return ""
    first = name.split()[0]
    return "CJK" if first in ("CJK", "HIRAGANA", "KATAKANA", "HANGUL") else first


def _name_token_kind(token: str) -> str | None:
    """'initial' (R.), 'particle' (van, de), 'upper' (SMITH), 'title' (Smith, O'Connor, Al-Ali), else None."""
    if token in PARTICLES:
        return "particle"
    if re.fullmatch(r"[A-Z]\.?", token):
        return "initial"
    letters = [c for c in token if c.isalpha()]
    if not letters or not token[0].isupper() or any(c.isdigit() for c in token):
        return None
    if not re.fullmatch(r"[^\W\d_]+(?:['’\-][^\W\d_]+)*\.?", token) or any(script(c) != "LATIN" for c in letters):
        return None
    return "upper" if token.isupper() and len(letters) > 1 else "title"


def _non_latin_name(candidate: str) -> bool:
    """1 to 4 words, all in one non-Latin script, short: 王晓明, 山田 太郎, अनिल कुमार शर्मा, Иван Петров."""
    tokens = candidate.split()
    if not 1 <= len(tokens) <= 4 or candidate.strip() in NON_LATIN_HEADINGS:
        return False
    scripts = {script(c) for c in candidate if c.isalpha()}
    scripts.discard("")
    if len(scripts) != 1 or "LATIN" in scripts:
        return False
    if not all(c.isalpha() or c in "-'’·・. " or unicodedata.category(c).startswith("M") for c in candidate.strip()):
        return False
    limit = 5 if scripts == {"CJK"} else 40
    return sum(len(t) for t in tokens) <= limit


@dataclass
class Doc:
    """One text under analysis: its folded view, its lines, and the spans found so far."""

    text: str
    view: str
    line_starts: list[int]
    lower_words: frozenset[str]  # words written in lower case somewhere in the text: not names
    hits: list[tuple[int, int, str, int]] = field(default_factory=list)  # (start, end, type, priority)
    names: dict[str, bool] = field(default_factory=dict)  # name -> primary (the candidate's own): find again
    pending: list[tuple[int, int, bool]] = field(default_factory=list)  # (start, end, primary): spaCy decides
    personal_section: set[int] = field(default_factory=set)  # lines under a "Personal details" heading
    lexicon: frozenset[str] | None = None  # English words (from the spaCy model), when NER is on
    people_lines: set[int] = field(default_factory=set)  # lines of References and Publications sections
    ner_lines: list[tuple[int, str]] = field(default_factory=list)  # (offset, line) to give to spaCy

    @classmethod
    def build(cls, text: str) -> Doc:
        view = _fold(text)
        starts = [0] + [m.end() for m in re.finditer("\n", view)]
        # e-mails and URLs spell names in lower case ("jordan.ellison@..."): they are no evidence of a common word
        prose = MACHINE_TOKEN.sub(" ", view)
        lower = frozenset(w.lower() for w in LOWER_WORD.findall(prose))
        return cls(text, view, starts, lower)

    def lines(self) -> Iterable[tuple[int, int, str]]:
        """(index, start offset, line) for every line."""
        ends = [*self.line_starts[1:], len(self.view) + 1]
        for i, (start, end) in enumerate(zip(self.line_starts, ends)):
            yield i, start, self.view[start : end - 1]

    def line_of(self, pos: int) -> int:
        return bisect.bisect_right(self.line_starts, pos) - 1

    def add(self, start: int, end: int, etype: str, source: str) -> None:
        # trim spaces and trailing punctuation the patterns may have taken along
        while start < end and self.view[start] in " \t\n\r":
            start += 1
        while end > start and self.view[end - 1] in " \t\n\r,;.:":
            if self.view[end - 1] == "." and re.search(r"(?:\b[A-Z]|\b(?:Jr|Sr|St|No|Nr)|\.\w)\.$", self.view[:end]):
                break  # "R." / "Jr." / "S.p.A." keep their dot
            end -= 1
        if end > start:
            self.hits.append((start, end, etype, PRIORITY[source]))

    def add_name(self, start: int, end: int, source: str = "label", primary: bool = False) -> None:
        """A PERSON span whose name is then found again everywhere (and, when `primary`, its words alone too)."""
        self.add(start, end, "PERSON", source)
        name = self.view[start:end].strip(" \t,.;:()")
        if name:
            self.names[name] = self.names.get(name, False) or primary

    def common(self, token: str) -> bool:
        low = token.lower().strip(".,'’")
        return low in NOT_NAME or low in self.lower_words

    def is_name(self, candidate: str, *, min_tokens: int = 2, check_words: bool = True) -> bool:
        """Does `candidate` look like a person's name (Latin: 2-5 capitalised words; or a non-Latin name)?"""
        candidate = candidate.strip(" \t,.;:")
        if not candidate or len(candidate) > 60 or any(c.isdigit() or c in "@/:\\" for c in candidate):
            return False
        if _non_latin_name(candidate):
            return True
        tokens = candidate.split()
        kinds = [_name_token_kind(t) for t in tokens]
        if None in kinds or not min_tokens <= len(tokens) <= 5 or "particle" in (kinds[0], kinds[-1]):
            return False
        words = [t for t, k in zip(tokens, kinds) if k in ("title", "upper")]
        if len(words) < min(min_tokens, 2) or (kinds[-1] == "initial" and len(tokens) > 1):
            return False
        if "upper" in kinds and "title" in kinds and sum(k == "upper" for k in kinds) > 1 and len(words) > 2:
            return False  # "SAP FICO Consultant": acronyms before a title-case word
        if check_words and any(t.lower().strip(".") in NOT_NAME for t in words):
            return False
        if check_words and all(self.common(t) for t in words):
            return False
        return candidate.lower() not in PERSON_NAMED_ORGS

    def all_english(self, candidate: str) -> bool:
        """Are all the candidate's words English words ("Internal Medicine", "Oliver Bennett")? Such a candidate
        is a name only if spaCy says so. False when no lexicon is loaded (NER off)."""
        if not self.lexicon:
            return False
        words = [w.lower() for w in re.findall(r"[^\W\d_]{2,}", candidate)]
        return bool(words) and all(_in_lexicon(w, self.lexicon) for w in words)

    def needs_confirmation(self, candidate: str) -> bool:
        """Mostly English words ("DANCE EDUCATOR", "Oliver Bennett", "AIRCRAFT HYDRAULICS JOURNYMAN"): a name
        only if spaCy says so. False when no lexicon is loaded (NER off)."""
        if not self.lexicon or _non_latin_name(candidate):
            return False
        words = [w.lower() for w in re.findall(r"[^\W\d_]{2,}", candidate)]
        return bool(words) and 2 * sum(_in_lexicon(w, self.lexicon) for w in words) > len(words)

    def propose_name(self, start: int, end: int, *, primary: bool = False, min_tokens: int = 2) -> None:
        """A name found by a rule: kept if it looks like a name; left to spaCy when all its words are English."""
        candidate = self.view[start:end]
        if not self.is_name(candidate, min_tokens=min_tokens):
            return
        if self.needs_confirmation(candidate):
            self.pending.append((start, end, primary))
        else:
            self.add_name(start, end, "label", primary)


def _verb_form(word: str, lexicon: frozenset[str]) -> bool:
    """ "generating", "developed", "planned": an -ing or -ed form of an English word."""
    if word.endswith("ing"):
        stems = (word[:-3], word[:-3] + "e", word[:-4])
    elif word.endswith("ed"):
        stems = (word[:-2], word[:-1], word[:-3])
    else:
        return False
    return any(stem in lexicon for stem in stems)


def _in_lexicon(word: str, lexicon: frozenset[str]) -> bool:
    if word in lexicon:
        return True
    # plurals only ("scripts", "companies", "boxes"): "Ayres" is not a plural of "ayr"
    if word.endswith("ies"):
        return word[:-3] + "y" in lexicon
    if re.search(r"(?:s|x|z|ch|sh)es$", word):
        return word[:-2] in lexicon
    return word.endswith("s") and not word.endswith("ss") and word[:-1] in lexicon


# --- rules -------------------------------------------------------------------------------------------------


def find_contacts(doc: Doc) -> None:
    """E-mail, phone, URL, handle, address and card spans from `data.redact`, corrected for resumes: its
    patterns were written for marketplace messages, where "Salesforce.com", "ISO 9001-2000" or "@Ogilvy" are
    rarer than in a resume."""
    for start, end, etype in detect_contacts(doc.view):
        piece = doc.view[start:end]
        if etype == "URL":
            if TECH_URL.match(piece):
                continue  # ASP.NET is a skill
            if PROFILE_URL.search(piece):
                etype = "HANDLE"  # linkedin.com/in/name names a person's account
            elif not FULL_URL.search(piece) and not _contact_line(doc, start):
                continue  # a bare "Salesforce.com" or "B.Com" in the text is a product, employer or degree
        elif etype == "HANDLE" and not _handle_ok(doc, start, piece):
            continue
        elif etype == "PHONE":
            span = _phone_span(doc, start, end)
            if span is None:
                continue
            start, end = span
        elif etype == "ADDRESS":
            if AWARD_OR_YEAR_LINE.match(piece):
                continue  # "2012\nGeorgian Court", "2009 Winner's Circle": a year and a name, not a street
            start = _address_start(doc, start)
        doc.add(start, end, etype, "contact")


def _contact_line(doc: Doc, pos: int) -> bool:
    """Is `pos` on a line of contact details (an e-mail, a contact label) or among the first lines?"""
    i = doc.line_of(pos)
    start, end = doc.line_starts[i], (doc.line_starts[i + 1] if i + 1 < len(doc.line_starts) else len(doc.view))
    return i < 5 or CONTACT_WORDS.search(doc.view, start, end) is not None


def _handle_ok(doc: Doc, start: int, piece: str) -> bool:
    if PROFILE_URL.search(piece):
        return True
    if piece.startswith("@"):  # "@jane_doe", "@priyanka.moves"; not "@Ogilvy" (at Ogilvy) nor "@E"
        name = piece[1:]
        return len(name) >= 3 and (re.search(r"[\d_.]", name) is not None or name.islower())
    return PLATFORM_LABEL.search(doc.view, max(0, start - 30), start) is not None


def _phone_span(doc: Doc, start: int, end: int) -> tuple[int, int] | None:
    """The phone span, or None where the digits are dates, ranges, standards, scores or citations."""
    piece = doc.view[start:end]
    if "\n" in piece:  # "414-768-6210\n2013": the number ends at the line end
        piece = piece[: piece.index("\n")].rstrip()
        end = start + len(piece)
        if sum(c.isdigit() for c in piece) < 7:
            return None
    groups = DIGIT_GROUPS.findall(piece)
    if (
        _is_period(piece)
        or re.search(r"\d{1,2}/\d{1,2}/\d{2,4}|\((?:19|20)\d\d\)", piece)  # dates; "59 (2005) 570-574"
        or ("/" in piece and not re.search(r"[\s()\-]", piece))  # "11203/11204", "3.877/4.00"
        or re.search(r"ISO\W{0,3}$", doc.view[max(0, start - 6) : start])  # ISO 9001-2000
        or (len(groups) == 2 and len(groups[0]) == len(groups[1]) >= 3 and 0 < int(groups[1]) - int(groups[0]) < 1000)
    ):
        return None
    return start, end


def _is_period(piece: str) -> bool:
    """Digits that are two years and month/day numbers: a period of employment, not a phone number."""
    groups = DIGIT_GROUPS.findall(piece)
    years = [g for g in groups if len(g) == 4 and 1950 <= int(g) <= 2039]
    return len(years) >= 2 and all(len(g) <= 2 for g in groups if g not in years)


def _address_start(doc: Doc, start: int) -> int:
    """A postcode found alone ("Cardiff CF10 3AG") takes the house number and street before it on its line."""
    line_start = doc.line_starts[doc.line_of(start)]
    before = doc.view[line_start:start]
    m = re.search(r"(?:^|[|•·:]\s*|\s{2,})(\d{1,5}[a-z]?,?\s+[^|•·@\d]{2,60})$", before)
    return line_start + m.start(1) if m else start


def _field_start(doc: Doc, pos: int) -> bool:
    """Does `pos` open a field: the start of its line (after bullets) or just after a separator?"""
    line_start = doc.line_starts[doc.line_of(pos)]
    before = doc.view[line_start:pos]
    # after bullets at the line start, a separator, or a sentence's full stop ("... conducted. Supervisor: ...")
    return re.fullmatch(r"[\s#*•·\-–|>]*", before) is not None or FIELD_BEFORE.search(before) is not None


def _field_end(doc: Doc, start: int, label_starts: list[int], etype: str) -> int:
    """Where a label's value ends: a separator, the line end, the next label or "Key:", or the type's limit."""
    m = FIELD_END.search(doc.view, start)
    end = m.start() if m else len(doc.view)
    i = bisect.bisect_right(label_starts, start)
    if i < len(label_starts):
        end = min(end, label_starts[i])
    key = NEXT_KEY.search(doc.view, start, end)
    if key:
        end = key.start()
    sentence = SENTENCE_END.search(doc.view, start, end) if etype != "PERSON" else None
    if sentence:  # "Nationality: Peruvian. Analyst at BCP": the value ends with its sentence
        end = sentence.start()
    limit = start + VALUE_LIMIT[etype]
    if end > limit:  # cut at the last word end before the limit
        end = start + len(doc.view[start:limit].rsplit(" ", 1)[0])
    return end


def find_labels(doc: Doc, personal_section: set[int]) -> None:
    """ "Key: value" fields: the value is replaced, the label kept ("Date of birth: <DOB>")."""
    matches = []
    for m in LABEL_RE.finditer(doc.view):
        index = int(next(k for k, v in m.groupdict().items() if v is not None and k.startswith("L"))[1:])
        etype, label = LABEL_TABLE[index][0], m.group(f"L{index}")
        word = re.match(r"[^\W\d_]*", label).group().lower()
        single_space = m["sep"] == " "
        if (word in WEAK_LABELS or single_space) and not _field_start(doc, m.start()):
            continue
        if single_space and not SINGLE_SPACE_LABEL.fullmatch(label):
            continue
        matches.append((m, etype, single_space))
    label_starts = sorted(m.start() for m, _, _ in matches)
    personal = {doc.line_of(m.start()) for m, etype, _ in matches if etype in PERSONAL_TYPES - {"HEALTH"}}
    for m, etype, single_space in matches:
        start = m.end()
        if etype == "PERSON" and ROLE_LABEL.match(m.group()):
            rank = RANK.match(doc.view, start)  # "Supervisor: COL Jeff Ireland (406...)"
            words = NAME_RUN.match(doc.view, rank.end() if rank else start)  # "Supervisor: Paul Ayres (916) ..."
            if words and doc.is_name(words.group()):  # a referee, a supervisor: not the candidate
                doc.add_name(words.start(), words.end(), "label")
            continue
        end = _label_value_end(doc, etype, start, label_starts)
        value = doc.view[start:end].strip()
        if not value or not _plausible_value(doc, etype, value, single_space):
            continue
        if etype == "HEALTH" and not _near(doc.line_of(start), personal | personal_section):
            continue  # "Health: taught basic health class" in a teacher's duties is not a health record
        if etype == "PERSON":
            doc.add_name(start, end, "label", primary=not RELATIVE_LABEL.match(m.group()))
        else:
            doc.add(start, end, etype, "label")


def _label_value_end(doc: Doc, etype: str, start: int, label_starts: list[int]) -> int:
    if etype == "DOB" and (date := DATE_RE.match(doc.view, start)):
        end = date.end()
        place = re.match(rf",?\s+(?:in|à|a|en|em)\s+{PLACE}", doc.view[end : end + 40])
        return end + place.end() if place else end
    if etype == "NATIONAL_ID":
        # the number only: "J 9138762 Issued at Thane" -> "J 9138762"
        tokens = re.match(r"(?:(?-i:[A-Z0-9][A-Z0-9./\-]*)(?!\w)[ \t]?)+", doc.view[start : start + VALUE_LIMIT[etype]])
        if not tokens:
            return start
        kept = tokens.group().split()
        while kept and not re.search(r"\d", kept[-1]):  # "F 3905156 I, ..." -> "F 3905156"
            kept.pop()
        return start + len(tokens.group()[: tokens.group().find(kept[-1]) + len(kept[-1])]) if kept else start
    return _field_end(doc, start, label_starts, etype)


def _near(line: int, lines: set[int], distance: int = 3) -> bool:
    return any(abs(line - other) <= distance for other in lines)


def _plausible_value(doc: Doc, etype: str, value: str, single_space: bool) -> bool:
    """A value worth removing: its type's shape, and a stricter one after a single space (Europass layout)."""
    if etype == "PERSON":
        return doc.is_name(value, min_tokens=1, check_words=single_space) and len(value.split()) <= 6
    if etype in ("AGE", "NATIONAL_ID", "ADDRESS") and not re.search(r"\d", value):
        return False
    if etype == "NATIONAL_ID" and len(re.sub(r"\W", "", value)) < 5:
        return False
    if etype == "PHYSICAL" and not (re.search(r"\d", value) or COLOUR.search(value)):
        return False
    if not single_space:
        return True
    first = value.split()[0].lower()
    if etype == "GENDER":
        return value.lower() in GENDER_WORDS
    if etype == "DOB":
        return DATE_RE.match(value) is not None
    if etype == "AGE":
        return re.match(r"\d{1,2}\b", value) is not None
    if etype == "NATIONALITY":
        return DEMONYM_ALONE.fullmatch(value) is not None or _non_latin_name(value)
    if etype == "MARITAL":
        return MARITAL_STRONG.fullmatch(value) is not None or first in ("single", "ledig")
    return True


def find_strong(doc: Doc) -> None:
    """Patterns that mean personal data wherever they stand."""
    view = doc.view
    for m in BIRTH.finditer(view):
        doc.add(m.start("v"), m.end("v"), "DOB", "strong")
    for pattern, etype in (
        (AGE_STRONG, "AGE"),
        (MARITAL_STRONG, "MARITAL"),
        (CHILDREN_STRONG, "MARITAL"),
        (CITIZEN, "NATIONALITY"),
        (PHYSICAL_STRONG, "PHYSICAL"),
        (PHOTO, "PHOTO"),
        (NATIONAL_ID, "NATIONAL_ID"),
        (PRONOUN_LINE, "GENDER"),
    ):
        for m in pattern.finditer(view):
            doc.add(m.start(), m.end(), etype, "strong")
    # English pronouns in any text: no other language here writes he/she/him/her/his as words, except Spanish
    # "He trabajado" (I have worked), which the participle after it gives away
    for m in PRONOUN.finditer(view):
        if m.group().lower() == "he" and SPANISH_HE.match(view, m.end()):
            continue
        if m.group().lower() == "her" and view.startswith(" Majesty", m.end()):
            continue  # Her Majesty's Revenue and Customs: an employer
        doc.add(m.start(), m.end(), "GENDER", "strong")


def personal_section_lines(doc: Doc) -> set[int]:
    """The lines under a 'Personal details' heading, up to the next heading."""
    section, inside = set(), False
    for i, _, line in doc.lines():
        stripped = line.strip()
        if SECTION_PERSONAL.match(stripped):
            inside = True
            continue
        if inside and stripped and ":" not in stripped and len(stripped) < 40 and SECTION_ANY.match(stripped):
            if not any(w in GENDER_WORDS or MARITAL_STRONG.fullmatch(w) for w in stripped.lower().split()):
                inside = False
        if inside:
            section.add(i)
    return section


def _personal_lines(doc: Doc) -> tuple[set[int], set[int]]:
    """(lines with a personal hit of their own, those plus the lines of a 'Personal details' section)."""
    own = {
        doc.line_of(s)
        for s, e, t, _ in doc.hits
        if t in PERSONAL_TYPES and doc.view[s:e].lower() not in ("he", "she", "him", "her", "his", "hers")
    }
    return own, own | doc.personal_section


def find_weak(doc: Doc) -> None:
    """Words that are personal data only among personal details: 'single', 'Hindu', 'Female', '34', '70 kg'."""
    own, personal = _personal_lines(doc)
    for i, start, line in doc.lines():
        if i not in personal or not line.strip():
            continue
        for pattern, etype in (
            (MARITAL_WEAK, "MARITAL"),
            (RELIGION_WEAK, "RELIGION"),
            (HEALTH_WEAK, "HEALTH"),
            (PHYSICAL_WEAK, "PHYSICAL"),
            (AGE_WEAK, "AGE"),
        ):
            for m in pattern.finditer(line):
                doc.add(start + m.start(), start + m.end(), etype, "weak")
        short_list = len(line) <= 80 and not LANGUAGES_LINE.search(line)
        for m in LIST_ITEM.finditer(line):
            item = m.group().strip()
            where = start + m.start() + m.group().index(item) if item else 0
            if item.lower() in GENDER_WORDS and short_list:
                doc.add(where, where + len(item), "GENDER", "weak")
            elif re.fullmatch(r"\d{2}", item) and 16 <= int(item) <= 80 and short_list and "," in line:
                doc.add(where, where + len(item), "AGE", "weak")  # "Female, 34, married"
        if i in own and not LANGUAGES_LINE.search(line):
            for m in DEMONYM_ALONE.finditer(line):
                doc.add(start + m.start(), start + m.end(), "NATIONALITY", "weak")


def _first_field(line: str) -> tuple[int, str]:
    """The part of a line before its first separator (" | ", " – ", ",", "("), with its offset in the line."""
    body = HEADING_PREFIX.sub(lambda m: " " * len(m.group()), line)
    body = re.sub(r"^[\s#*>]+", lambda m: " " * len(m.group()), body)
    offset = len(body) - len(body.lstrip())
    m = FIRST_FIELD.search(body, offset)
    piece = body[offset : m.start()] if m else body[offset:]
    return offset, piece.strip()


def find_names(doc: Doc) -> None:
    """PERSON by rule: the name line on top, titled names, signatures, referees, 'my name is', 'X Phone:'."""
    _top_names(doc)
    view = doc.view
    for m in TITLED_NAME.finditer(view):
        _titled_name(doc, m)
    for m in MY_NAME.finditer(view):
        words = NAME_RUN.match(view, m.end())
        if words and doc.is_name(words.group(), min_tokens=1):
            doc.add_name(words.start(), words.end(), "label", primary=True)
    for m in NAME_BEFORE_CONTACT.finditer(view):
        doc.propose_name(m.start("name"), m.end("name"))
    for m in ATTRIBUTION.finditer(view):
        before = view[: m.start()].rstrip()
        if before.endswith(('"', "”", "’", "'")):  # a quote, then "– Jane Roe, Manager"
            doc.propose_name(m.start("name"), m.start("name") + len(m["name"].rstrip()))
    for m in SIGNED.finditer(view):
        _name_at(doc, m.end())
    _signature_and_referees(doc)


def _titled_name(doc: Doc, m: re.Match) -> None:
    """ "Dr. Alan Whitfield", "Mrs Helen Pargeter", "Mr.\nRoshto"; the honorific itself is GENDER."""
    name, title = m["name"], m["title"]
    if re.search(r",\s*$", doc.view[max(0, m.start() - 3) : m.start()]) and doc.view[m.end() : m.end() + 1] == ",":
        return  # "..., Ms Access, Ms Visio, ...": a list of Microsoft products
    honorific = GENDER_HONORIFIC.match(title) is not None
    single = len(name.split()) == 1
    if single and not (honorific and _name_token_kind(name) == "title" and not doc.common(name)):
        return  # "Professor Biology", "Dr. G.": one word is a name only after Mr/Mrs/Ms ("Mr. Roshto")
    if single and doc.lexicon and _in_lexicon(name.lower(), doc.lexicon):
        return
    if not single and not doc.is_name(name, min_tokens=1):
        return
    if honorific:
        doc.add(m.start("title"), m.end("title"), "GENDER", "strong")
    if not single and doc.needs_confirmation(name):  # "Miss Middle Georgia" (a pageant)
        doc.pending.append((m.start("name"), m.end("name"), False))
    else:
        doc.add_name(m.start("name"), m.end("name"), "label")


def _name_at(doc: Doc, pos: int, primary: bool = False) -> None:
    """If the field starting at `pos` is a name, mark it (`primary`: the candidate's own name)."""
    line_end = doc.view.find("\n", pos)
    line = doc.view[pos : line_end if line_end >= 0 else len(doc.view)]
    offset, candidate = _first_field(line)
    if candidate:
        doc.propose_name(pos + offset, pos + offset + len(candidate), primary=primary)
    for m in PAREN_NAME.finditer(line):  # "李娜 (Li Na)"; not "TITLE (CONTRACT POSITION)"
        if not m.group(1).isupper():
            doc.propose_name(pos + m.start(1), pos + m.end(1), primary=primary)


def _top_names(doc: Doc) -> None:
    """The name line: one of the first five non-empty lines, before any section heading."""
    seen = 0
    for _, start, line in doc.lines():
        stripped = line.strip()
        if not stripped or PHOTO.fullmatch(stripped):
            continue
        seen += 1
        if seen > 5 or (seen > 1 and _is_section_heading(stripped)):
            break
        _name_at(doc, start, primary=True)


_SECTION_WORDS = frozenset(
    "summary profile experience education skills employment work history career objective about projects "
    "qualifications certifications contact references referees positions training languages interests hobbies "
    "accomplishments highlights activities affiliations achievements awards publications memberships volunteer "
    "overview competencies strengths".split()
)


def _is_section_heading(line: str) -> bool:
    words = re.findall(r"[^\W\d_]+", line.lower())
    return 0 < len(words) <= 4 and all(w in NOT_NAME for w in words) and any(w in _SECTION_WORDS for w in words)


def _signature_and_referees(doc: Doc) -> None:
    """The name after a closing formula, and the names opening the lines of a References section; notes the
    lines of References and Publications sections for spaCy."""
    after_closing = in_references = in_publications = False
    for i, start, line in doc.lines():
        stripped = line.strip()
        if not stripped:
            continue
        if after_closing:
            _name_at(doc, start, primary=True)
            after_closing = False
        if CLOSING.match(stripped):
            after_closing = True
            continue
        if SECTION_REFERENCES.match(stripped):
            in_references = True
            continue
        if SECTION_PUBLICATIONS.match(stripped):
            in_publications = True
            continue
        if (in_references or in_publications) and _is_section_heading(stripped):
            in_references = in_publications = False
        if in_references:
            _name_at(doc, start)
        if in_references or in_publications:
            doc.people_lines.add(i)


def find_name_mentions(doc: Doc) -> None:
    """Every other mention of a name found once: 'Sarah' in the summary, 'PRIYA VENKATESH' at the end."""
    for name, primary in sorted(doc.names.items(), key=lambda kv: len(kv[0]), reverse=True):
        variants = {name}
        tokens = name.split()
        if primary and all(_name_token_kind(t) for t in tokens):
            variants |= {
                t.strip(".") for t in tokens if len(t.strip(".")) >= 3 and t not in PARTICLES and not doc.common(t)
            }
        for variant in variants:
            if _non_latin_name(variant):
                pattern = re.escape(variant)
            else:
                pattern = r"(?<![\w'’\-])" + re.escape(variant) + r"(?![\w'’\-])"
            for m in re.finditer(pattern, doc.view, re.IGNORECASE):
                if m.group()[0].isupper() or not m.group()[0].isalpha() or _non_latin_name(variant):
                    doc.add(m.start(), m.end(), "PERSON", "person")


def collect_ner_lines(doc: Doc) -> None:
    """The lines worth giving to spaCy: where people are named (the first lines, references, publications, a
    line with contact details, a role such as "Supervisor:", an honorific or a quote) and a capitalised word pair
    is not a known word. Elsewhere spaCy's PERSON is mostly a product or a law ("Sarbanes Oxley", "JD Edwards"),
    and a line with a year is an employment or education line, whose capitalised pairs are employers."""
    for i, start, line in doc.lines():
        if len(line) < 5:
            continue
        if i not in doc.people_lines and (i >= 5 and not PEOPLE_CUE.search(line) or YEAR.search(line)):
            continue
        for m in CAP_PAIR.finditer(line):
            if not all(doc.common(w) for w in m.group().split() if len(w) > 2):
                doc.ner_lines.append((start, line))
                break


def add_ner_person(doc: Doc, start: int, end: int) -> None:
    """Accept a spaCy PERSON entity only if it looks like a name and is not an employer's."""
    text = doc.view[start:end]
    cut = text.find("\n")
    if cut >= 0:
        text, end = text[:cut], start + cut
    text = text.rstrip(" ,.;:")
    if not doc.is_name(text) or doc.all_english(text) or ORG_AFTER.match(doc.view, start + len(text)):
        return
    words = text.split()
    if any(w.isupper() and len(w) > 1 for w in words) and not text.isupper():
        return  # "Ferreira CAMPUS", "Generating MIS": an acronym inside a title-case run
    if doc.lexicon and any(_verb_form(w.lower(), doc.lexicon) for w in words):
        return  # "Generating Reports", "Hrs Worked", "Corona Treating": a verb, not a name
    doc.add_name(start, start + len(text), "person")
