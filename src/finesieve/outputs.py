"""One way to write any output: never over an input, never half-written, a run directory replaced whole or not at all.

    check_outputs({"--out": out}, inputs={"--data": data})      # before any work: refuse an output that is an input
    with atomic_file("report.html") as fh:                        # written to a temporary name, renamed when complete
        fh.write(html)
    staging = start_run_dir("runs/ft", overwrite=False)           # refuses an existing run unless overwrite
    ...write the run's files into staging...
    commit_run_dir(staging, "runs/ft")                            # swaps the finished run in; the old one goes whole

Every command that writes checks its outputs against its inputs first, so a typo such as `--out data.csv`
never truncates the file it reads. Files are written beside their destination under a hidden temporary name and
moved over it with `os.replace`, which is atomic on one filesystem: a reader (or a crash) sees the old file or
the new one, never half of one. A run directory is built in `RUN.partial` and renamed to `RUN` when complete; an
existing run directory is refused unless `overwrite`, and then replaced whole, so no file of an earlier run (of
another kind, say) is left beside the new one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO

from finesieve.data.errors import ConfigError

PARTIAL = ".partial"


def _same(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        try:
            return os.path.samefile(a, b)  # hard links and symlinks to the same file
        except OSError:
            pass
    return a.resolve() == b.resolve()


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def check_outputs(outputs: Mapping[str, str | Path | None], inputs: Mapping[str, str | Path | None]) -> None:
    """Refuse any output path that is one of the inputs (or, for an output folder, holds one of them).

    `outputs` and `inputs` map the flag a user typed (`--out`, `--data`, `FILE`) to its path; None is skipped.
    Outputs are also checked against each other: two outputs on one path would overwrite each other.
    """
    outs = {flag: Path(p) for flag, p in outputs.items() if p is not None}
    ins = {flag: Path(p) for flag, p in inputs.items() if p is not None}
    for out_flag, out in outs.items():
        for in_flag, inp in ins.items():
            if _same(out, inp):
                raise ConfigError(
                    f"{out_flag} {out} is the input {in_flag} ({inp}): writing it would destroy the "
                    f"input. Fix: give {out_flag} a path of its own"
                )
            if out.is_dir() and _inside(inp, out):
                raise ConfigError(
                    f"{out_flag} {out} holds the input {in_flag} ({inp}): replacing the folder would "
                    f"destroy the input. Fix: give {out_flag} a folder of its own"
                )
    flags = list(outs)
    for i, a in enumerate(flags):
        for b in flags[i + 1 :]:
            if _same(outs[a], outs[b]):
                raise ConfigError(
                    f"{a} and {b} are the same path ({outs[a]}): one would overwrite the other. "
                    "Fix: give each its own path"
                )


def check_output_file(path: str | Path, flag: str = "--out") -> Path:
    """Refuse an output file path that names a folder, or lies under a file: before the work, not after it."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(
            f"{flag} {path} is a folder; a file is written there. Fix: name a file, e.g. {path / 'out'}"
            f"{path.suffix or ''}"
        )
    return _check_parents(path, flag)


def _check_parents(path: Path, flag: str) -> Path:
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise ConfigError(f"{flag} {path}: {parent} is a file, not a folder. Fix: choose another path")
    return path


@contextlib.contextmanager
def atomic_file(
    path: str | Path,
    mode: str = "w",
    *,
    encoding: str | None = "utf-8",
    newline: str | None = None,
    flag: str = "--out",
) -> Iterator[IO]:
    """Open a temporary file beside `path`; on success it replaces `path` in one step, on error it is removed."""
    path = check_output_file(path, flag)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    binary = "b" in mode
    fh = open(tmp, mode, **({} if binary else {"encoding": encoding, "newline": newline}))
    try:
        yield fh
        fh.flush()
        os.fsync(fh.fileno())
        fh.close()
        os.replace(tmp, path)
    except BaseException:
        fh.close()
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str, flag: str = "--out") -> Path:
    """`Path.write_text`, atomically."""
    with atomic_file(path, flag=flag) as fh:
        fh.write(text)
    return Path(path)


def partial_path(path: str | Path) -> Path:
    """Where an output under construction lives: `OUT.partial` beside `OUT`."""
    path = Path(path)
    return path.with_name(path.name + PARTIAL)


def is_run_dir(path: Path) -> bool:
    return (path / "manifest.json").is_file()


def check_run_dir(path: str | Path, *, overwrite: bool = False, flag: str = "--out") -> Path:
    """Refuse to write a run into an existing non-empty folder unless `overwrite` (which replaces it whole)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {path} is a file; a run is a folder. Fix: choose a folder path that does not exist")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        what = "a run" if is_run_dir(path) else "files"
        raise ConfigError(
            f"{flag} {path} already holds {what}. Fix: pass --overwrite to replace it whole, or choose another {flag}"
        )
    return _check_parents(path, flag)


def start_run_dir(path: str | Path, *, overwrite: bool = False, keep_partial: bool = False) -> Path:
    """Check `path` (see `check_run_dir`) and return its empty staging folder `path.partial`.

    `keep_partial` keeps what an interrupted earlier attempt left there (a training checkpoint to resume).
    """
    path = check_run_dir(path, overwrite=overwrite)
    staging = partial_path(path)
    if staging.exists() and not keep_partial:
        shutil.rmtree(staging) if staging.is_dir() else staging.unlink()
    staging.mkdir(parents=True, exist_ok=True)
    return staging


def commit_run_dir(staging: str | Path, path: str | Path) -> Path:
    """Move the finished run from `staging` to `path`, replacing whatever was there whole."""
    staging, path = Path(staging), Path(path)
    old = None
    if path.exists():
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        if old.exists():
            shutil.rmtree(old)
        os.replace(path, old)
    os.replace(staging, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return path
