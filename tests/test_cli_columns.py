"""The column flags come from one shared group (`cli.column_options`): every command that reads a file spells,
defaults and documents them the same way, and a new command cannot drift from the group."""

import typer
from typer.testing import CliRunner

from finesieve import cli
from finesieve.data.spec import ColumnSpec


def commands(group, path=()):
    """(path, click command) for every leaf command of the app (typer carries its own click: no isinstance)."""
    if hasattr(group, "commands"):
        for name, sub in group.commands.items():
            yield from commands(sub, (*path, name))
    else:
        yield path, group


def column_flag_names(cmd) -> set[str]:
    """The command's parameters that are column flags (by parameter name, e.g. text_col)."""
    return {p.name for p in cmd.params if p.name in cli.COLUMN_OPTIONS}


def describe(param) -> tuple:
    """What a user sees of a flag: its spelling, default, help and whether it repeats."""
    return tuple(param.opts), param.default, getattr(param, "help", None), param.multiple


ALL = dict(commands(typer.main.get_command(cli.app)))


def test_every_command_with_column_flags_gets_them_from_the_shared_group():
    with_columns = {path: cmd for path, cmd in ALL.items() if column_flag_names(cmd)}
    assert len(with_columns) == 15  # all but `demo`
    for path, cmd in with_columns.items():
        declared = getattr(cmd.callback, "column_flags", None)
        assert declared is not None, f"{path}: declares column flags by hand; use @column_options"
        assert column_flag_names(cmd) == set(declared), path
        base = cli.LABELLED if "label_col" in declared else cli.UNLABELLED
        assert set(base) <= set(declared), (path, "has part of the shared set only")


def test_a_column_flag_reads_the_same_in_every_command():
    seen: dict[str, tuple] = {}
    for path, cmd in ALL.items():
        for param in cmd.params:
            if param.name in cli.COLUMN_OPTIONS:
                seen.setdefault(param.name, describe(param))
                assert describe(param) == seen[param.name], (path, param.name)
    assert seen["file_format"][0] == ("--format",) and seen["encoding"][1] == "utf-8"
    assert seen["label_col"][3] and seen["text_col"][1] == "text"


def test_labelled_commands_share_one_flag_set():
    """The commands that read labelled files; an extra flag beyond the shared set must be one this command uses."""
    extras = {
        ("data", "validate"): {"time_col", "user_col", "thread_col", "meta_col"},
        ("data", "review"): {"time_col", "user_col", "thread_col", "meta_col", "vote_col"},
        ("data", "split"): {"time_col", "user_col", "thread_col", "meta_col"},
        ("eval",): {"meta_col"},
        ("train",): {"vote_col"},
        ("sweep",): {"vote_col"},  # soft-label trials
    }
    labelled = [
        ("data", "validate"),
        ("data", "review"),
        ("data", "split"),
        ("data", "dedupe"),
        ("eval",),
        ("fit",),
        ("baseline",),
        ("prefilter", "train"),
        ("train",),
        ("sweep",),
        ("cascade", "fit"),
    ]
    for path in labelled:
        assert column_flag_names(ALL[path]) == set(cli.LABELLED) | extras.get(path, set()), path
    assert column_flag_names(ALL[("score",)]) == set(cli.UNLABELLED) | {"id_col"}
    assert column_flag_names(ALL[("match", "rank")]) == set(cli.UNLABELLED) | {"id_col"}
    assert column_flag_names(ALL[("data", "redact")]) == set(cli.UNLABELLED)
    assert not column_flag_names(ALL[("demo",)])


def test_the_command_receives_one_built_spec_and_a_bad_flag_is_named():
    app = typer.Typer()
    got = {}

    @app.command()
    @cli.column_options(labelled=True, extras=("meta_col", "vote_col"))
    def show(file: str, spec: ColumnSpec, other: int = 1) -> None:
        got.update(file=file, spec=spec, other=other)

    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "f.csv",
            "--text-col",
            "body",
            "--label-col",
            "a",
            "--label-col",
            "b",
            "--meta-col",
            "country",
            "--classes",
            "x, y",
            "--format",
            "TSV",
            "--other",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    assert got["file"] == "f.csv" and got["other"] == 3
    assert got["spec"] == ColumnSpec(
        text_col="body", label_cols=("a", "b"), meta_cols=("country",), classes=("x", "y"), file_format="tsv"
    )
    bad = runner.invoke(app, ["f.csv", "--format", "xlsx"])
    assert bad.exit_code == 2 and "--format" in bad.output
