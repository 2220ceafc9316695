"""Resume anonymisation: replace who a candidate is with typed placeholders, keep what they did.

Before a resume is trained on, stored or sent to a model (GDPR, CCPA), these are replaced by `<TYPE>`:

    PERSON       names in any script: the name line on top, "Name:"/"Nom :"/"Nombre:"/"Nome:"/"姓名：" labels,
                 signatures after "Sincerely,"/"Cordialement,", "Dr."/"Mr" + name, referees, "My name is ...",
                 spaCy PERSON entities (optional), and every later mention of a name found once
    DOB          "Date of birth: ...", "born 12/03/1988", "Geburtsdatum", "Née le ... à Lyon", place of birth
    AGE          "Age: 34", "34 years old", "Edad: 29 años", "満36歳"
    GENDER       gender field values, Mr/Mrs/Ms/Herr/Frau before a name, he/she/him/her/his/hers, "(she/her)"
    MARITAL      married, single (in personal details), divorced, "2 children", "Familienstand: verheiratet"
    NATIONALITY  nationality, citizenship and visa lines ("German citizen", "Nationality: Indian", "H-1B visa")
    RELIGION     religion fields and, in personal details, affiliations ("Hindu", "römisch-katholisch")
    HEALTH       health, disability and medical conditions in personal details
    PHYSICAL     height, weight, eye and hair colour
    PHOTO        "[photo]", "Photo attached", "Foto:" references
    NATIONAL_ID  SSN, National Insurance, passport, Aadhaar, PAN, DNI/NIE, CPF, CURP, codice fiscale, ID card numbers
    EMAIL PHONE URL HANDLE ADDRESS CARD   from `data.redact` (its patterns, not copies); profile URLs
                 (linkedin.com/in/..., github.com/...) count as HANDLE; labelled addresses in any language
                 ("Anschrift:", "Dirección:", "地址：") are added here

Employers, schools, skills, job titles and dates of employment or education are kept: a date is removed only
when a birth cue or label says it is a birth date, never because spaCy calls it a DATE, and a number range that
the phone pattern would take ("10/2013 – 03/2016") is a period of work, not a phone.

Line structure matters in a resume (a name line, a "Key: value" block), so the text is not `clean()`-ed: the
rules run on a view of it with full-width forms folded to ASCII one character for one (so spans are offsets in
the text given), and the output keeps every character outside the replaced spans.

spaCy is optional (the `resumes` extra) and runs NER only on the few lines where a capitalised word pair is not
a known resume word, which keeps the 2,036 livecareer resumes to about a minute on one core. Without spaCy, set
`person_ner=False` to use the PERSON rules alone.

The package, each module importing only those above it:
    config.py      AnonymisationConfig, the entity types, AnonymisationResult and AnonymisationReport
    patterns.py    the vocabularies and regular expressions
    rules.py       Doc (one text under analysis) and the rules that find its spans
    anonymiser.py  Anonymiser (with spaCy NER), anonymise_texts, anonymise_file
    cases.py       the built-in cases (resume_pii_cases.yaml) and measure_anonymisation

Usage:
    from finesieve.data.anonymise import AnonymisationConfig, Anonymiser
    anon = Anonymiser(AnonymisationConfig(person_ner=False))
    anon.anonymise("Jane Roe\\nDate of birth: 12/03/1988\\nAnalyst, Deloitte, 2015 - 2019").text
    # '<PERSON>\\nDate of birth: <DOB>\\nAnalyst, Deloitte, 2015 - 2019'
    results = anon.anonymise_texts(many_resumes)              # one NER pass over all of them
    anonymisation_report(results).to_dict()                   # counts per type, documents touched
    measure_anonymisation(anon, load_resume_cases())          # recall / retention on the built-in cases
"""

from __future__ import annotations

from finesieve.data.anonymise.anonymiser import Anonymiser, anonymise_file, anonymise_texts, load_spacy
from finesieve.data.anonymise.cases import (
    BUILTIN_CASES,
    RemoveItem,
    ResumeCase,
    format_measurement,
    load_resume_cases,
    measure_anonymisation,
)
from finesieve.data.anonymise.config import (
    ANON_ENTITY_TYPES,
    DEFAULT_SPACY_MODEL,
    RESUMES_EXTRA_HINT,
    AnonEntity,
    AnonymisationConfig,
    AnonymisationReport,
    AnonymisationResult,
    Span,
    anonymisation_report,
    entity_names,
)

__all__ = [
    "ANON_ENTITY_TYPES",
    "BUILTIN_CASES",
    "DEFAULT_SPACY_MODEL",
    "RESUMES_EXTRA_HINT",
    "AnonEntity",
    "AnonymisationConfig",
    "AnonymisationReport",
    "AnonymisationResult",
    "Anonymiser",
    "RemoveItem",
    "ResumeCase",
    "Span",
    "anonymisation_report",
    "anonymise_file",
    "anonymise_texts",
    "entity_names",
    "format_measurement",
    "load_resume_cases",
    "load_spacy",
    "measure_anonymisation",
]
