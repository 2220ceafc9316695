"""Run directories: everything needed to reload a trained scorer and trace any number back to its data.

    RUN_DIR/
      manifest.json   finesieve version, scorer kind and config, task (classes, positive class, threshold),
                      data source and content hash, split hashes, metrics, environment, parent run
      splits.json     the ids of each split (when the run made its own split)
      model/          the scorer's own files (weights, vectoriser, policy, calibration)

`load_scorer("RUN_DIR")` rebuilds the scorer from it; `load_scorer("tfidf")` or `load_scorer("rules:POLICY")`
gives a fresh reference scorer that still has to be fitted.
"""

from __future__ import annotations

import json
import platform
import shutil
import sys
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from finesieve import __version__
from finesieve.data.errors import ConfigError
from finesieve.models import kinds
from finesieve.models.cascade import Cascade
from finesieve.models.char_cnn import CharCNNScorer
from finesieve.models.rules import RulesScorer
from finesieve.models.tfidf import TfidfLogReg
from finesieve.models.training_loop import CHECKPOINTS  # inside the staging folder while a fine-tune runs
from finesieve.outputs import check_run_dir, commit_run_dir, start_run_dir

MANIFEST = "manifest.json"
# kind (the string in manifest.json) -> scorer class; each class carries its own kind as `cls.kind`.
SCORER_KINDS = {**kinds.MODEL_KINDS, Cascade.kind: Cascade}
DEFAULT_POLICY = "builtin:marketplace"
TRACKED_PACKAGES = ("numpy", "pandas", "scikit-learn", "datasketch", "torch", "transformers", "peft", "pydantic")


@dataclass
class Run:
    path: Path
    manifest: dict
    scorer: object

    @property
    def threshold(self) -> float | None:
        return self.manifest.get("task", {}).get("threshold")

    @property
    def positive(self) -> list[str] | None:
        return self.manifest.get("task", {}).get("positive")


def kind_of(scorer) -> str:
    """The run `kind` of a scorer object: its class attribute `kind` (the inverse of SCORER_KINDS)."""
    return kinds.kind_of(scorer, SCORER_KINDS)


def environment() -> dict:
    packages = {}
    for name in TRACKED_PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {"python": sys.version.split()[0], "platform": platform.platform(), "packages": packages}


def save_run(directory: str | Path, scorer, *, kind: str, task: dict, data: dict, metrics: dict,
             splits=None, parent_run: str | None = None, extra: dict | None = None, overwrite: bool = False,
             staging: str | Path | None = None) -> Path:
    """Write a run directory. `task` holds classes, multilabel, positive and the chosen threshold.

    The run is written into `directory.partial` (or `staging`, when the caller already works there, e.g. a
    fine-tune's checkpoints) and renamed to `directory` when complete, so a run directory is never half
    written. An existing run directory is refused unless `overwrite`, which replaces it whole.
    """
    directory = Path(directory)
    staging = Path(staging) if staging is not None else start_run_dir(directory, overwrite=overwrite)
    check_run_dir(directory, overwrite=overwrite)
    scorer.save(staging / "model")
    manifest = {
        "finesieve_version": __version__,
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "kind": kind,
        "scorer_config": _scorer_config(scorer),
        "task": task,
        "data": data,
        "splits": splits.to_dict() if splits is not None else None,
        "metrics": metrics,
        "environment": environment(),
        "parent_run": parent_run,
        **(extra or {}),
    }
    if splits is not None:
        splits.save(staging / "splits.json")
    # The manifest goes last: a folder holding one is a complete run.
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
    shutil.rmtree(staging / CHECKPOINTS, ignore_errors=True)  # only an unfinished run needs them
    return commit_run_dir(staging, directory)


def _scorer_config(scorer) -> dict:
    if hasattr(scorer, "get_config"):
        return scorer.get_config().model_dump()
    if isinstance(scorer, RulesScorer):
        return {"policy": scorer.policy_.name, "smoothing": scorer.smoothing}
    return {}


def load_run(directory: str | Path) -> Run:
    directory = Path(directory)
    manifest_path = directory / MANIFEST
    if not manifest_path.exists():
        raise ConfigError(f"{directory}: not a run directory (no {MANIFEST}); train one first, or name a scorer")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:  # JSONDecodeError is a ValueError
        raise ConfigError(f"{manifest_path}: not valid JSON ({err}); the run directory is damaged. Fix: restore it "
                          "from a copy, or write the run again") from None
    if not isinstance(manifest, dict):
        raise ConfigError(f"{manifest_path}: expected a JSON object, found {type(manifest).__name__}; the run "
                          "directory is damaged. Fix: restore it from a copy, or write the run again")
    version = str(manifest.get("finesieve_version", "0"))
    if _version_tuple(version) > _version_tuple(__version__):
        warnings.warn(f"{directory} was written by finesieve {version}, newer than this {__version__}: "
                      "loading it may miss settings; upgrade finesieve", stacklevel=2)
    kind = manifest.get("kind")
    if kind not in SCORER_KINDS:
        raise ConfigError(f"{directory}: unknown scorer kind {kind!r}; this finesieve knows {sorted(SCORER_KINDS)}")
    try:
        scorer = SCORER_KINDS[kind].load(directory / "model")
    except (OSError, ValueError, KeyError, RuntimeError) as err:  # missing, truncated or edited model files
        raise ConfigError(f"{directory / 'model'}: cannot load the {kind} scorer ({type(err).__name__}: {err}); the "
                          "run directory is incomplete or damaged. Fix: restore it from a copy, or write the run "
                          "again") from err
    return Run(path=directory, manifest=manifest, scorer=scorer)


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".")[:3] if p.isdigit())


def new_reference_scorer(ref: str):
    """A fresh, unfitted reference scorer from its name: `tfidf`, `rules` or `rules:POLICY`."""
    name, _, arg = ref.partition(":")
    if name == "tfidf" and not arg:
        return TfidfLogReg()
    if name == "char_cnn" and not arg:
        return CharCNNScorer()
    if name == "rules":
        return RulesScorer(policy=arg or DEFAULT_POLICY)
    raise ConfigError(
        f"'{ref}' is neither a run directory nor a scorer name: pass a directory holding {MANIFEST}, "
        "or one of tfidf, char_cnn, rules, rules:builtin:NAME, rules:PATH.yaml"
    )


def load_scorer(ref: str | Path) -> tuple[object, Run | None]:
    """A run directory -> (its fitted scorer, the run); a scorer name -> (a fresh unfitted scorer, None)."""
    path = Path(ref)
    if path.is_dir():
        run = load_run(path)
        return run.scorer, run
    return new_reference_scorer(str(ref)), None
