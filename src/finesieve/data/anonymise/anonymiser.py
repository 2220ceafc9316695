"""`Anonymiser`: runs the rules (and, optionally, spaCy NER for person names) over many texts at once and
replaces each span found with its placeholder; `anonymise_file` does it for every row of a file and reports.

    Anonymiser(AnonymisationConfig(person_ner=False)).anonymise("Name: Ana Lima").text  # 'Name: <PERSON>'
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from finesieve.data.anonymise.config import (
    DEFAULT_SPACY_MODEL,
    RESUMES_EXTRA_HINT,
    AnonymisationConfig,
    AnonymisationResult,
    Span,
    anonymisation_report,
)
from finesieve.data.anonymise.rules import (
    Doc,
    add_ner_person,
    collect_ner_lines,
    find_contacts,
    find_labels,
    find_name_mentions,
    find_names,
    find_strong,
    find_weak,
    personal_section_lines,
)
from finesieve.data.errors import ConfigError, DataError

# --- spaCy -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _SpacyModel:
    nlp: object  # spacy.Language with tok2vec and ner enabled
    lexicon: frozenset[str]  # English words: the lemmatizer's WordNet index, empty if the model has none


_SPACY_CACHE: dict[str, _SpacyModel] = {}


def load_spacy(model: str = DEFAULT_SPACY_MODEL) -> _SpacyModel:
    """The spaCy pipeline, running only what NER needs (tok2vec, ner), and the model's English word list; loaded
    once per process. Raises ConfigError with the fix when spaCy or the model is missing."""
    if model in _SPACY_CACHE:
        return _SPACY_CACHE[model]
    try:
        import spacy
    except ImportError:
        raise ConfigError(
            f"PERSON names are found with spaCy, which is not installed. Install the resumes extra, which brings "
            f"spaCy and the {DEFAULT_SPACY_MODEL} model: {RESUMES_EXTRA_HINT}; or turn NER off (AnonymisationConfig(person_ner=False), "
            "`finesieve anonymise --no-ner`) to find names by the rules alone"
        ) from None
    try:
        # the lemmatizer is loaded for its word list only, never run
        nlp = spacy.load(
            model, exclude=["parser", "tagger", "attribute_ruler", "senter", "morphologizer"], disable=["lemmatizer"]
        )
    except OSError as err:
        raise ConfigError(
            f"spaCy model {model!r} cannot be loaded ({str(err)[:120]}): {RESUMES_EXTRA_HINT} installs "
            f"{DEFAULT_SPACY_MODEL}; or name an installed model in spacy_model, or turn NER off (person_ner=False, "
            "--no-ner)"
        ) from None
    if "ner" not in nlp.pipe_names:
        raise ConfigError(f"spaCy model {model!r} has no NER component: use {DEFAULT_SPACY_MODEL}")
    lexicon: frozenset[str] = frozenset()
    if "lemmatizer" in nlp.component_names:
        lookups = nlp.get_pipe("lemmatizer").lookups
        if lookups.has_table("lemma_index"):
            index = lookups.get_table("lemma_index")
            lexicon = frozenset(w for words in index.values() for w in words if "_" not in w)
    loaded = _SpacyModel(nlp, lexicon)
    _SPACY_CACHE[model] = loaded
    return loaded


def _run_ner(docs: list[Doc], model: _SpacyModel, batch_size: int) -> None:
    """One nlp.pipe over the selected lines of all documents, and over the rule candidates spaCy must confirm."""
    jobs: list[tuple[Doc, int, str, tuple | None]] = []
    for doc in docs:
        jobs += [(doc, offset, line, None) for offset, line in doc.ner_lines]
        for start, end, primary in doc.pending:
            candidate = doc.view[start:end]
            # a name written in capitals is judged as "Marcus O'Connor": spaCy reads capitals as organisations
            jobs.append((doc, start, candidate.title() if candidate.isupper() else candidate, (end, primary)))
    if not jobs:
        return
    for (doc, offset, text, pending), parsed in zip(jobs, model.nlp.pipe((j[2] for j in jobs), batch_size=batch_size)):
        people = [ent for ent in parsed.ents if ent.label_ == "PERSON"]
        if pending is None:
            for ent in people:
                add_ner_person(doc, offset + ent.start_char, offset + ent.end_char)
        elif sum(len(ent.text.split()) for ent in people) >= len(text.split()):  # every word inside a PERSON
            doc.add_name(offset, pending[0], "label", pending[1])


# --- the anonymiser ----------------------------------------------------------------------------------------


def _merge(hits: list[tuple[int, int, str, int]]) -> list[Span]:
    """Overlapping spans become one, typed by its highest-priority member (a label beats a pattern beats NER)."""
    merged: list[list] = []
    for start, end, etype, priority in sorted(hits):
        if merged and start < merged[-1][1]:
            last = merged[-1]
            last[1] = max(last[1], end)
            if priority > last[3]:
                last[2], last[3] = etype, priority
        else:
            merged.append([start, end, etype, priority])
    return [(s, e, t) for s, e, t, _ in merged]


class Anonymiser:
    """Replaces personal data in resumes with `<TYPE>` placeholders, per `AnonymisationConfig`."""

    def __init__(self, config: AnonymisationConfig | None = None) -> None:
        self.config = config if config is not None else AnonymisationConfig()

    def anonymise(self, text: str, field: str | None = None) -> AnonymisationResult:
        """Anonymise one text; `field` picks the per-field entity types from the config."""
        return self.anonymise_texts([text], field)[0]

    def anonymise_texts(self, texts: Sequence[str], field: str | None = None) -> list[AnonymisationResult]:
        """Anonymise many texts, with one spaCy pass over all of them."""
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise TypeError(
                f"Anonymiser takes texts as str; item {bad[0]} is {type(texts[bad[0]]).__name__}: convert missing "
                "values to '' or drop them first"
            )
        wanted = frozenset(self.config.entities_for(field))
        if not wanted:
            return [AnonymisationResult(t, (), {}) for t in texts]
        ner = self.config.person_ner and "PERSON" in wanted
        model = load_spacy(self.config.spacy_model) if ner else None
        docs = [Doc.build(t) for t in texts]
        for doc in docs:
            doc.lexicon = model.lexicon if model else None
            find_contacts(doc)
            doc.personal_section = personal_section_lines(doc)
            find_labels(doc, doc.personal_section)
            find_strong(doc)
            find_weak(doc)
            find_names(doc)
            if model is not None:
                collect_ner_lines(doc)
        if model is not None:
            _run_ner(docs, model, self.config.ner_batch_size)
        return [self._render(doc, wanted) for doc in docs]

    def _render(self, doc: Doc, wanted: frozenset[str]) -> AnonymisationResult:
        if "PERSON" in wanted:
            find_name_mentions(doc)
        spans = _merge([h for h in doc.hits if h[2] in wanted])
        pieces, counts, last = [], Counter(), 0
        for start, end, etype in spans:
            pieces += [doc.text[last:start], self.config.placeholder.format(type=etype)]
            counts[etype] += 1
            last = end
        pieces.append(doc.text[last:])
        return AnonymisationResult("".join(pieces), tuple(spans), dict(counts))


def anonymise_texts(
    texts: Sequence[str], anonymiser: Anonymiser | None = None, field: str | None = None
) -> list[AnonymisationResult]:
    """`Anonymiser.anonymise_texts` with the default configuration unless an anonymiser is given."""
    return (anonymiser or Anonymiser()).anonymise_texts(texts, field)


# --- files -------------------------------------------------------------------------------------------------


def anonymise_file(
    path: str | Path, out: str | Path, spec, anonymiser: Anonymiser, report_path: str | Path | None = None
) -> dict:
    """Anonymise the text column of every row of `path` into `out` (CSV or JSONL, by its extension).

    `spec` is a `ColumnSpec` (text_col, id_col, meta_cols: the columns carried over unchanged, not anonymised).
    Each written row holds the id (or `row`, the 1-based data row), the meta columns and the anonymised text; a
    row whose text is missing or empty is counted by problem and not written. Returns the report, also written
    as JSON to `report_path` when given. The output appears under its name only when complete.
    """
    import pandas as pd

    from finesieve.data.load import iter_chunks
    from finesieve.data.validate import RowValidator
    from finesieve.outputs import atomic_file, write_text

    out = Path(out)
    fmt = {".csv": "csv", ".jsonl": "jsonl"}.get(out.suffix.lower())
    if fmt is None:
        raise ConfigError(f"--out {out}: write .csv or .jsonl (got {out.suffix or 'no extension'!r})")
    id_name = spec.id_col or "row"
    validator = RowValidator(spec, str(path), labelled=False, unique_ids=spec.id_col is not None)
    results: list[AnonymisationResult] = []
    rejected: Counter = Counter()
    n_read = 0
    began = time.perf_counter()
    with atomic_file(out, newline="") as fh:
        for chunk in iter_chunks(path, spec, labelled=False):
            n_read += len(chunk)
            checked = validator.validate(chunk)
            seen = set()
            for problem in checked.problems:
                if problem.row not in seen:  # a row counts once, under its first problem
                    rejected[problem.problem] += 1
                    seen.add(problem.row)
            accepted = checked.accepted
            if accepted.empty:
                continue
            done = anonymiser.anonymise_texts(list(accepted["text_raw"]), field=spec.text_col)
            results.extend(done)
            frame = pd.DataFrame(
                {
                    id_name: accepted["id"] if spec.id_col else accepted["row"],
                    **{c: accepted[c] for c in spec.meta_cols},
                    spec.text_col: [r.text for r in done],
                }
            )
            if fmt == "csv":
                frame.to_csv(fh, index=False, header=fh.tell() == 0)
            else:
                for record in frame.to_dict(orient="records"):
                    fh.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
    if not results and n_read:
        raise DataError(
            f"{path}: none of the {n_read:,} rows has text in column '{spec.text_col}' "
            f"({dict(rejected)}): check --text-col"
        )
    summary = anonymisation_report(results)
    report = {
        "input": str(path),
        "output": str(out),
        "text_col": spec.text_col,
        "rows_read": n_read,
        "rows_written": len(results),
        "rows_rejected": dict(rejected),
        **summary.to_dict(),
        "seconds": round(time.perf_counter() - began, 2),
        "config": anonymiser.config.model_dump(mode="json"),
    }
    if report_path is not None:
        write_text(report_path, json.dumps(report, indent=2, sort_keys=True, ensure_ascii=False) + "\n", "--report")
    return report
