"""`finesieve data redact --file`: stream a file of messages and write their redacted text as JSONL.

    summary = redact_file("messages.csv", "redacted.jsonl", ColumnSpec(text_col="text"), Redactor())

Each accepted row becomes `{"row": N, "<text column>": "<redacted text>"}` (the raw text is never written); rows
whose text is missing, empty or undecodable are counted by problem, not written. The output appears under its
name only when complete (`outputs.atomic_file`), so an interrupted run never leaves half a file behind.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from finesieve.data.load import iter_chunks
from finesieve.data.preprocess import prepare
from finesieve.data.redact import Redactor
from finesieve.data.spec import ColumnSpec
from finesieve.data.validate import RowValidator
from finesieve.outputs import atomic_file


def redact_file(path: str | Path, out: str | Path, spec: ColumnSpec, redactor: Redactor) -> str:
    """Redact every row of `path` into `out`; returns a one-line summary (rows read, written, rejected, found)."""
    validator = RowValidator(spec, str(path), labelled=False, unique_ids=False)
    found, rejected = Counter(), Counter()
    n_read = n_written = 0
    with atomic_file(out) as fh:
        for chunk in iter_chunks(path, spec, labelled=False):
            result = validator.validate(chunk)
            n_read += len(chunk)
            seen = set()
            for problem in result.problems:
                if problem.row not in seen:  # a row counts once, under its first problem
                    rejected[problem.problem] += 1
                    seen.add(problem.row)
            if result.accepted.empty:
                continue
            texts, counts = prepare(result.accepted["text_raw"], redactor=redactor, field=spec.text_col)
            found.update(counts)
            for row, text in zip(result.accepted["row"], texts):
                fh.write(json.dumps({"row": int(row), spec.text_col: text}, ensure_ascii=False) + "\n")
            n_written += len(texts)
    skipped = (
        f", {sum(rejected.values()):,} rejected ({', '.join(f'{k} {v:,}' for k, v in rejected.most_common())})"
        if rejected
        else ""
    )
    return (
        f"redacted {path} -> {out}: {n_read:,} rows read, {n_written:,} written{skipped}; "
        f"{dict(found) or 'nothing found'}"
    )
