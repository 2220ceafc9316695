"""The text preprocessing a model was trained with, applied the same way when it scores and serves.

    prep = Preprocessing()                         # the default: clean, then redact every entity type
    texts, counts = prepare(raw_texts, prep)       # PreparedTexts (a list of str) and placeholder counts
    prepare_for(raw_texts, prep)                   # the texts only; already-prepared texts pass through

Every text a model sees goes through `prepare`: `load_dataset` when it reads training data, `finesieve score` and
the service when they read traffic, and a scorer loaded from a run directory when a Python caller hands it raw
text (the run's manifest records the `Preprocessing`, see `finesieve.manifest`). `prepare` returns a
`PreparedTexts`, a list that remembers which preprocessing made it, so a scorer that is handed texts already
prepared the same way does not redact them twice. Preparing is also idempotent (tested on real data):
prepare(prepare(t)) == prepare(t), so doing it twice costs time, never a different score.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field

from finesieve.data.normalize import clean
from finesieve.data.redact import RedactionConfig, Redactor


class Preprocessing(BaseModel):
    """What is done to every text before a scorer sees it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    clean: bool = Field(
        True,
        description="Unicode NFKC, invisible and control characters removed, look-alike "
        "letters mapped (data.normalize.clean).",
    )
    redaction: RedactionConfig = Field(
        default_factory=RedactionConfig, description="Personal data replaced by typed placeholders."
    )
    text_field: str = Field("text", description="The field name redaction settings are looked up under.")

    @classmethod
    def none(cls) -> Preprocessing:
        """Texts used as given (a dataset built in memory with `Dataset.from_texts`)."""
        return cls(clean=False, redaction=RedactionConfig(enabled=False))

    @property
    def is_identity(self) -> bool:
        return not self.clean and not self.redaction.enabled


class PreparedTexts(list):
    """A list of texts that `prepare` produced, tagged with the preprocessing it applied."""

    def __init__(self, texts: Iterable[str], preprocessing: Preprocessing):
        super().__init__(texts)
        self.preprocessing = preprocessing


def prepare(
    raw_texts: Iterable[str],
    preprocessing: Preprocessing | None = None,
    *,
    redactor: Redactor | None = None,
    field: str | None = None,
) -> tuple[PreparedTexts, Counter]:
    """Clean then redact each text; returns the texts and the placeholder counts per entity type.

    Pass `redactor` (built from `preprocessing.redaction`) when calling per chunk, to compile the patterns once;
    `field` names the column the texts come from when it is not `preprocessing.text_field` (a ranking file's
    query column), for the redaction's per-field entities.
    """
    preprocessing = preprocessing or Preprocessing()
    redactor = redactor or Redactor(preprocessing.redaction)
    field = field or preprocessing.text_field
    texts: list[str] = []
    counts: Counter[str] = Counter()
    for raw in raw_texts:
        text = clean(raw) if preprocessing.clean else raw
        out = redactor.redact(text, field=field)
        texts.append(out.text)
        counts.update(out.counts)
    return PreparedTexts(texts, preprocessing), counts


def prepare_for(texts: list[str], preprocessing: Preprocessing | None) -> list[str]:
    """`texts` as a scorer with this preprocessing should see them: unchanged when there is none to apply or when
    they were already prepared the same way."""
    if preprocessing is None or preprocessing.is_identity:
        return texts
    if isinstance(texts, PreparedTexts) and texts.preprocessing == preprocessing:
        return texts
    return prepare(texts, preprocessing)[0]
