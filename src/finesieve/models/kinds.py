"""The scorer kinds a run directory can hold: the `kind` string in manifest.json -> the class that loads it.

    from finesieve.models.kinds import MODEL_KINDS, kind_of
    kind_of(TfidfLogReg())                              # "tfidf": read from the class attribute `kind`
    MODEL_KINDS["tfidf"].load("runs/tfidf/model")       # the scorer saved there

Each scorer class carries its own kind (`TfidfLogReg.kind == "tfidf"`). This table holds the plain
scorers; the cascade (`finesieve.models.cascade`, a scorer made of these) saves and loads its stages through
it, and `finesieve.runs.SCORER_KINDS` adds the cascade itself. The kind strings are on disk in every run
directory: never rename one.
"""

from __future__ import annotations

from collections.abc import Mapping

from finesieve.data.errors import ConfigError
from finesieve.models.base import Scorer
from finesieve.models.char_cnn import CharCNNScorer
from finesieve.models.embedding_zero_shot import EmbeddingZeroShot
from finesieve.models.finetuned import FineTunedScorer
from finesieve.models.prompt_baseline import PromptBaseline
from finesieve.models.rules import RulesScorer
from finesieve.models.tfidf import TfidfLogReg

MODEL_KINDS: dict[str, type[Scorer]] = {
    cls.kind: cls
    for cls in (TfidfLogReg, RulesScorer, CharCNNScorer, EmbeddingZeroShot, PromptBaseline, FineTunedScorer)
}


def kind_of(scorer: object, kinds: Mapping[str, type[Scorer]] = MODEL_KINDS) -> str:
    """The run `kind` of a scorer object: its class attribute `kind`, when `kinds` maps it to exactly that class."""
    kind = getattr(type(scorer), "kind", None)
    if isinstance(kind, str) and kinds.get(kind) is type(scorer):
        return kind
    raise ConfigError(f"{type(scorer).__name__} is not a scorer kind finesieve can save: use one of {sorted(kinds)}")
