"""The `finesieve` command line: thin recipes that parse, validate, and call one function each.

finesieve demo
finesieve data review FILE --out review.html
finesieve eval RUN_OR_SCORER --data FILE --text-col text --label-col label --positive hate_speech --json
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import os
import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from finesieve import __version__
from finesieve.data.errors import ConfigError, FinesieveError, config_error
from finesieve.data.spec import ColumnSpec
from finesieve.outputs import check_output_file, check_outputs, check_run_dir
from finesieve.tables import comparison_table, production_table

app = typer.Typer(
    help="finesieve: from a prompt baseline to a fine-tuned moderation model in production.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Load, validate, redact, dedupe, split and review labelled data.", no_args_is_help=True)
app.add_typer(data_app, name="data")
prefilter_app = typer.Typer(help="The cheap pre-filter in front of the fine-tuned model.", no_args_is_help=True)
app.add_typer(prefilter_app, name="prefilter")
ensemble_app = typer.Typer(help="Stacked ensembles of trained runs.", no_args_is_help=True)
app.add_typer(ensemble_app, name="ensemble")
cascade_app = typer.Typer(
    help="Rules, pre-filter and fine-tuned model composed and fitted to a traffic budget.", no_args_is_help=True
)
app.add_typer(cascade_app, name="cascade")

console = Console(stderr=True)
DEBUG = {"on": bool(os.environ.get("FINESIEVE_DEBUG"))}


def stdout_console() -> Console:
    # Tables are cut to 80 columns when piped; logs and CI deserve the whole table.
    return Console(width=None if sys.stdout.isatty() else 140)


# Options that are not column mappings but recur across commands, spelled once here.
MaxRows = Annotated[int | None, typer.Option("--max-rows", min=1, help="Read only the first N rows.")]
Positive = Annotated[
    str | None,
    typer.Option("--positive", help="Class(es) counted as the violation for binary metrics; comma-separate several."),
]
NormaliseLabels = Annotated[
    bool,
    typer.Option(
        "--normalise-labels",
        help="Map labels that differ only by case, spaces, '_' or '-' (Hate_Speech, hate speech) to "
        "one spelling (the most frequent, or the one in --classes); recorded in the run. "
        "Without it such variants are refused.",
    ),
]
Overwrite = Annotated[
    bool, typer.Option("--overwrite", help="Replace an existing run directory at --out whole (refused without it).")
]
MAX_SEED = 2**32 - 1  # numpy's seeds are 32-bit
Seed = Annotated[int, typer.Option(min=0, max=MAX_SEED, help="Split seed.")]
NBoot = Annotated[int, typer.Option(min=0, max=100_000, help="Bootstrap resamples for confidence intervals (0: none).")]

# The column flags: how to read a user's file. Each is defined once, as (annotation, default), and added to a
# command by @column_options, so every command spells, defaults and documents a flag the same way.
COLUMN_OPTIONS = {
    "text_col": (Annotated[str, typer.Option("--text-col", help="Column holding the message text.")], "text"),
    "label_col": (
        Annotated[
            list[str] | None,
            typer.Option("--label-col", help="Label column; repeat for one 0/1 column per category (multi-label)."),
        ],
        None,
    ),
    "label_sep": (
        Annotated[
            str | None, typer.Option("--label-sep", help="Separator of several labels in one cell (multi-label).")
        ],
        None,
    ),
    "id_col": (Annotated[str | None, typer.Option("--id-col", help="Unique message id column.")], None),
    "time_col": (Annotated[str | None, typer.Option("--time-col", help="Timestamp column.")], None),
    "user_col": (Annotated[str | None, typer.Option("--user-col", help="Sender/user id column.")], None),
    "thread_col": (Annotated[str | None, typer.Option("--thread-col", help="Conversation id column.")], None),
    "meta_col": (
        Annotated[
            list[str] | None, typer.Option("--meta-col", help="Extra column to keep (e.g. for slices); repeatable.")
        ],
        None,
    ),
    "vote_col": (
        Annotated[
            list[str] | None,
            typer.Option(
                "--vote-col",
                help="CLASS=COLUMN: the column counting annotators' votes for CLASS (soft labels); one per class.",
            ),
        ],
        None,
    ),
    "classes": (
        Annotated[str | None, typer.Option("--classes", help="Comma-separated allowed classes; others are rejected.")],
        None,
    ),
    "file_format": (
        Annotated[
            str | None, typer.Option("--format", help="csv, tsv, jsonl or parquet (default: from the extension).")
        ],
        None,
    ),
    "encoding": (Annotated[str, typer.Option("--encoding", help="Text encoding of CSV/TSV/JSONL files.")], "utf-8"),
}
LABELLED = ("text_col", "label_col", "label_sep", "id_col", "classes", "file_format", "encoding")
UNLABELLED = ("text_col", "file_format", "encoding")


ReferenceEmbeddings = Annotated[
    bool,
    typer.Option(
        "--reference-embeddings/--no-reference-embeddings",
        help="Save sentence embeddings of a validation sample with the run, for the monitor's embedding distance "
        "(a few seconds with the packaged MiniLM).",
    ),
]


def column_options(*, labelled: bool, extras: tuple[str, ...] = ()):
    """Give a command the shared column flags and call it with one built `ColumnSpec` as `spec`.

    Typer reads a command's options from its signature, so the wrapper shows typer the command's own parameters
    (without `spec`) plus one keyword parameter per column flag; when called, it takes those flags out, builds the
    spec (a bad mapping fails here, before any work) and calls the command with it. `labelled` picks the set for
    a file with labels (LABELLED) or messages only (UNLABELLED); `extras` adds named COLUMN_OPTIONS beyond it.
    """
    names = (*(LABELLED if labelled else UNLABELLED), *extras)

    def decorate(command):
        own = inspect.signature(command, eval_str=True)  # eval_str: this module's annotations are strings
        flags = [
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                annotation=COLUMN_OPTIONS[name][0],
                default=COLUMN_OPTIONS[name][1],
            )
            for name in names
        ]

        @functools.wraps(command)
        def wrapper(*args, **kwargs):
            spec = column_spec(**{name: kwargs.pop(name) for name in names})
            return command(*args, spec=spec, **kwargs)

        params = [p for p in own.parameters.values() if p.name != "spec"]
        wrapper.__signature__ = own.replace(parameters=[*params, *flags])
        wrapper.column_flags = names  # read by tests/test_cli_columns.py
        return wrapper

    return decorate


def column_spec(
    text_col="text",
    label_col=None,
    label_sep=None,
    id_col=None,
    time_col=None,
    user_col=None,
    thread_col=None,
    meta_col=None,
    vote_col=None,
    classes=None,
    file_format=None,
    encoding="utf-8",
) -> ColumnSpec:
    """The ColumnSpec the column flags describe; a flag that does not parse is named in the error."""
    votes = None
    if vote_col:
        votes = {}
        for item in vote_col:
            cls, sep, col = item.partition("=")
            if not sep or not cls.strip() or not col.strip():
                raise ConfigError(f"--vote-col {item!r}: write CLASS=COLUMN, e.g. --vote-col hate_speech=hate_votes")
            votes[cls.strip()] = col.strip()
    if file_format is not None and file_format.lower() not in ("csv", "tsv", "jsonl", "parquet"):
        raise typer.BadParameter(f"{file_format!r}: use csv, tsv, jsonl or parquet", param_hint="--format")
    if classes is not None and not [c for c in classes.split(",") if c.strip()]:
        raise typer.BadParameter(
            "give at least one class, comma-separated, e.g. --classes spam,ham", param_hint="--classes"
        )
    try:
        return ColumnSpec(
            text_col=text_col,
            label_cols=tuple(label_col or ["label"]),
            label_sep=label_sep or None,
            id_col=id_col,
            time_col=time_col,
            user_col=user_col,
            thread_col=thread_col,
            meta_cols=tuple(meta_col or ()),
            classes=tuple(c.strip() for c in classes.split(",") if c.strip()) if classes else None,
            file_format=file_format.lower() if file_format else None,
            encoding=encoding,
            vote_cols=votes,
        )
    except ValidationError as err:
        raise config_error(err, "column mapping (--text-col, --label-col, --id-col, ...)") from None


def _positive(value: str | None, classes: list[str]) -> list[str]:
    if value:
        positive = [p.strip() for p in value.split(",") if p.strip()]
        if not positive:
            raise typer.BadParameter("name at least one class, e.g. --positive spam", param_hint="--positive")
        unknown = [p for p in positive if p not in classes]
        if unknown:
            raise typer.BadParameter(f"{unknown} not among the data's classes {classes}", param_hint="--positive")
        return positive
    if len(classes) == 2:
        return [sorted(classes)[-1]]
    raise typer.BadParameter(f"name the violation class with --positive (one of {classes})", param_hint="--positive")


def _fraction(value: float | None, flag: str, *, low_open: bool = True, high_open: bool = False) -> None:
    """A share in (0, 1] by default; open or closed ends as asked. Typer's own ranges are closed only."""
    if value is None:
        return
    low_ok = value > 0 if low_open else value >= 0
    high_ok = value < 1 if high_open else value <= 1
    if not (low_ok and high_ok):
        interval = f"{'(' if low_open else '['}0, 1{')' if high_open else ']'}"
        raise typer.BadParameter(f"{value} is not a share in {interval}", param_hint=flag)


def _since_day(value: str | None):
    """--since as a datetime.date (YYYY-MM-DD), or None."""
    import datetime as dt

    try:
        return dt.date.fromisoformat(value) if value else None
    except ValueError as err:
        raise typer.BadParameter(
            f"{value!r} is not a day: write YYYY-MM-DD, e.g. 2026-11-30", param_hint="--since"
        ) from err


def _fmt(value, spec: str = ".3f") -> str:
    """A metric for a summary line; n/a where it is undefined (e.g. AUC on a test split with one class)."""
    return "n/a" if value is None else format(value, spec)


def user_error_message(err: BaseException) -> str | None:
    """The message for an error a user can cause (bad input, bad flag, a file problem), None for a bug."""
    if isinstance(err, FinesieveError):
        return str(err)
    if isinstance(err, ValidationError):
        return str(config_error(err, "settings"))
    if isinstance(err, (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, FileExistsError)):
        fix = {
            FileNotFoundError: "check the path",
            IsADirectoryError: "name a file, not a folder",
            NotADirectoryError: "a part of the path is a file, not a folder: check the path",
            PermissionError: "check the file's permissions, or choose a path you may use",
            FileExistsError: "choose a path that does not exist yet",
        }[type(err)]
        where = err.filename or "a file"
        return f"{where}: {err.strerror or err}. Fix: {fix}"
    if isinstance(err, UnicodeError):
        return f"text that does not decode ({err}). Fix: re-save the file as UTF-8, or pass the right --encoding"
    if isinstance(err, OSError) and err.errno == 28:
        return f"{err.filename or 'the output'}: no space left on the device. Fix: free space, or write elsewhere"
    return None


def _guard(fn):
    """Turn every error a user can cause into a clear message and exit code 2; a bug still raises (traceback).
    `finesieve --debug ...` (or FINESIEVE_DEBUG=1) prints the traceback of any error."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        for name, value in kwargs.items():
            # "nan" and "inf" parse as floats and slip through every range check (nan < x is always False).
            if isinstance(value, float) and not math.isfinite(value):
                raise typer.BadParameter(f"{value} is not a finite number", param_hint="--" + name.replace("_", "-"))
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.TyperException):  # bad flags: typer prints usage, exit code 2
            raise
        except KeyboardInterrupt:
            console.print("interrupted", highlight=False)
            raise typer.Exit(code=130) from None
        except Exception as err:
            message = user_error_message(err)
            if message is None:
                console.print(
                    "[red]finesieve hit a bug[/red] (not a problem with your input); please report it with "
                    "this traceback:",
                    markup=True,
                    highlight=False,
                )
                raise
            if DEBUG["on"]:
                traceback.print_exc(file=sys.stderr)
            # escape: a message may hold square brackets ("pip install 'finesieve[resumes]'") that rich would
            # otherwise read as markup and drop.
            console.print(f"[red]error:[/red] {escape(message)}", markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(code=2) from None

    return wrapper


@app.callback(invoke_without_command=True)
def main(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Print the full traceback of any error.")] = False,
) -> None:
    if debug:
        DEBUG["on"] = True
    if version:
        print(__version__)
        raise typer.Exit()


def _load(path: Path, spec, *, max_rows=None, normalise_labels=False, rejects=None):
    from finesieve.data.load import load_dataset

    return load_dataset(path, spec, max_rows=max_rows, normalise_labels=normalise_labels, rejects_path=rejects)


@app.command()
@_guard
def demo(
    out: Annotated[
        Path, typer.Option(help="Folder for reports and runs (a folder of an earlier demo is replaced).")
    ] = Path("finesieve-demo"),
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="Folder holding the data sets (default: $FINESIEVE_DATA, the "
            "repository's data/, a shared/data above the working "
            "directory, then a download cache)."
        ),
    ] = None,
    max_rows: MaxRows = None,
    n_boot: NBoot = 1000,
    finetune_steps: Annotated[
        int, typer.Option(min=1, help="Fine-tuning steps (bounded so the demo takes minutes).")
    ] = 250,
    model_run: Annotated[
        Path | None,
        typer.Option(help="Reuse this fine-tuned run (trained on the same file with seed 0) instead of fine-tuning."),
    ] = None,
    prices: Annotated[Path | None, typer.Option(help="YAML price table for the cost column.")] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace --out even if it is not an earlier demo's folder.")
    ] = False,
) -> None:
    """The whole story on the embedded defaults: data review, prompt baseline, legacy rules + pre-filter,
    fine-tuning, the cascade fitted to a traffic budget, and the side-by-side table and HTML report."""
    from finesieve.cascade.cost import load_prices
    from finesieve.demo import run_demo

    check_outputs({"--out": out}, {"--data-dir": data_dir, "--model-run": model_run, "--prices": prices})
    run_demo(
        out=out,
        data_dir=data_dir,
        max_rows=max_rows,
        n_boot=n_boot,
        finetune_steps=finetune_steps,
        model_run=model_run,
        prices=load_prices(prices),
        console=stdout_console(),
        overwrite=overwrite,
    )


@data_app.command("validate")
@_guard
@column_options(labelled=True, extras=("time_col", "user_col", "thread_col", "meta_col"))
def data_validate(
    file: Path,
    spec: ColumnSpec,
    normalise_labels: NormaliseLabels = False,
    rejects: Annotated[
        Path | None, typer.Option(help="Write every rejected row, with its problems, to this JSONL file.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON on stdout.")] = False,
) -> None:
    """Check every row of a file in a stream (any size); report what would be rejected and why."""
    from finesieve.data.load import validate_file

    check_outputs({"--rejects": rejects}, {"FILE": file})
    report = validate_file(file, spec, rejects_path=rejects, normalise_labels=normalise_labels)
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        for line in report.summary_lines():
            print(line)
    if report.n_accepted == 0:
        raise typer.Exit(code=1)


@data_app.command("review")
@_guard
@column_options(labelled=True, extras=("time_col", "user_col", "thread_col", "meta_col", "vote_col"))
def data_review(
    file: Path,
    spec: ColumnSpec,
    max_rows: MaxRows = None,
    normalise_labels: NormaliseLabels = False,
    out: Annotated[Path, typer.Option(help="The HTML report (a JSON twin is written beside it).")] = Path(
        "data_review.html"
    ),
    corner: Annotated[list[Path] | None, typer.Option(help="A corner-case file (same columns); repeatable.")] = None,
    seed: Annotated[
        int, typer.Option(min=0, max=MAX_SEED, help="Seed of the split checked for leakage and of the examples.")
    ] = 0,
    noise_check: Annotated[bool, typer.Option(help="Look for labels a cross-validated model disputes.")] = True,
) -> None:
    """Write the data review a person reads before training: balance, lengths, duplicates, leakage, PII, noise."""
    from finesieve.data.review import review, summary_lines, write_review
    from finesieve.data.split import SplitConfig, make_splits

    check_output_file(out)
    check_outputs(
        {"--out": out, "--out (its JSON twin)": out.with_suffix(".json")},
        {"FILE": file, **{f"--corner {p}": p for p in corner or []}},
    )
    dataset = _load(file, spec, max_rows=max_rows, normalise_labels=normalise_labels)
    corner_sets = _corner_sets(corner, spec, normalise_labels)
    splits = make_splits(dataset, SplitConfig(seed=seed))
    result = review(dataset, split=splits.assignment, corner_sets=corner_sets, seed=seed, noise_check=noise_check)
    for line in summary_lines(result):
        print(line)
    path = write_review(result, dataset, out)
    print(f"review written to {path} and {path.with_suffix('.json')}")


@data_app.command("split")
@_guard
@column_options(labelled=True, extras=("time_col", "user_col", "thread_col", "meta_col"))
def data_split(
    file: Path,
    spec: ColumnSpec,
    normalise_labels: NormaliseLabels = False,
    out: Annotated[Path, typer.Option(help="Folder for train/val/test JSONL files and splits.json.")] = Path("splits"),
    test_frac: Annotated[float, typer.Option(help="Share of the random test set, in (0, 1).")] = 0.1,
    val_frac: Annotated[float, typer.Option(help="Share of the validation set, in [0, 1).")] = 0.1,
    seed: Annotated[int, typer.Option(min=0, max=MAX_SEED, help="Seed; with the data hash it fixes the split.")] = 0,
    group_col: Annotated[
        str | None, typer.Option(help="Keep rows sharing this column (thread, user) in one split.")
    ] = None,
    corner: Annotated[
        list[Path] | None, typer.Option(help="A corner-case file, kept out of train/val; repeatable.")
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out folder whole.")] = False,
) -> None:
    """Make a reproducible, stratified, leakage-free train/val/test split; corner-case sets stay separate."""
    from finesieve.data.split_files import write_split_files

    _fraction(test_frac, "--test-frac", high_open=True)
    _fraction(val_frac, "--val-frac", low_open=False, high_open=True)
    if test_frac + val_frac >= 1:
        raise typer.BadParameter(
            f"--test-frac {test_frac} + --val-frac {val_frac} leave nothing to train on: keep their sum below 1",
            param_hint="--test-frac/--val-frac",
        )
    check_outputs({"--out": out}, {"FILE": file, **{f"--corner {p}": p for p in corner or []}})
    check_run_dir(out, overwrite=overwrite)
    for line in write_split_files(
        file,
        spec,
        out,
        test_frac=test_frac,
        val_frac=val_frac,
        seed=seed,
        group_col=group_col,
        corner_files=corner or [],
        overwrite=overwrite,
        normalise_labels=normalise_labels,
    ):
        print(line)


@data_app.command("redact")
@_guard
@column_options(labelled=False)
def data_redact(
    spec: ColumnSpec,
    text: Annotated[str | None, typer.Argument(help="One message to redact (or use --file).")] = None,
    file: Annotated[Path | None, typer.Option(help="A file to redact (the text column only is written).")] = None,
    out: Annotated[Path | None, typer.Option(help="Where to write the redacted file (JSONL).")] = None,
    entities: Annotated[
        str | None,
        typer.Option(help="Comma-separated entity types to redact (default all): EMAIL,PHONE,URL,HANDLE,ADDRESS,CARD"),
    ] = None,
) -> None:
    """Replace personal data with typed placeholders (<PHONE>, <EMAIL>...), one message or a whole file."""
    from finesieve.data.redact import ENTITY_TYPES, RedactionConfig, Redactor

    chosen = tuple(e.strip().upper() for e in entities.split(",") if e.strip()) if entities else None
    if chosen is not None:
        unknown = [e for e in chosen if e not in ENTITY_TYPES]
        if unknown or not chosen:
            raise typer.BadParameter(
                f"{unknown or entities!r}: choose from {','.join(ENTITY_TYPES)}", param_hint="--entities"
            )
    redactor = Redactor(RedactionConfig(entities=chosen) if chosen else RedactionConfig())
    if text is not None:
        if file is not None or out is not None:
            raise typer.BadParameter(
                "give one message as an argument, or --file and --out, not both", param_hint="TEXT"
            )
        from finesieve.data.preprocess import Preprocessing, prepare

        texts, counts = prepare([text], Preprocessing(redaction=redactor.config), redactor=redactor)
        print(json.dumps({"text": texts[0], "counts": dict(counts)}, ensure_ascii=False))
        return
    if file is None or out is None:
        raise typer.BadParameter("give one message as an argument, or --file and --out", param_hint="--file/--out")
    from finesieve.data.redact_file import redact_file

    check_output_file(out)
    check_outputs({"--out": out}, {"--file": file})
    summary = redact_file(file, out, spec, redactor)
    print(summary)


@app.command("anonymise")
@_guard
@column_options(labelled=False, extras=("id_col", "meta_col"))
def anonymise_command(
    spec: ColumnSpec,
    data: Annotated[Path | None, typer.Option("--data", help="File of resumes to anonymise (.csv, .jsonl...).")] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Where to write the anonymised file: .csv or .jsonl.")
    ] = None,
    report: Annotated[Path | None, typer.Option("--report", help="Write the counts and settings as JSON here.")] = None,
    off: Annotated[
        list[str] | None,
        typer.Option("--off", help="An entity type to leave in place (repeatable or comma-separated), e.g. URL."),
    ] = None,
    ner: Annotated[
        bool, typer.Option("--ner/--no-ner", help="Find person names with spaCy too (the `resumes` extra).")
    ] = True,
    measure: Annotated[
        bool, typer.Option("--measure", help="Print recall and retention on the built-in resume cases instead.")
    ] = False,
    cases: Annotated[
        Path | None, typer.Option("--cases", help="With --measure: a YAML of cases shaped like the built-in ones.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report or the measurement as JSON.")] = False,
) -> None:
    """Replace personal data in resumes (names, birth dates, gender, nationality, IDs, contacts...) with <TYPE>."""
    from finesieve.data.anonymise import (
        ANON_ENTITY_TYPES,
        AnonymisationConfig,
        Anonymiser,
        anonymise_file,
        entity_names,
        format_measurement,
        load_resume_cases,
        measure_anonymisation,
    )

    turned_off = entity_names(",".join(off or []), "--off")
    config = AnonymisationConfig(entities=[t for t in ANON_ENTITY_TYPES if t not in turned_off], person_ner=ner)
    console.print(f"anonymisation: {config.model_dump(mode='json')}", highlight=False)
    anonymiser = Anonymiser(config)
    if measure:
        if data is not None or out is not None:
            raise typer.BadParameter("--measure uses the built-in cases (or --cases): drop --data/--out", "--measure")
        measured = measure_anonymisation(anonymiser, load_resume_cases(cases))
        print(json.dumps(measured, indent=2, ensure_ascii=False) if as_json else format_measurement(measured))
        return
    if data is None or out is None:
        raise typer.BadParameter("give --data FILE and --out FILE (or --measure)", param_hint="--data/--out")
    check_output_file(out)
    if report is not None:
        check_output_file(report, "--report")
    check_outputs({"--out": out, "--report": report}, {"--data": data})
    summary = anonymise_file(data, out, spec, anonymiser, report_path=report)
    if as_json:
        print(json.dumps(summary, indent=2, ensure_ascii=False))
        return
    print(
        f"anonymised {data} -> {out}: {summary['rows_read']:,} rows read, {summary['rows_written']:,} written, "
        f"{summary['documents_touched']:,} with personal data, {summary['seconds']}s"
    )
    for etype, n in summary["counts"].items():
        print(f"  {etype:<12} {n:>7,}")


@data_app.command("compose")
@_guard
def data_compose(
    data: Annotated[Path, typer.Option("--data", help="A file of structured records (CSV, TSV, JSONL, Parquet).")],
    out: Annotated[Path, typer.Option("--out", help="CSV to write: the kept columns and the composed 'text'.")],
    field: Annotated[
        list[str],
        typer.Option("--field", help="A column written into the text as 'Name: value'; repeatable, in order."),
    ],
    keep: Annotated[
        list[str] | None, typer.Option("--keep", help="A column copied as it is (id, label); repeatable.")
    ] = None,
    label_column: Annotated[
        str | None,
        typer.Option("--label-col", help="The label column (kept): fields that alone separate it are refused."),
    ] = None,
    allow_leaky: Annotated[
        list[str] | None, typer.Option("--allow-leaky", help="A field to keep although it alone separates the labels.")
    ] = None,
    input_encoding: Annotated[str, typer.Option("--encoding", help="Text encoding of the input.")] = "utf-8",
) -> None:
    """Write structured records (a screening form) as one text per row, so train / eval / score read them."""
    from finesieve.data.compose import compose_file

    check_outputs({"--out": out}, {"--data": data})
    check_output_file(out)
    summary = compose_file(
        data,
        out,
        field,
        keep=keep or [],
        label_col=label_column,
        allow_leaky=allow_leaky or [],
        encoding=input_encoding,
    )
    print(summary)


@data_app.command("dedupe")
@_guard
@column_options(labelled=True)
def data_dedupe(
    file: Path,
    spec: ColumnSpec,
    max_rows: MaxRows = None,
    normalise_labels: NormaliseLabels = False,
    threshold: Annotated[
        float, typer.Option(help="Estimated Jaccard similarity that makes a near-duplicate, in (0, 1].")
    ] = 0.8,
    show: Annotated[int, typer.Option(min=0, help="How many clusters to print.")] = 10,
) -> None:
    """Find exact and near-duplicate messages (MinHash/LSH) and clusters with conflicting labels."""
    from finesieve.data.dedupe import find_duplicates

    _fraction(threshold, "--threshold")
    dataset = _load(file, spec, max_rows=max_rows, normalise_labels=normalise_labels)
    report = find_duplicates(dataset.texts, threshold=threshold)
    conflicts = report.conflicting_label_clusters(["|".join(t) for t in dataset.frame["labels"]])
    print(
        f"{len(dataset):,} messages: {report.n_exact_dupes:,} exact repeats, {report.n_near_dupe_rows:,} rows in "
        f"{len(report.clusters):,} near-duplicate clusters, {len(conflicts):,} with conflicting labels"
    )
    for cluster in report.clusters[:show]:
        rows = dataset.frame.iloc[cluster]
        print(
            f"- {len(cluster)} rows: "
            + " | ".join(
                f"row {r} [{'|'.join(labels)}] {t[:60]!r}"
                for r, labels, t in zip(rows["row"][:3], rows["labels"][:3], rows["text"][:3])
            )
        )


@data_app.command("export-reviews")
@_guard
def data_export_reviews(
    db: Annotated[str, typer.Option("--db", help="The service's database: sqlite:///PATH or postgresql+psycopg://...")],
    run: Annotated[Path, typer.Option("--run", help="The run whose column and class names the file uses.")],
    out: Annotated[Path, typer.Option("--out", help="The CSV to write (refused if it exists, unless --overwrite).")],
    model: Annotated[str | None, typer.Option("--model", help="Only messages this served model decided.")] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Only reviews decided on or after this day (YYYY-MM-DD, UTC).")
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out file.")] = False,
) -> None:
    """Write the reviewers' decisions as a labelled CSV for `finesieve train --data` or `--replay-from`."""

    from finesieve.serve.review_export import export_reviews

    since_day = _since_day(since)
    check_outputs({"--out": out}, {"--run": run})
    print(export_reviews(db, run, out, model=model, since=since_day, overwrite=overwrite))


@app.command("eval")
@_guard
@column_options(labelled=True, extras=("meta_col",))
def eval_command(
    refs: Annotated[list[str], typer.Argument(help="Run directories or scorer names (tfidf, rules, rules:POLICY).")],
    data: Annotated[
        Path,
        typer.Option(
            "--data",
            help="Labelled file to evaluate on, or a functional suite (builtin:hate_speech, a suite YAML, or a "
            "table with a functionality column), reported per functionality.",
        ),
    ],
    spec: ColumnSpec,
    max_rows: MaxRows = None,
    positive: Positive = None,
    normalise_labels: NormaliseLabels = False,
    train: Annotated[
        Path | None, typer.Option(help="Fit scorer names on this file (else on a split of --data).")
    ] = None,
    threshold: Annotated[
        float | None, typer.Option(min=0.0, max=1.0, help="Operating threshold for every scorer, in [0, 1].")
    ] = None,
    target_precision: Annotated[
        float, typer.Option(help="Report the threshold and recall at this precision, in (0, 1].")
    ] = 0.9,
    target_recall: Annotated[
        float, typer.Option(help="Report the threshold and precision at this recall, in (0, 1].")
    ] = 0.9,
    miss_cost: Annotated[float, typer.Option(min=0.0, help="Cost of one missed violation.")] = 10.0,
    false_alarm_cost: Annotated[float, typer.Option(min=0.0, help="Cost of one false alarm.")] = 1.0,
    slice_col: Annotated[
        list[str] | None, typer.Option(help="Report figures per value of this column; repeatable.")
    ] = None,
    baseline: Annotated[
        str | None, typer.Option(help="Scorer the others are compared against (default: the first).")
    ] = None,
    report: Annotated[Path | None, typer.Option(help="Write the HTML report (and its JSON twin) here.")] = None,
    bias: Annotated[
        str | None,
        typer.Option(
            help="Add a bias audit per identity group (subgroup, BPSN and BNSP AUC, false positives on clean "
            "mentions, counterfactual term swaps) with this term list: builtin:identity or a YAML file."
        ),
    ] = None,
    evasion: Annotated[
        bool,
        typer.Option(
            help="Also score the messages evaded (swapped, dropped and doubled letters, joined and split words, "
            "leet, look-alikes, separators) and report the gap to the plain figures."
        ),
    ] = True,
    n_boot: NBoot = 1000,
    seed: Annotated[int, typer.Option(min=0, max=MAX_SEED, help="Seed for splits and bootstrap.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as one JSON object on stdout.")] = False,
) -> None:
    """Evaluate one or more scorers on the same data; with several, compare them side by side with ratios."""
    from finesieve.data.evasion import EvasionConfig
    from finesieve.evals.bias import BiasConfig
    from finesieve.evals.functional import is_functional_suite, load_functional_suite
    from finesieve.evals.harness import CostModel
    from finesieve.evals.report import write_eval_report
    from finesieve.evals.side_by_side import run_side_by_side
    from finesieve.report import json_safe

    _fraction(target_precision, "--target-precision")
    _fraction(target_recall, "--target-recall")
    if miss_cost == 0 and false_alarm_cost == 0:
        raise typer.BadParameter("a miss and a false alarm cannot both cost nothing", param_hint="--miss-cost")
    if report is not None:
        check_output_file(report, "--report")
        check_outputs(
            {"--report": report, "--report (its JSON twin)": report.with_suffix(".json")},
            {"--data": data, "--train": train, **{f"RUN {r}": r for r in refs if Path(r).exists()}},
        )
    bias_config = BiasConfig(terms=bias) if bias else None
    if bias_config is not None:
        bias_config.identity_terms()  # a bad term list fails here, before any scoring
    # --slice-col columns are read as extra (meta) columns too; validated again as one mapping.
    slices = [c for c in slice_col or [] if c not in spec.meta_cols]
    spec = ColumnSpec.model_validate({**spec.model_dump(), "meta_cols": (*spec.meta_cols, *slices)})
    if is_functional_suite(data):  # builtin:hate_speech or a suite file: accuracy per functionality
        dataset = load_functional_suite(data)
    else:
        dataset = _load(data, spec, max_rows=max_rows, normalise_labels=normalise_labels)
    train_set = _load(train, spec, normalise_labels=normalise_labels) if train else None
    pos = _positive(positive, dataset.classes)
    result = run_side_by_side(
        refs,
        dataset,
        positive=pos,
        train=train_set,
        threshold=threshold,
        target_precision=target_precision,
        target_recall=target_recall,
        cost=CostModel(miss_cost, false_alarm_cost),
        slice_cols=slice_col or [],
        baseline=baseline,
        n_boot=n_boot,
        seed=seed,
        bias=bias_config,
        evasion=EvasionConfig(seed=seed) if evasion else None,
    )
    if report:
        path = write_eval_report(
            report,
            result.results,
            result.comparison,
            f"finesieve evaluation: {', '.join(pos)}",
            subtitle=result.evaluated_on,
            notes=result.notes,
        )
        console.print(f"report written to {path}")
    for note in result.notes:
        console.print(f"note: {note}", highlight=False)
    if as_json:
        if len(result.results) == 1:
            payload = {
                **result.results[0].to_dict(),
                "evaluated_on": result.evaluated_on,
                "notes": result.notes,
                "split_overlap": result.comparison.get("split_overlap"),
            }
        else:
            payload = {**result.comparison, "notes": result.notes}
        print(json.dumps(json_safe(payload)))
        return
    stdout_console().print(comparison_table(result.comparison))


@app.command("score")
@_guard
@column_options(labelled=False, extras=("id_col",))
def score_command(
    run: Annotated[Path, typer.Argument(help="Run directory to score with (a cascade or a single scorer).")],
    data: Annotated[Path, typer.Option("--data", help="File of messages to score (labels, if any, are ignored).")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the decisions: .csv or .jsonl.")],
    spec: ColumnSpec,
    chunk_rows: Annotated[
        int, typer.Option(min=1, help="Rows read, scored and written at a time (memory holds one chunk).")
    ] = 5000,
    rejects: Annotated[
        Path | None, typer.Option(help="Write every rejected row, with its problems, to this JSONL file.")
    ] = None,
    include_text: Annotated[
        bool, typer.Option("--include-text", help="Add the redacted text that was scored.")
    ] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run from OUT.partial.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout.")] = False,
) -> None:
    """Score a file of any size in a stream: action, category, deciding stage and per-stage scores per message."""
    from finesieve.serve.batch import score_file

    check_output_file(out)
    if rejects is not None:
        check_output_file(rejects, "--rejects")
    check_outputs({"--out": out, "--rejects": rejects}, {"--data": data, "RUN": run})
    summary = score_file(
        run,
        data,
        out,
        spec=spec,
        chunk_rows=chunk_rows,
        rejects_path=rejects,
        include_text=include_text,
        progress=progress,
        resume=resume,
    )
    print(json.dumps(summary.to_dict(), indent=2) if as_json else summary.summary_line())
    if summary.n_scored == 0:
        raise typer.Exit(code=1)


def _corner_sets(corner: list[Path] | None, spec, normalise_labels: bool) -> dict:
    """Corner-case sets by name: a file read with the data's columns, or a functional suite (`builtin:NAME`, a
    YAML suite, or a table with a `functionality` column; `evals.functional`), reported per functionality."""
    from finesieve.evals.functional import is_functional_suite, load_functional_suite

    sets = {}
    for p in corner or []:
        if is_functional_suite(p):
            name = str(p).removeprefix("builtin:") if str(p).startswith("builtin:") else p.stem
            sets[name] = load_functional_suite(p)
        else:
            sets[p.stem] = _load(p, spec.model_copy(update={"vote_cols": None}), normalise_labels=normalise_labels)
    return sets


def _check_run_output(out: Path, overwrite: bool, inputs: dict) -> None:
    """Before any work: the run directory may be written, and replacing it destroys no input."""
    check_outputs({"--out": out}, inputs)
    check_run_dir(out, overwrite=overwrite)


def _metrics_line(m: dict) -> str:
    line = (
        f"test ROC AUC {_fmt(m['roc_auc'])}, PR AUC {_fmt(m['pr_auc'])}, precision {_fmt(m['precision'])}, "
        f"recall {_fmt(m['recall'])}"
    )
    if "multiclass" in m:  # three or more classes: the argmax class's figures too (screening)
        line += f", accuracy {_fmt(m['multiclass']['accuracy'])}, macro-F1 {_fmt(m['multiclass']['macro_f1'])}"
    return line


@app.command("fit")
@_guard
@column_options(labelled=True)
def fit_command(
    ref: Annotated[str, typer.Argument(help="Reference scorer: tfidf, rules, rules:builtin:NAME or rules:PATH.yaml.")],
    data: Annotated[Path, typer.Option("--data", help="Labelled training file (split into train/val/test).")],
    out: Annotated[Path, typer.Option("--out", help="Run directory to write.")],
    spec: ColumnSpec,
    max_rows: MaxRows = None,
    positive: Positive = None,
    normalise_labels: NormaliseLabels = False,
    overwrite: Overwrite = False,
    seed: Seed = 0,
    corner: Annotated[
        list[Path] | None, typer.Option(help="Corner-case file evaluated separately; repeatable.")
    ] = None,
) -> None:
    """Fit a reference scorer and write a run directory (model, config, data hash, split, metrics)."""
    from finesieve.data.split import SplitConfig
    from finesieve.runs import new_reference_scorer
    from finesieve.train.recipe import train_reference

    new_reference_scorer(ref)  # an unknown name fails now, before the data is read
    _check_run_output(out, overwrite, {"--data": data, **{f"--corner {p}": p for p in corner or []}})
    dataset = _load(data, spec, max_rows=max_rows, normalise_labels=normalise_labels)
    corner_sets = _corner_sets(corner, spec, normalise_labels)
    pos = _positive(positive, dataset.classes)
    fitted = train_reference(
        ref,
        dataset,
        positive=pos,
        out=out,
        split_config=SplitConfig(seed=seed),
        corner_sets=corner_sets,
        overwrite=overwrite,
    )
    print(
        f"{ref}: {_metrics_line(fitted.test_result.to_dict())} at threshold {fitted.threshold:.3f}; "
        f"run written to {fitted.run_dir}"
    )


@app.command("baseline")
@_guard
@column_options(labelled=True)
def baseline_command(
    data: Annotated[
        Path, typer.Option("--data", help="Labelled file (split into train/val/test; nothing is trained).")
    ],
    out: Annotated[Path, typer.Option("--out", help="Run directory to write.")],
    spec: ColumnSpec,
    kind: Annotated[
        str,
        typer.Option(
            help="embedding (zero-shot on the packaged MiniLM, offline) or llm (label-token "
            "probabilities of a causal LM)."
        ),
    ] = "embedding",
    prompt: Annotated[
        str | None,
        typer.Option(
            help="Task prompt: builtin:NAME or a YAML path (default: the built-in prompt whose classes match the data)."
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="llm: HF model id/path, or the model name at --base-url; "
            "embedding: a sentence-transformers model (default packaged MiniLM)."
        ),
    ] = None,
    backend: Annotated[
        str, typer.Option(help="llm: hf (local causal LM) or openai (any OpenAI-compatible endpoint).")
    ] = "hf",
    base_url: Annotated[
        str | None, typer.Option(help="llm/openai: endpoint root, e.g. http://localhost:8000/v1.")
    ] = None,
    api: Annotated[str, typer.Option(help="llm/openai: completions or chat.")] = "completions",
    few_shot: Annotated[bool, typer.Option(help="Add the prompt's worked examples.")] = False,
    max_rows: MaxRows = None,
    positive: Positive = None,
    normalise_labels: NormaliseLabels = False,
    overwrite: Overwrite = False,
    seed: Seed = 0,
) -> None:
    """Score the data with a prompt baseline (zero- or few-shot) and write its run, to compare fine-tunes against."""
    from finesieve.data.split import SplitConfig
    from finesieve.train.baseline import BASELINE_KINDS, fit_prompt_baseline

    if kind not in BASELINE_KINDS:
        raise typer.BadParameter(f"{kind!r}: choose embedding or llm", param_hint="--kind")
    if kind == "llm" and not model:
        raise typer.BadParameter(
            "name the LLM with --model (a HF id or path, or the endpoint's model name)", param_hint="--model"
        )
    _check_run_output(out, overwrite, {"--data": data})
    dataset = _load(data, spec, max_rows=max_rows, normalise_labels=normalise_labels)
    pos = _positive(positive, dataset.classes)
    fitted, task_prompt = fit_prompt_baseline(
        dataset,
        kind=kind,
        positive=pos,
        out=out,
        prompt=prompt,
        model=model,
        backend=backend,
        base_url=base_url,
        api=api,
        few_shot=few_shot,
        split_config=SplitConfig(seed=seed),
        overwrite=overwrite,
    )
    m = fitted.test_result.to_dict()
    print(
        f"{BASELINE_KINDS[kind]} ({'few' if few_shot else 'zero'}-shot, prompt {task_prompt}): {_metrics_line(m)}; "
        f"{m['messages_per_second']} msgs/s; run written to {fitted.run_dir}"
    )


@prefilter_app.command("train")
@_guard
@column_options(labelled=True)
def prefilter_train(
    data: Annotated[Path, typer.Option("--data", help="Labelled training file (split into train/val/test).")],
    out: Annotated[Path, typer.Option("--out", help="Run directory to write.")],
    spec: ColumnSpec,
    kind: Annotated[str, typer.Option(help="char_cnn (a character CNN, robust to obfuscation) or tfidf.")] = "char_cnn",
    max_rows: MaxRows = None,
    positive: Positive = None,
    normalise_labels: NormaliseLabels = False,
    overwrite: Overwrite = False,
    set_: Annotated[list[str] | None, typer.Option("--set", help="A scorer setting as key=value; repeatable.")] = None,
    seed: Seed = 0,
    corner: Annotated[
        list[Path] | None, typer.Option(help="Corner-case file evaluated separately; repeatable.")
    ] = None,
    teacher: Annotated[
        Path | None,
        typer.Option(
            help="Distil from this run (trained on the same data and --seed, e.g. the fine-tuned model or an "
            "ensemble): the CNN learns from its probabilities on the training split as well as the labels."
        ),
    ] = None,
    distill_weight: Annotated[
        float | None,
        typer.Option(min=0.0, max=1.0, help="Weight of the teacher's probabilities in the target, 0-1 (default 0.5)."),
    ] = None,
) -> None:
    """Train the pre-filter (character CNN by default, or TF-IDF + logistic regression) into a run directory."""
    from finesieve.data.split import SplitConfig
    from finesieve.train.prefilter import PREFILTER_KINDS, fit_prefilter, prefilter_scorer

    if kind not in PREFILTER_KINDS:
        raise typer.BadParameter(f"{kind!r}: choose one of {sorted(PREFILTER_KINDS)}", param_hint="--kind")
    scorer = prefilter_scorer(kind, set_ or [])  # a misspelt --set fails now, before the data is read
    if distill_weight is not None and teacher is None:
        raise typer.BadParameter("a distillation weight needs --teacher RUN", param_hint="--distill-weight")
    _check_run_output(
        out, overwrite, {"--data": data, "--teacher": teacher, **{f"--corner {p}": p for p in corner or []}}
    )
    dataset = _load(data, spec, max_rows=max_rows, normalise_labels=normalise_labels)
    corner_sets = _corner_sets(corner, spec, normalise_labels)
    pos = _positive(positive, dataset.classes)
    fitted = fit_prefilter(
        scorer,
        kind,
        dataset,
        positive=pos,
        out=out,
        split_config=SplitConfig(seed=seed),
        corner_sets=corner_sets,
        overwrite=overwrite,
        teacher=teacher,
        distill_weight=distill_weight,
    )
    m = fitted.test_result.to_dict()
    print(
        f"{kind}: {_metrics_line(m)} at threshold {fitted.threshold:.3f}; {m['messages_per_second']} msgs/s; "
        f"run written to {fitted.run_dir}"
    )


@ensemble_app.command("fit")
@_guard
def ensemble_fit(
    runs: Annotated[
        list[Path], typer.Argument(help="Two or more run directories trained on the same data and --seed.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Run directory to write.")],
    data: Annotated[
        Path | None, typer.Option("--data", help="The runs' data file (default: the one the first run recorded).")
    ] = None,
    name: Annotated[
        list[str] | None, typer.Option(help="A member's name, one per run in order (default: the folders' names).")
    ] = None,
    positive: Positive = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="A stacker setting as key=value (C, cv_folds...); repeatable.")
    ] = None,
    corner: Annotated[
        list[Path] | None, typer.Option(help="Corner-case file evaluated separately; repeatable.")
    ] = None,
    n_boot: NBoot = 1000,
    overwrite: Overwrite = False,
) -> None:
    """Stack trained runs (e.g. the fine-tuned model, the char-CNN and TF-IDF): a logistic-regression stacker fitted on
    their validation split, evaluated on their test split, saved as a run that eval, score, cascade fit and serve take."""
    from finesieve.models.ensemble import EnsembleConfig
    from finesieve.runs import run_manifest
    from finesieve.train.config import parse_assignments, validate_settings
    from finesieve.train.ensemble import fit_ensemble

    config = validate_settings(EnsembleConfig, parse_assignments(set_ or []), "--set (stacker settings)")
    _check_run_output(out, overwrite, {"--data": data, **{f"RUN {r}": r for r in runs}})
    # The runs' own columns, so --data (and corner files) read as their data did.
    recorded = run_manifest(runs[0]).data.get("column_spec") if runs else None
    spec = ColumnSpec.model_validate(recorded or {}).model_copy(update={"vote_cols": None})
    dataset = _load(data, spec) if data is not None else None
    fitted = fit_ensemble(
        runs,
        out,
        dataset=dataset,
        names=name,
        positive=[p.strip() for p in positive.split(",")] if positive else None,
        config=config,
        corner_sets=_corner_sets(corner, spec, False),
        n_boot=n_boot,
        overwrite=overwrite,
    )
    m = fitted.test_result.to_dict()
    weights = ", ".join(f"{k} {v:.2f}" for k, v in fitted.scorer.weights_.items())
    print(
        f"ensemble ({weights}): {_metrics_line(m)} at threshold {fitted.threshold:.3f}; run written to {fitted.run_dir}"
    )


@app.command("train")
@_guard
@column_options(labelled=True, extras=("vote_col",))
def train_command(
    data: Annotated[
        Path, typer.Option("--data", help="Labelled training file; validation and test splits are made from it.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Run directory to write.")],
    spec: ColumnSpec,
    max_rows: MaxRows = None,
    positive: Positive = None,
    normalise_labels: NormaliseLabels = False,
    overwrite: Overwrite = False,
    soft_labels: Annotated[
        float | None,
        typer.Option(min=0.0, max=1.0, help="Weight of the vote shares (from --vote-col) in the training target, 0-1."),
    ] = None,
    config: Annotated[Path | None, typer.Option(help="YAML file of fine-tuning settings (see FinetuneConfig).")] = None,
    model: Annotated[
        str | None,
        typer.Option(help="Base model: HF id, local path, packaged:all-MiniLM-L6-v2 or packaged:all-mpnet-base-v2."),
    ] = None,
    method: Annotated[str | None, typer.Option(help="lora (default), qlora (GPU) or full.")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Peak learning rate (> 0).")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Messages per step.")] = None,
    max_epochs: Annotated[float | None, typer.Option(help="Upper bound on epochs (> 0).")] = None,
    max_steps: Annotated[int | None, typer.Option(min=1, help="Upper bound on optimiser steps.")] = None,
    replay_from: Annotated[str | None, typer.Option(help="Earlier run (or data file) to replay rows from.")] = None,
    replay_fraction: Annotated[
        float | None, typer.Option(min=0.0, max=1.0, help="Replayed rows as a share of the new rows.")
    ] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI ('none' turns tracking off).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Any other setting as key=value; repeatable.")] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue from the checkpoint an interrupted run left in OUT.partial.")
    ] = False,
    seed: Seed = 0,
    corner: Annotated[
        list[Path] | None, typer.Option(help="Corner-case file evaluated separately; repeatable.")
    ] = None,
    reference_embeddings: ReferenceEmbeddings = True,
) -> None:
    """Fine-tune a transformer (LoRA by default) and write a run directory scored by `finesieve eval RUN`."""
    from finesieve.data.split import SplitConfig
    from finesieve.train.config import load_finetune_config
    from finesieve.train.finetune import train_finetune

    for flag, value in (("--learning-rate", learning_rate), ("--max-epochs", max_epochs)):
        if value is not None and not value > 0:
            raise typer.BadParameter(f"{value} must be above 0", param_hint=flag)
    overrides = {
        k: v
        for k, v in dict(
            model=model,
            method=method,
            learning_rate=learning_rate,
            batch_size=batch_size,
            max_epochs=max_epochs,
            max_steps=max_steps,
            replay_from=replay_from,
            replay_fraction=replay_fraction,
            tracking_uri=tracking_uri,
            soft_labels=soft_labels,
        ).items()
        if v is not None
    }
    cfg = load_finetune_config(config, overrides, set_ or [])
    _check_run_output(
        out,
        overwrite,
        {
            "--data": data,
            "--config": config,
            "--replay-from": replay_from,
            **{f"--corner {p}": p for p in corner or []},
        },
    )
    console.print(f"fine-tuning with {cfg.model_dump_json()}", highlight=False)
    dataset = _load(data, spec, max_rows=max_rows, normalise_labels=normalise_labels)
    # Corner-case sets are only scored, so they need no vote columns.
    corner_sets = _corner_sets(corner, spec, normalise_labels)
    pos = _positive(positive, dataset.classes)
    fitted = train_finetune(
        cfg,
        dataset,
        positive=pos,
        out=out,
        split_config=SplitConfig(seed=seed),
        corner_sets=corner_sets,
        resume=resume,
        overwrite=overwrite,
        reference_embeddings=reference_embeddings,
    )
    m = fitted.test_result.to_dict()
    t = fitted.scorer.training_
    print(
        f"fine-tuned {cfg.model} ({cfg.method}): {_metrics_line(m)} at threshold {fitted.threshold:.3f}; "
        f"{t['steps']} steps in {t['seconds']:.0f} s; scoring {m['messages_per_second']} msgs/s; run written to {fitted.run_dir}"
    )


GATE_REFUSED = 4  # `finesieve retrain`'s exit code when the regression gate refuses the candidate


@app.command("retrain")
@_guard
def retrain_command(
    parent_run: Annotated[
        Path, typer.Argument(help="The run to retrain; its recorded data file and splits.json are reloaded.")
    ],
    fresh: Annotated[
        Path,
        typer.Option(
            "--fresh",
            help="Fresh labelled rows in the parent's text and label columns (as data export-reviews writes); with "
            "--db, the file the reviewers' decisions are exported to first (refused if it exists).",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Run directory to write, with gate.json and gate.html in it.")],
    replay_from: Annotated[str | None, typer.Option(help="Earlier run (or data file) to replay rows from.")] = None,
    replay_fraction: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Replayed rows as a share of the new training rows.")
    ] = 0.2,
    db: Annotated[
        str | None,
        typer.Option(help="Take the fresh rows from the service's database: its reviews, exported to --fresh."),
    ] = None,
    model: Annotated[str | None, typer.Option(help="With --db: only messages this served model decided.")] = None,
    since: Annotated[
        str | None, typer.Option(help="With --db: only reviews decided on or after this day (YYYY-MM-DD, UTC).")
    ] = None,
    drifted: Annotated[
        list[Path] | None,
        typer.Option(
            help="A labelled random sample of the new traffic (not only reviewed rows): the gate asks it to improve; "
            "repeatable."
        ),
    ] = None,
    gate_config: Annotated[
        Path | None, typer.Option(help="YAML file of regression gate settings (see evals.gate.GateConfig).")
    ] = None,
    margin: Annotated[
        float | None, typer.Option(min=0.0, max=0.5, help="Non-inferiority margin on ROC AUC (default 0.01).")
    ] = None,
    overwrite: Overwrite = False,
    seed: Annotated[
        int, typer.Option(min=0, max=MAX_SEED, help="Seed of the fresh rows' split and of the replay sample.")
    ] = 0,
) -> None:
    """Retrain a run on fresh labelled rows (plus its training split, and replay), then gate the candidate against it.

    Exit code 0 when the gate promotes the candidate, 4 when it refuses (nothing regresses beyond the margin on the
    fixed sets, and the fresh slice improves, or not); the run directory is written either way, with the evidence
    in gate.json and gate.html. Exit code 2 for bad input.
    """

    from finesieve.evals.gate import GateConfig
    from finesieve.serve.review_export import export_reviews
    from finesieve.train.retrain import load_fresh, retrain

    if db is None and (model is not None or since is not None):
        raise typer.BadParameter(
            "--model and --since select reviews from the database: give --db too", param_hint="--db"
        )
    since_day = _since_day(since)

    gate = (
        GateConfig.from_yaml(gate_config, margin=margin)
        if gate_config is not None
        else GateConfig(**({"margin": margin} if margin is not None else {}))
    )
    if db is not None:
        check_outputs({"--fresh": fresh}, {"PARENT_RUN": parent_run})
    _check_run_output(
        out,
        overwrite,
        {
            "PARENT_RUN": parent_run,
            **({} if db is not None else {"--fresh": fresh}),
            "--gate-config": gate_config,
            "--replay-from": replay_from,
            **{f"--drifted {p}": p for p in drifted or []},
        },
    )
    if db is not None:  # the reviews become a file first, so the new run's manifest can name its fresh data
        print(export_reviews(db, parent_run, fresh, model=model, since=since_day))
    fitted, verdict = retrain(
        parent_run,
        load_fresh(fresh, parent_run),
        out,
        replay_from=replay_from,
        drifted={p.stem: load_fresh(p, parent_run) for p in drifted or []},
        replay_fraction=replay_fraction,
        gate=gate,
        seed=seed,
        overwrite=overwrite,
    )
    print(f"{verdict.summary()}; run written to {fitted.run_dir} (evidence in gate.html)")
    if not verdict.promote:
        raise typer.Exit(code=GATE_REFUSED)


def _grid_axes(items: list[str]) -> dict[str, list]:
    """`--grid key=v1,v2` items -> {key: [values]}; values stay strings, typed when the config validates them."""
    import difflib

    from finesieve.models.finetune_config import FinetuneConfig

    axes: dict[str, list] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep or not key or not values.strip():
            raise typer.BadParameter(f"{item!r}: write key=v1,v2 (e.g. method=lora,full)", param_hint="--grid")
        if key not in FinetuneConfig.model_fields:
            close = difflib.get_close_matches(key, list(FinetuneConfig.model_fields), n=1)
            hint = f"; did you mean {close[0]}" if close else ""
            raise typer.BadParameter(f"{key!r}: no such setting{hint}", param_hint="--grid")
        axes[key] = [v.strip() for v in values.split(",") if v.strip()]
    return axes


def _grid_values(text: str, cast, flag: str) -> list:
    try:
        values = [cast(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(f"{text!r}: give comma-separated numbers, e.g. 1e-4,3e-4", param_hint=flag) from None
    if not values or any(v <= 0 for v in values):
        raise typer.BadParameter(f"{text!r}: give one or more values above 0, comma-separated", param_hint=flag)
    return values


@app.command("sweep")
@_guard
@column_options(labelled=True, extras=("vote_col",))
def sweep_command(
    data: Annotated[Path, typer.Option("--data", help="Labelled file; trials are judged on its validation split.")],
    spec: ColumnSpec,
    out: Annotated[Path, typer.Option("--out", help="Folder for sweep.json.")] = Path("sweep"),
    learning_rate: Annotated[
        str | None, typer.Option(help="Comma-separated learning rates (default 1e-4,3e-4,1e-3 without --grid).")
    ] = None,
    batch_size: Annotated[
        str | None, typer.Option(help="Comma-separated batch sizes (default 16,32 without --grid).")
    ] = None,
    grid: Annotated[
        list[str] | None,
        typer.Option(
            help="Another axis as key=v1,v2 over any fine-tuning setting (method=lora,full; soft_labels=0,0.5; "
            "lora_r=8,16); repeatable."
        ),
    ] = None,
    max_steps: Annotated[int, typer.Option(min=1, help="Steps per trial (keep it short).")] = 300,
    max_rows: MaxRows = None,
    positive: Positive = None,
    normalise_labels: NormaliseLabels = False,
    config: Annotated[Path | None, typer.Option(help="YAML file of the other fine-tuning settings.")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Another fixed setting as key=value; repeatable.")
    ] = None,
    seed: Seed = 0,
) -> None:
    """A sweep over fine-tuning settings (learning rate x batch size, or any --grid axes), judged on the validation
    split plain and evaded (never the test split)."""
    from rich.table import Table

    from finesieve.data.split import SplitConfig
    from finesieve.models.finetune_config import FinetuneConfig
    from finesieve.train.config import load_finetune_config
    from finesieve.train.sweep import run_sweep

    axes = _grid_axes(grid or [])
    if not axes and learning_rate is None and batch_size is None:
        learning_rate, batch_size = "1e-4,3e-4,1e-3", "16,32"  # the classic short sweep
    if learning_rate is not None:
        axes["learning_rate"] = _grid_values(learning_rate, float, "--learning-rate")
    if batch_size is not None:
        axes["batch_size"] = _grid_values(batch_size, int, "--batch-size")
    base = load_finetune_config(config, {"max_steps": max_steps}, set_ or [])
    for key, values in axes.items():  # every value must make a valid config (typed here), before hours of training
        typed = []
        for value in values:
            try:
                typed.append(getattr(FinetuneConfig.model_validate({**base.model_dump(), key: value}), key))
            except ValidationError as err:
                raise typer.BadParameter(
                    f"{key}={value}: {err.errors()[0]['msg']}", param_hint=f"--grid {key}=..."
                ) from None
        axes[key] = typed
    check_outputs({"--out": out}, {"--data": data, "--config": config})
    check_run_dir(out, overwrite=True)  # a folder (existing or not) that sweep.json is written into; not a file
    dataset = _load(data, spec, max_rows=max_rows, normalise_labels=normalise_labels)
    pos = _positive(positive, dataset.classes)
    trials = run_sweep(base, dataset, axes, positive=pos, out=out, split_config=SplitConfig(seed=seed))
    table = Table(title=f"sweep on the validation split ({', '.join(pos)}); best first")
    for col in (*axes, "val PR AUC [95%]", "val ROC AUC", "evaded ROC AUC", "steps", "seconds"):
        table.add_column(col, justify="right")
    for t in trials:
        ci = t.get("val_pr_auc_ci95")
        table.add_row(
            *(f"{t[k]:g}" if isinstance(t[k], float) else str(t[k]) for k in axes),
            _fmt(t["val_pr_auc"], ".4f") + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""),
            _fmt(t["val_roc_auc"], ".4f"),
            _fmt(t.get("val_evaded_roc_auc"), ".4f"),
            str(t["steps"]),
            f"{t['seconds']:.0f}",
        )
    stdout_console().print(table)
    print(f"trials written to {out / 'sweep.json'}; train the best with finesieve train --set KEY=VALUE for each axis")


@cascade_app.command("fit")
@_guard
@column_options(labelled=True)
def cascade_fit(
    data: Annotated[
        Path,
        typer.Option(
            "--data",
            help="The labelled file the fine-tuned model was trained on (its "
            "validation split fits the cascade, its test split measures it).",
        ),
    ],
    model: Annotated[Path, typer.Option("--model", help="Run directory of the fine-tuned model (finesieve train).")],
    out: Annotated[Path, typer.Option("--out", help="Run directory to write for the cascade.")],
    spec: ColumnSpec,
    prefilter: Annotated[
        Path | None, typer.Option(help="Run directory of the pre-filter (finesieve prefilter train).")
    ] = None,
    rules: Annotated[
        str | None, typer.Option(help="Rules: builtin:NAME, a policy YAML, or a rules run directory.")
    ] = None,
    budget: Annotated[
        float, typer.Option(help="Largest share of messages that may reach the fine-tuned model, in (0, 1].")
    ] = 0.20,
    recall_floor: Annotated[
        float, typer.Option(help="Least recall kept, as a share of the model's own, in (0, 1].")
    ] = 0.98,
    review_precision: Annotated[
        float | None, typer.Option(help="Least review-queue precision, in (0, 1] (default 0.9x the model's own).")
    ] = None,
    block_precision: Annotated[
        float, typer.Option(help="Least precision (95% lower bound) to block without review, in (0, 1].")
    ] = 0.95,
    no_block: Annotated[
        bool, typer.Option("--no-block", help="Never block outright: everything flagged is reviewed.")
    ] = False,
    method: Annotated[str, typer.Option(help="conformal (finite-sample guarantees) or empirical.")] = "conformal",
    on_infeasible: Annotated[
        str, typer.Option(help="When targets conflict: recall (route more), budget, or error.")
    ] = "recall",
    prices: Annotated[
        Path | None, typer.Option(help="YAML price table (fields of PriceTable) for cost per million.")
    ] = None,
    max_rows: MaxRows = None,
    normalise_labels: NormaliseLabels = False,
    overwrite: Overwrite = False,
    n_boot: NBoot = 1000,
    as_json: Annotated[bool, typer.Option("--json", help="Print the fit and test figures as JSON on stdout.")] = False,
    reference_embeddings: ReferenceEmbeddings = True,
) -> None:
    """Fit the cascade's thresholds on the model's validation split and measure it on the test split."""
    from finesieve.cascade.build import fit_cascade, summary_rows
    from finesieve.cascade.cost import load_prices
    from finesieve.cascade.fit import CascadeConfig
    from finesieve.report import json_safe

    for flag, value in (
        ("--budget", budget),
        ("--recall-floor", recall_floor),
        ("--review-precision", review_precision),
        ("--block-precision", block_precision),
    ):
        _fraction(value, flag)
    try:
        config = CascadeConfig(
            budget=budget,
            recall_floor=recall_floor,
            review_precision=review_precision,
            block_precision=block_precision,
            block_categories=[] if no_block else None,
            method=method,
            on_infeasible=on_infeasible,
        )
    except ValidationError as err:
        raise config_error(err, "cascade settings (--method, --on-infeasible, ...)") from None
    rules_input = {"--rules": rules} if rules and Path(rules).exists() else {}
    _check_run_output(
        out, overwrite, {"--data": data, "--model": model, "--prefilter": prefilter, "--prices": prices, **rules_input}
    )
    console.print(f"cascade fit with {config.model_dump_json()}", highlight=False)
    price_table = load_prices(prices)
    dataset = _load(data, spec, max_rows=max_rows, normalise_labels=normalise_labels)
    run = fit_cascade(
        dataset,
        model_run=model,
        prefilter_run=prefilter,
        rules=rules,
        config=config,
        prices=price_table,
        out=out,
        n_boot=n_boot,
        overwrite=overwrite,
        reference_embeddings=reference_embeddings,
    )
    for message in run.fit.messages:
        console.print(f"[yellow]warning:[/yellow] {message}", highlight=False)
    if as_json:
        print(
            json.dumps(
                json_safe(
                    {
                        "fit": run.fit.to_dict(),
                        "test": summary_rows(run),
                        "costs": run.costs,
                        "run_dir": str(run.run_dir),
                    }
                )
            )
        )
        return
    c = run.fit.chosen
    stdout_console().print(
        production_table(
            summary_rows(run),
            title=f"held-out test split (n={len(run.splits.dataset('test')):,})",
            currency=price_table.currency,
        )
    )
    print(
        f"validation: {c['route']:.1%} routed to the model, recall {_fmt(c['recall'])} "
        f"({c['recall_retention']:.1%} of the model's), queue precision {_fmt(c['precision'])}; "
        f"thresholds escalate {c['escalate']}, review {c['review']:.4f}; targets "
        f"{'met' if run.fit.feasible else 'NOT all met'}; guarantee: {run.fit.guarantee}"
    )
    print(f"run written to {run.run_dir}")


@app.command("monitor")
@_guard
def monitor(
    run: Annotated[Path, typer.Argument(help="The served model's run directory (its reference statistics).")],
    db: Annotated[
        str | None,
        typer.Option(help="The service's database: sqlite:///PATH or postgresql+psycopg://... (or give --scored)."),
    ] = None,
    scored: Annotated[
        Path | None, typer.Option(help="A file `finesieve score --include-text` wrote, instead of the database.")
    ] = None,
    reviews: Annotated[
        Path | None, typer.Option(help="With --scored: the reviews `finesieve data export-reviews` wrote.")
    ] = None,
    scored_time_col: Annotated[
        str | None, typer.Option("--time-col", help="With --scored: the column of each message's time.")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="The model's serving name (default: the run folder's name).")
    ] = None,
    since: Annotated[str | None, typer.Option(help="Period start, ISO date or time (UTC), e.g. 2026-12-01.")] = None,
    until: Annotated[str | None, typer.Option(help="Period end (exclusive), ISO date or time (UTC).")] = None,
    every: Annotated[
        str | None, typer.Option(help="Cut the period into windows of this length (30m, 1h, 1d, 1w).")
    ] = None,
    thresholds: Annotated[
        Path | None, typer.Option(help="YAML of alert thresholds (psi, min_queue_precision, max_overturn_rate, ...).")
    ] = None,
    psi_alert: Annotated[
        float | None, typer.Option(min=0.0, help="Alert when a class's score PSI exceeds this (default 0.25).")
    ] = None,
    embeddings: Annotated[
        bool, typer.Option(help="Measure the embedding distance when the run saved reference embeddings.")
    ] = True,
    webhook: Annotated[str | None, typer.Option(help="POST the alerts (JSON) to this URL when any is raised.")] = None,
    out: Annotated[Path | None, typer.Option(help="Also write the report as JSON here (never overwritten).")] = None,
    html: Annotated[
        Path | None, typer.Option(help="Also write the report as an HTML page with plots (never overwritten).")
    ] = None,
) -> None:
    """Slow evals from reviewers (queue precision, overturn rate, audit-based recall, with intervals), score and
    input drift against the run's validation statistics and the n-grams that drive it, for the service's messages
    or a scored file, in one window or over time (--every). Exit code 3 on an alert."""
    from datetime import datetime

    from finesieve.monitor.alerts import AlertThresholds, send_webhook
    from finesieve.monitor.report import write_monitor_report
    from finesieve.outputs import check_output_file, write_text
    from finesieve.serve.monitoring import monitor as monitor_traffic
    from finesieve.serve.monitoring import over_time, parse_every, report_alerts

    def when(value: str | None, flag: str) -> datetime | None:
        if value is None:
            return None
        try:
            return datetime.fromisoformat(value).replace(tzinfo=None)
        except ValueError as err:
            raise typer.BadParameter(f"{value!r} is not an ISO date or time, e.g. 2026-12-01", param_hint=flag) from err

    for flag, path in (("--out", out), ("--html", html)):
        if path is not None:
            if path.exists():
                raise typer.BadParameter(f"{path} exists already: choose another file", param_hint=flag)
            check_output_file(path)  # a folder, or a path under a file: refused before the data is read
    limits = AlertThresholds.from_yaml(thresholds) if thresholds is not None else AlertThresholds()
    if psi_alert is not None:
        limits = limits.model_copy(update={"psi": psi_alert})
    report = monitor_traffic(
        run,
        database_url=db,
        scored=scored,
        reviews=reviews,
        time_col=scored_time_col,
        model=model,
        since=when(since, "--since"),
        until=when(until, "--until"),
        every=parse_every(every) if every else None,
        thresholds=limits,
        embeddings=embeddings,
    )
    print(json.dumps(report, indent=2, default=str))
    if out is not None:
        write_text(out, json.dumps(report, indent=2, default=str))  # atomic: never a half-written report
    if html is not None:
        console.print(f"report written to {write_monitor_report(over_time(report), html, thresholds=limits)}")
    alerts = report_alerts(report)
    for alert in alerts:
        console.print(f"[red]alert:[/red] {alert}", highlight=False)
    if alerts and webhook:
        status = send_webhook(webhook, {"model": report["model"], "alerts": alerts, "report": report})
        console.print(f"alerts sent to {webhook} (HTTP {status})", highlight=False)
    if alerts:
        raise typer.Exit(3)


# --- the model registry: register, promote, rollback, registry list (finesieve.registry) ---------------------------

registry_app = typer.Typer(help="Model versions in MLflow's model registry, with their lineage.", no_args_is_help=True)
app.add_typer(registry_app, name="registry")
RegistryUri = Annotated[
    str | None,
    typer.Option(
        "--registry",
        help="MLflow registry store (default: $FINESIEVE_REGISTRY_URI, else sqlite:///registry/mlflow.db here).",
    ),
]


@app.command("register")
@_guard
def register_command(
    run: Annotated[Path, typer.Argument(help="The run directory to register (it is pointed at, not copied).")],
    name: Annotated[str, typer.Option("--name", help="The registered model's name, e.g. spam.")],
    alias: Annotated[str | None, typer.Option(help="Also point this alias at it, e.g. challenger.")] = None,
    registry_uri: RegistryUri = None,
) -> None:
    """Register a run directory as the next version of a model, with its lineage (manifest hash, parent run, data
    hashes, test metrics, retraining gate verdict)."""
    from finesieve.registry import register

    version = register(run, name, alias=alias, uri=registry_uri)
    print(f"{name} version {version}: {run.resolve()}" + (f" (alias {alias})" if alias else ""))


@app.command("promote")
@_guard
def promote_command(
    name: Annotated[str, typer.Argument(help="The registered model's name.")],
    version: Annotated[
        int | None, typer.Option(min=1, help="The version to promote (default: the challenger).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Promote even a version the retraining gate refused.")] = False,
    registry_uri: RegistryUri = None,
) -> None:
    """Point `champion` at a version (default: the challenger); the champion it replaces becomes `previous`. A
    service serving registry:NAME@champion switches on POST /v1/admin/models/NAME/reload or its registry poll."""
    from finesieve.registry import promote

    print(promote(name, version, force=force, uri=registry_uri))


@app.command("rollback")
@_guard
def rollback_command(
    name: Annotated[str, typer.Argument(help="The registered model's name.")], registry_uri: RegistryUri = None
) -> None:
    """Point `champion` back at the `previous` version (the one the last promote replaced)."""
    from finesieve.registry import rollback

    print(rollback(name, uri=registry_uri))


@registry_app.command("list")
@_guard
def registry_list(
    name: Annotated[str, typer.Argument(help="The registered model's name.")], registry_uri: RegistryUri = None
) -> None:
    """Every version of a model with its aliases and lineage, then every recorded change, oldest first."""
    from finesieve.registry import describe

    model = describe(name, uri=registry_uri)
    print(f"{model.name}: " + (", ".join(f"{a} -> {v}" for a, v in sorted(model.aliases.items())) or "no aliases"))
    for v in model.versions:
        print(f"version {v.version}\t{','.join(v.aliases) or '-'}\t{v.created}\t{v.run_dir}")
        for key, value in sorted(v.lineage.items()):
            if key != "run_dir":
                print(f"    {key}: {value}")
    print("history:")
    for event in model.history:
        details = ", ".join(f"{k}={v}" for k, v in event.items() if k not in ("at", "action"))
        print(f"  {event['at']}\t{event['action']}\t{details}")


serve_key_app = typer.Typer(help="API keys of the moderation service.", no_args_is_help=True)
app.add_typer(serve_key_app, name="serve-key")
ServiceDb = Annotated[
    str, typer.Option("--db", help="The service's database: sqlite:///PATH or postgresql+psycopg://USER@HOST:PORT/DB.")
]


@app.command("serve")
@_guard
def serve_command(
    runs: Annotated[
        list[str],
        typer.Argument(
            help="Run directories to serve (a cascade or a single scorer each), or registry references such as "
            "registry:spam@champion."
        ),
    ],
    db: ServiceDb = "sqlite:///./finesieve.db",
    host: Annotated[
        str, typer.Option(help="Address to listen on; anything but loopback needs an API key.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port.")] = 8000,
    name: Annotated[
        list[str] | None,
        typer.Option(
            "--name", help="Model name per run, in order (default: the run folder's name, or the registered name)."
        ),
    ] = None,
    shadow: Annotated[
        list[str] | None,
        typer.Option(
            help="NAME=RUN_OR_REF: also score model NAME's messages with this run (e.g. spam=registry:spam@challenger);"
            " its scores are stored, never acted on. Repeatable."
        ),
    ] = None,
    registry: Annotated[
        str | None,
        typer.Option(help="MLflow registry store for registry: references (default: see finesieve.registry)."),
    ] = None,
    registry_poll: Annotated[
        float | None, typer.Option(min=1.0, help="Seconds between checks of the registry aliases (switch on a move).")
    ] = None,
    audit_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of delivered messages also queued for review.")
    ] = 0.02,
    retention_days: Annotated[
        int | None, typer.Option(min=1, help="Delete stored texts older than this (decisions are kept).")
    ] = None,
    model_timeout: Annotated[float, typer.Option(min=0.001, help="Seconds a batch may take in the model.")] = 10.0,
    max_batch: Annotated[int, typer.Option(min=1, help="Most messages in one request.")] = 256,
    batch_wait_ms: Annotated[
        float, typer.Option(min=0.0, help="Most ms a request waits for others to share its model call.")
    ] = 5.0,
    batch_max: Annotated[int, typer.Option(min=1, help="Most texts in one model call from concurrent requests.")] = 64,
    workers: Annotated[int, typer.Option(min=1, help="Server processes (each loads the runs; they share the db).")] = 1,
    log_format: Annotated[
        str, typer.Option(help="Log lines: text, or json (one object per line; never message text).")
    ] = "text",
    sqlite_sync: Annotated[
        str,
        typer.Option(
            help="SQLite: full (every commit synced to disk; survives power loss) or normal (synced at checkpoints: "
            "survives a killed process, not a power loss; lower tail latency)."
        ),
    ] = "full",
) -> None:
    """Serve runs over HTTP: POST /v1/moderate decides, stores and queues messages for review."""
    from finesieve.registry import is_ref, parse_ref
    from finesieve.serve.service import run_service
    from finesieve.serve.settings import ServiceSettings

    names = list(name or [])
    if names and len(names) != len(runs):
        raise ConfigError(f"{len(names)} --name for {len(runs)} runs: give one --name per run, in order, or none")
    names = names or [parse_ref(run).name if is_ref(run) else Path(run).resolve().name for run in runs]
    shadows = {}
    for item in shadow or []:
        model_name, sep, source = item.partition("=")
        if not sep or not model_name or not source:
            raise typer.BadParameter(
                f"{item!r}: write NAME=RUN_OR_REF, e.g. spam=registry:spam@challenger", param_hint="--shadow"
            )
        shadows[model_name] = source
    if len(set(names)) != len(names):
        raise ConfigError(f"model names {names} repeat: give each run its own --name")
    settings = ServiceSettings(
        database_url=db,
        runs=dict(zip(names, runs)),
        shadow=shadows,
        registry_uri=registry,
        registry_poll_s=registry_poll,
        host=host,
        port=port,
        audit_rate=audit_rate,
        retention_days=retention_days,
        model_timeout_s=model_timeout,
        max_batch=max_batch,
        batch_wait_ms=batch_wait_ms,
        batch_max=batch_max,
        workers=workers,
        log_format=log_format,
        sqlite_synchronous=sqlite_sync,
    )
    console.print(f"serving {', '.join(names)} on http://{host}:{port} (database {db})", highlight=False)
    run_service(settings, warn=lambda message: console.print(f"[yellow]warning:[/yellow] {message}", highlight=False))


@serve_key_app.command("create")
@_guard
def serve_key_create(
    name: Annotated[str, typer.Argument(help="Who the key is for (unique), e.g. billing-app.")],
    models: Annotated[str, typer.Option("--models", help="Model names the key may call, comma-separated; '*': all.")],
    db: ServiceDb = "sqlite:///./finesieve.db",
) -> None:
    """Create an API key and print it: it is shown once, and only its hash is stored."""
    from finesieve.serve.service import create_key

    print(create_key(db, name, models.split(",")))


@serve_key_app.command("revoke")
@_guard
def serve_key_revoke(
    name: Annotated[str, typer.Argument(help="The key's name, as given to `serve-key create`.")],
    db: ServiceDb = "sqlite:///./finesieve.db",
) -> None:
    """Revoke an API key: a running service refuses it within its key_cache_s (5 s by default)."""
    from finesieve.serve.service import revoke_key

    revoke_key(db, name)
    print(f"API key {name!r} revoked")


@serve_key_app.command("list")
@_guard
def serve_key_list(db: ServiceDb = "sqlite:///./finesieve.db") -> None:
    """List the API keys: name, models, created, revoked (the keys themselves are never stored)."""
    from finesieve.serve.service import list_keys

    for key in list_keys(db):
        revoked = f"revoked {key['revoked_at']}" if key["revoked_at"] else "active"
        print(f"{key['name']}\tmodels={','.join(key['models'])}\tcreated {key['created_at']}\t{revoked}")


serve_user_app = typer.Typer(help="Reviewer and admin accounts of the moderation service.", no_args_is_help=True)
app.add_typer(serve_user_app, name="serve-user")


@serve_user_app.command("create")
@_guard
def serve_user_create(
    name: Annotated[str, typer.Argument(help="The login name (unique).")],
    role: Annotated[str, typer.Option("--role", help="reviewer (review the queue) or admin (also manage users).")],
    db: ServiceDb = "sqlite:///./finesieve.db",
) -> None:
    """Create a reviewer or admin; the password comes from FINESIEVE_PASSWORD or is asked twice (hidden)."""
    from finesieve.serve.accounts import ROLES, add_user

    if role not in ROLES:
        raise typer.BadParameter(f"{role!r}: choose one of {', '.join(ROLES)}", param_hint="--role")
    password = os.environ.get("FINESIEVE_PASSWORD") or typer.prompt(
        f"password for {name}", hide_input=True, confirmation_prompt=True
    )
    add_user(db, name, password, role)
    print(f"user {name!r} created with role {role}")


match_app = typer.Typer(
    help="Candidate-job matching: rank resumes for a job; evaluate matchers on HR-scored pairs.", no_args_is_help=True
)
app.add_typer(match_app, name="match")


def _matcher_refs(value: str) -> list[str]:
    refs = [r.strip() for r in value.split(",") if r.strip()]
    if not refs or len(set(refs)) < len(refs):
        raise typer.BadParameter(
            f"{value!r}: name each matcher once, comma-separated, e.g. tfidf,bm25,embeddings", param_hint="--matcher"
        )
    return refs


def _resume_anonymiser(on: bool):
    if not on:
        return None
    from finesieve.data.anonymise import Anonymiser

    return Anonymiser()


@match_app.command("eval")
@_guard
def match_eval(
    data: Annotated[Path, typer.Option("--data", help="Judged (job, resume) pairs, e.g. job_resume_hr_scores.csv.")],
    matcher: Annotated[
        str, typer.Option("--matcher", help="Comma-separated matchers: tfidf, bm25, embeddings.")
    ] = "tfidf,bm25,embeddings",
    out: Annotated[Path | None, typer.Option("--out", help="Write every figure (per job too) as JSON here.")] = None,
    query_col: Annotated[str, typer.Option("--query-col", help="Job id column.")] = "job_id",
    candidate_col: Annotated[str, typer.Option("--candidate-col", help="Resume id column.")] = "resume_id",
    query_text_col: Annotated[
        str, typer.Option("--query-text-col", help="Job text column (description or skill terms).")
    ] = "job_terms",
    candidate_text_col: Annotated[
        str, typer.Option("--candidate-text-col", help="Resume text column.")
    ] = "resume_text",
    relevance_col: Annotated[str, typer.Option("--relevance-col", help="Grade column (HR fit score).")] = "hr_score",
    min_grade: Annotated[float, typer.Option(help="The lowest grade (no fit): NDCG gains nothing for it.")] = 1,
    max_grade: Annotated[float, typer.Option(help="The highest grade.")] = 7,
    relevant_grade: Annotated[float, typer.Option(help="The lowest grade counted relevant (MAP, recall@k).")] = 5,
    corpus: Annotated[
        Path | None,
        typer.Option(help="Fit the matchers on this file's resumes (column --corpus-text-col), not the data's own."),
    ] = None,
    corpus_text_col: Annotated[str, typer.Option(help="Resume text column of --corpus.")] = "resume_text",
    anonymise: Annotated[
        bool, typer.Option(help="Anonymise the resumes (finesieve anonymise's defaults) before any matcher sees them.")
    ] = False,
    max_rows: MaxRows = None,
    n_boot: NBoot = 1000,
    seed: Annotated[int, typer.Option(min=0, max=MAX_SEED, help="Bootstrap seed.")] = 0,
) -> None:
    """Rank each job's judged candidates with each matcher: NDCG@5 with its 95% interval, MAP, recall@5, and the
    paired NDCG@5 difference of every two matchers (intervals resample jobs)."""
    from finesieve.data.spec import RankingSpec
    from finesieve.evals.matching import (
        comparison_lines,
        evaluate_matchers,
        hr_task,
        load_candidates,
        load_hr_pairs,
        matching_table,
        resolve_matcher,
    )
    from finesieve.outputs import write_text
    from finesieve.report import json_safe

    if out is not None:
        check_output_file(out)
    check_outputs({"--out": out}, {"--data": data, "--corpus": corpus})
    matchers = {ref: resolve_matcher(ref) for ref in _matcher_refs(matcher)}  # a bad name fails before any work
    spec = RankingSpec(
        query_col=query_col,
        candidate_col=candidate_col,
        query_text_col=query_text_col,
        candidate_text_col=candidate_text_col,
        relevance_col=relevance_col,
    )
    task = hr_task(min_grade=min_grade, max_grade=max_grade, relevant_grade=relevant_grade)
    for name, m in matchers.items():
        console.print(f"{name}: {m.get_config().model_dump(mode='json')}", highlight=False)
    pairs = load_hr_pairs(data, spec, task, max_rows=max_rows)
    anonymiser = _resume_anonymiser(anonymise)
    corpus_texts = load_candidates(corpus, ColumnSpec(text_col=corpus_text_col), anonymiser)[1] if corpus else None
    evaluation = evaluate_matchers(
        matchers,
        pairs,
        min_grade=min_grade,
        max_grade=max_grade,
        relevant_grade=relevant_grade,
        corpus=corpus_texts,
        anonymiser=anonymiser,
        n_boot=n_boot,
        seed=seed,
    )
    stdout_console().print(matching_table(evaluation))
    for line in comparison_lines(evaluation):
        print(line)
    if out is not None:
        write_text(out, json.dumps(json_safe(evaluation.to_dict()), indent=2))
        console.print(f"results written to {out}")


@match_app.command("rank")
@_guard
@column_options(labelled=False, extras=("id_col",))
def match_rank(
    job: Annotated[str, typer.Option("--job", help="The job: its description, or its skill terms.")],
    candidates: Annotated[Path, typer.Option("--candidates", help="File of candidates (resumes) to rank.")],
    spec: ColumnSpec,
    matcher: Annotated[
        str, typer.Option("--matcher", help="tfidf, bm25, embeddings, or a folder a matcher was saved in.")
    ] = "tfidf",
    top: Annotated[int, typer.Option(min=1, help="How many candidates to print.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print the ranked candidates as JSON on stdout.")] = False,
    anonymise: Annotated[
        bool, typer.Option(help="Anonymise the resumes (finesieve anonymise's defaults) before the matcher sees them.")
    ] = False,
) -> None:
    """Rank the candidates of a file for one job, best first (a named matcher is fitted on the candidates)."""
    from finesieve.evals.matching import load_candidates, rank_candidates, ranked_table, resolve_matcher
    from finesieve.models.matching import is_matcher_folder

    chosen = resolve_matcher(matcher)
    ids, texts, rejected = load_candidates(candidates, spec, _resume_anonymiser(anonymise))
    if rejected:
        console.print(f"note: {rejected} row(s) of {candidates} without a usable text were left out", highlight=False)
    rows = rank_candidates(chosen, job, ids, texts, top=top, fit=not is_matcher_folder(matcher))
    if as_json:
        print(json.dumps(rows))
        return
    stdout_console().print(ranked_table(rows, f"top {len(rows)} of {len(texts)} candidates ({matcher})"))


if __name__ == "__main__":
    sys.exit(app())
