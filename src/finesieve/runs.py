"""Run directories: everything needed to reload a trained scorer, serve it, and trace any number to its data.

    RUN_DIR/
      manifest.json   the typed `RunManifest` (finesieve.manifest): scorer kind and config, task, preprocessing,
                      base weights and their hash, data / split / vote hashes, metrics, reference statistics
                      for drift monitoring, environment, parent run, and the sha256 of every file under
                      model/ (`files`: `verify_run_files` checks them before serving)
      splits.json     the ids of each split (when the run made its own split)
      model/          the scorer's own files (weights, vectoriser, policy, calibration, adapter)

This module is the only code that writes or reads run directories. `load_scorer("RUN_DIR")` rebuilds the
scorer from it, ready to take raw text: it applies the run's recorded preprocessing (cleaning and redaction)
itself, as training did. `load_scorer("tfidf")` or `load_scorer("rules:POLICY")` gives a fresh reference
scorer that still has to be fitted.
"""

from __future__ import annotations

import hashlib
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
from finesieve.data.errors import ConfigError, LeakageError
from finesieve.data.preprocess import Preprocessing
from finesieve.data.split import Splits, read_split_members
from finesieve.data.task import ClassificationTask, Task, task_from_manifest
from finesieve.manifest import BaseWeights, ReferenceStats, RunManifest, read_manifest, write_manifest
from finesieve.models import kinds
from finesieve.models.base import Scorer, set_preprocessing
from finesieve.models.cascade import Cascade
from finesieve.models.char_cnn import CharCNNScorer
from finesieve.models.ensemble import StackedEnsemble
from finesieve.models.rules import RulesScorer
from finesieve.models.tfidf import TfidfLogReg
from finesieve.models.training_loop import CHECKPOINTS  # inside the staging folder while a fine-tune runs
from finesieve.outputs import check_run_dir, commit_run_dir, start_run_dir

MANIFEST = "manifest.json"
SPLITS = "splits.json"
MODEL = "model"
# kind (the string in manifest.json) -> scorer class; each class carries its own kind as `cls.kind`.
SCORER_KINDS: dict[str, type[Scorer]] = {**kinds.MODEL_KINDS, **{c.kind: c for c in (Cascade, StackedEnsemble)}}
DEFAULT_POLICY = "builtin:marketplace"
DEFAULT_PREPROCESSING = Preprocessing()  # what `load_dataset` applies unless told otherwise
TRACKED_PACKAGES = ("numpy", "pandas", "scikit-learn", "datasketch", "torch", "transformers", "peft", "pydantic")


@dataclass
class Run:
    path: Path
    manifest: RunManifest
    scorer: Scorer

    @property
    def task(self) -> Task:
        return self.manifest.task

    @property
    def threshold(self) -> float | None:
        return self.task.threshold if isinstance(self.task, ClassificationTask) else None

    @property
    def positive(self) -> list[str] | None:
        return list(self.task.positive) if isinstance(self.task, ClassificationTask) else None

    @property
    def preprocessing(self) -> Preprocessing:
        return self.manifest.preprocessing

    @property
    def splits_path(self) -> Path | None:
        """The run's splits.json, when it made its own split."""
        return run_splits_path(self.path)

    def section(self, name: str) -> dict:
        """A section a recipe added to the manifest (training, replay, tracking, cascade); {} when absent."""
        return dict(getattr(self.manifest, name, None) or {})


def kind_of(scorer: Scorer) -> str:
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


def save_run(
    directory: str | Path,
    scorer: Scorer,
    *,
    kind: str,
    task: Task | dict,
    data: dict,
    metrics: dict,
    splits=None,
    parent_run: str | None = None,
    extra: dict | None = None,
    overwrite: bool = False,
    staging: str | Path | None = None,
    preprocessing: Preprocessing = DEFAULT_PREPROCESSING,
    base_model: BaseWeights | None = None,
    reference: ReferenceStats | None = None,
) -> Path:
    """Write a run directory. `task` is the typed task (a dict in the version-1 shape is accepted too).

    `preprocessing` is what was applied to the training texts (the default is `load_dataset`'s;
    `Preprocessing.none()` when they were used as given); a loaded scorer applies it to raw text. The run is written into `directory.partial` (or `staging`, when the caller already
    works there, e.g. a fine-tune's checkpoints) and renamed to `directory` when complete, so a run directory is
    never half written. An existing run directory is refused unless `overwrite`, which replaces it whole.
    """
    directory = Path(directory)
    task = task_from_manifest(task) if isinstance(task, dict) else task
    manifest = RunManifest(
        finesieve_version=__version__,
        created_utc=datetime.now(UTC).isoformat(timespec="seconds"),
        kind=kind,
        scorer_config=_scorer_config(scorer),
        task=task,
        preprocessing=preprocessing,
        base_model=base_model,
        data=data,
        splits=splits.to_dict() if splits is not None else None,
        metrics=metrics,
        reference=reference,
        environment=environment(),
        parent_run=parent_run,
        **json.loads(json.dumps(extra or {}, default=str)),  # recipe sections, as plain JSON values
    )
    staging = Path(staging) if staging is not None else start_run_dir(directory, overwrite=overwrite)
    check_run_dir(directory, overwrite=overwrite)
    scorer.save(staging / MODEL)
    if splits is not None:
        splits.save(staging / SPLITS)
    # The manifest goes last: a folder holding one is a complete run. It records the model files' hashes.
    manifest = manifest.model_copy(update={"files": hash_model_files(staging)})
    write_manifest(manifest, staging / MANIFEST)
    shutil.rmtree(staging / CHECKPOINTS, ignore_errors=True)  # only an unfinished run needs them
    return commit_run_dir(staging, directory)


def hash_model_files(directory: str | Path) -> dict[str, str]:
    """sha256 of every file under the run directory's model/ folder: path relative to `directory` -> hex digest."""
    directory = Path(directory)
    out = {}
    for path in sorted((directory / MODEL).rglob("*")):
        if path.is_file():
            digest = hashlib.sha256()
            with path.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            out[path.relative_to(directory).as_posix()] = digest.hexdigest()
    return out


def verify_run_files(directory: str | Path) -> bool:
    """Check the model files against the hashes the manifest recorded at save time.

    True when every recorded file is present and unchanged and no other file lies under model/; False for a run
    written before hashes were recorded (it cannot be verified: the caller decides whether to warn). A missing,
    changed or extra file raises a ConfigError naming each file, so a tampered or damaged model is never served.
    """
    directory = Path(directory)
    recorded = run_manifest(directory).files
    if recorded is None:
        return False
    found = hash_model_files(directory)
    problems = [f"{name}: missing" for name in sorted(set(recorded) - set(found))]
    changed = [name for name, digest in sorted(recorded.items()) if name in found and found[name] != digest]
    problems += [f"{name}: changed since the run was saved" for name in changed]
    problems += [f"{name}: not among the files saved with the run" for name in sorted(set(found) - set(recorded))]
    if problems:
        raise ConfigError(
            f"{directory}: the model files differ from the sha256 hashes recorded in {MANIFEST} ("
            + "; ".join(problems)
            + "). Fix: restore the run directory from a trusted copy, or train the run again; never serve "
            "weights that changed after training"
        )
    return True


def _scorer_config(scorer: Scorer) -> dict:
    if hasattr(scorer, "get_config"):
        return scorer.get_config().model_dump()
    if isinstance(scorer, RulesScorer):
        return {"policy": scorer.policy_.name, "smoothing": scorer.smoothing}
    return {}


def is_run_dir(directory: str | Path) -> bool:
    return (Path(directory) / MANIFEST).is_file()


def run_manifest(directory: str | Path) -> RunManifest:
    """A run directory's manifest alone (migrated and validated), without loading the model."""
    directory = Path(directory)
    if not is_run_dir(directory):
        raise ConfigError(f"{directory}: not a run directory (no {MANIFEST}); train one first, or name a scorer")
    return read_manifest(directory / MANIFEST)


def run_splits_path(directory: str | Path) -> Path | None:
    """A run directory's splits.json, when it made its own split."""
    path = Path(directory) / SPLITS
    return path if path.exists() else None


def load_run(directory: str | Path, loaded: dict[str, Scorer] | None = None) -> Run:
    """Load a run directory (any manifest version: older ones are migrated on read). The scorer it returns
    applies the run's preprocessing to the texts it is given (`preprocessing_`). `loaded` gives parts already in
    memory (a cascade's stages by name, or a single-scorer run's scorer under "run"), used instead of reading
    them: the service loads LoRA runs that share a base onto one copy of it first."""
    directory = Path(directory)
    manifest = run_manifest(directory)
    if _version_tuple(manifest.finesieve_version) > _version_tuple(__version__):
        warnings.warn(
            f"{directory} was written by finesieve {manifest.finesieve_version}, newer than this "
            f"{__version__}: loading it may miss settings; upgrade finesieve",
            stacklevel=2,
        )
    kind = manifest.kind
    if kind not in SCORER_KINDS:
        raise ConfigError(f"{directory}: unknown scorer kind {kind!r}; this finesieve knows {sorted(SCORER_KINDS)}")
    try:
        scorer: Scorer
        if loaded and kind == Cascade.kind:
            scorer = Cascade.load(directory / MODEL, loaded=loaded)
        elif loaded and "run" in loaded:
            scorer = loaded["run"]
        else:
            scorer = SCORER_KINDS[kind].load(directory / MODEL)
    except (OSError, ValueError, KeyError, RuntimeError) as err:  # missing, truncated or edited model files
        raise ConfigError(
            f"{directory / MODEL}: cannot load the {kind} scorer ({type(err).__name__}: {err}); the "
            "run directory is incomplete or damaged. Fix: restore it from a copy, or write the run "
            "again"
        ) from err
    set_preprocessing(scorer, manifest.preprocessing)
    return Run(path=directory, manifest=manifest, scorer=scorer)


def check_trained_apart(run: Run, splits: Splits, *, what: str, why: str, fix: str) -> None:
    """Refuse `run` when it was trained on rows that `splits` holds out (validation or test): its scores there
    would carry their labels. `what` names the run in the message (e.g. "--teacher RUN"), `why` says what the
    leak would spoil, `fix` how to train it apart. The same split (same hash) passes without reading files."""
    recorded = (run.manifest.splits or {}).get("split_hash")
    if recorded and recorded == splits.split_hash:
        return  # the very same split: it trained on this training split only
    if run.splits_path is None:
        raise ConfigError(f"{what}: it records no split, so it cannot be checked against this one. Fix: {fix}")
    overlap = read_split_members(run.splits_path).ids["train"] & (set(splits.ids("val")) | set(splits.ids("test")))
    if overlap:
        raise LeakageError(
            f"{what} was trained on {len(overlap)} message(s) of this split's validation/test rows (e.g. id "
            f"{sorted(overlap)[0]}): {why}. Fix: {fix}"
        )


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".")[:3] if p.isdigit())


def new_reference_scorer(ref: str) -> Scorer:
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


def load_scorer(ref: str | Path) -> tuple[Scorer, Run | None]:
    """A run directory -> (its fitted scorer, the run); a scorer name -> (a fresh unfitted scorer, None)."""
    path = Path(ref)
    if path.is_dir():
        run = load_run(path)
        return run.scorer, run
    return new_reference_scorer(str(ref)), None
