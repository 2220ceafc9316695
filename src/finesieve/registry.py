"""Model versions in MLflow's model registry: register a run directory, move aliases, promote and roll back.

    from finesieve import registry
    version = registry.register("runs/spam-v2", "spam", alias="challenger")   # -> 2
    registry.resolve("registry:spam@challenger")       # -> Path("/abs/runs/spam-v2"); also "registry:spam/2"
    registry.promote("spam")                           # champion -> the challenger; the old champion -> `previous`
    registry.rollback("spam")                          # champion -> `previous` again
    registry.describe("spam")                          # versions, aliases, lineage and every change (registry list)

A version points at its run directory (MLflow's `source`); nothing is copied. The run directory stays the record
of truth and the service loads it in place: copying a 100 MB fine-tune into an artifact store per version would
cost disk and start-up time and add a second copy to keep honest. What keeps the pointer honest instead is the
sha256 of the run's manifest.json, recorded at registration (`finesieve.manifest_sha256`): the manifest holds the
hash of every model file, so `resolve` refuses a directory whose manifest changed and the service's loader
(`runs.verify_run_files`) refuses changed weights.

Lineage is kept as version tags (`finesieve.*`: run directory, manifest hash, kind, parent run, data and split
hashes, test metrics, the retraining gate's verdict and report when the run has a gate.json) and every alias
change as a registered-model tag `finesieve.history.NNNN` (JSON: when, what, which versions), so `finesieve
registry list NAME` shows where each version came from and how the aliases moved.

The store: `uri`, else $FINESIEVE_REGISTRY_URI, else `sqlite:///registry/mlflow.db` under the working directory.
MLflow's model registry needs a database-backed store for aliases to be listed with their versions; its plain file
store (`file:`) lists versions without their aliases and is deprecated in MLflow 3, so a local SQLite file is the
default: offline, no server. Any URI MLflow takes (a tracking server, PostgreSQL) works the same.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finesieve.data.errors import ConfigError
from finesieve.runs import MANIFEST, run_manifest, verify_run_files

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

REGISTRY_ENV = "FINESIEVE_REGISTRY_URI"
DEFAULT_REGISTRY = "sqlite:///registry/mlflow.db"
REF_PREFIX = "registry:"
CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous"
TAG = "finesieve."  # prefix of every tag finesieve writes
HISTORY = TAG + "history."
GATE_FILE = "gate.json"
_REF = re.compile(
    r"^registry:(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*)(?:@(?P<alias>[A-Za-z][A-Za-z0-9_-]*)|/(?P<version>\d+))$"
)
_REFUSED = {"refused", "refuse", "reject", "rejected", "fail", "failed", "block", "blocked"}
_PASSED = {"passed", "pass", "promote", "promoted", "accept", "accepted"}


@dataclass(frozen=True)
class Ref:
    """A parsed `registry:NAME@ALIAS` or `registry:NAME/VERSION`."""

    name: str
    alias: str | None = None
    version: int | None = None

    def __str__(self) -> str:
        return f"{REF_PREFIX}{self.name}@{self.alias}" if self.alias else f"{REF_PREFIX}{self.name}/{self.version}"


@dataclass(frozen=True)
class VersionInfo:
    """One registered version: its run directory, aliases and lineage tags (finesieve.* without the prefix)."""

    version: int
    run_dir: str
    aliases: tuple[str, ...]
    lineage: dict[str, str]
    created: str


@dataclass(frozen=True)
class Change:
    """An alias move by `promote` or `rollback`: `champion` went from `replaced` to `version`."""

    name: str
    action: str
    version: int
    replaced: int | None

    def __str__(self) -> str:
        before = f"version {self.replaced}" if self.replaced is not None else "no version"
        return f"{self.name}: {self.action}: champion is now version {self.version} (was {before})"


@dataclass
class ModelHistory:
    """What `finesieve registry list NAME` prints: each version with its lineage, the aliases, every change."""

    name: str
    versions: list[VersionInfo]
    aliases: dict[str, int]
    history: list[dict[str, Any]] = field(default_factory=list)


def registry_uri(uri: str | None = None) -> str:
    """The registry store to use: `uri`, else $FINESIEVE_REGISTRY_URI, else a SQLite file under ./registry/."""
    return uri or os.environ.get(REGISTRY_ENV) or DEFAULT_REGISTRY


def is_ref(value: object) -> bool:
    return isinstance(value, str) and value.startswith(REF_PREFIX)


def parse_ref(ref: str) -> Ref:
    match = _REF.match(ref.strip())
    if match is None:
        raise ConfigError(
            f"{ref!r} is not a registry reference: write registry:NAME@ALIAS (e.g. registry:spam@champion) or "
            "registry:NAME/VERSION (e.g. registry:spam/3)"
        )
    version = match["version"]
    return Ref(match["name"], match["alias"], int(version) if version is not None else None)


def register(run_dir: str | Path, name: str, *, alias: str | None = None, uri: str | None = None) -> int:
    """Register `run_dir` as a new version of `name` (created when new), with its lineage; returns the version.

    Refuses a run whose model files differ from its manifest's hashes; `alias` (e.g. challenger) is set on it."""
    run_dir = Path(run_dir).resolve()
    verify_run_files(run_dir)  # a ConfigError naming each changed file; an older unhashed run passes (no hashes)
    lineage = _lineage(run_dir)
    client = _client(uri)
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description=f"finesieve model {name!r}: versions are run directories")
    description = f"{run_dir} ({lineage['kind']}; parent {lineage.get('parent_run') or 'none'})"
    created = client.create_model_version(
        name, source=str(run_dir), tags={TAG + k: v for k, v in lineage.items()}, description=description
    )
    version = int(created.version)
    _record(client, name, {"action": "register", "version": version, "run_dir": str(run_dir)})
    if alias:
        set_alias(name, alias, version, uri=uri)
    return version


def set_alias(name: str, alias: str, version: int, *, uri: str | None = None) -> None:
    """Point `alias` of `name` at `version` (which must exist), and record the move."""
    client = _client(uri)
    _version(client, name, version)  # refuses an unknown name or version
    before = _alias_version(client, name, alias)
    client.set_registered_model_alias(name, alias, str(version))
    _record(client, name, {"action": "set_alias", "alias": alias, "version": version, "replaced": before})


def resolve(ref: str | Ref, *, uri: str | None = None) -> Path:
    """The run directory a registry reference names, checked against the manifest hash recorded at registration."""
    ref = parse_ref(ref) if isinstance(ref, str) else ref
    client = _client(uri)
    if ref.alias is not None:
        _model(client, ref.name)
        found = _alias_version(client, ref.name, ref.alias)
        if found is None:
            raise ConfigError(
                f"{ref}: model {ref.name!r} has no alias {ref.alias!r} in {registry_uri(uri)} (its aliases: "
                f"{_aliases_text(client, ref.name)}). Fix: `finesieve register RUN --name {ref.name} --alias "
                f"{ref.alias}`, or name a version as registry:{ref.name}/N"
            )
        version = _version(client, ref.name, found)
    else:
        version = _version(client, ref.name, int(ref.version or 0))
    run_dir = Path(str(version.source))
    recorded = (version.tags or {}).get(TAG + "manifest_sha256")
    if not (run_dir / MANIFEST).is_file():
        raise ConfigError(
            f"{ref} (version {version.version}): its run directory {run_dir} is gone or holds no {MANIFEST}. Fix: "
            "restore the directory, or promote another version"
        )
    if recorded and _sha256(run_dir / MANIFEST) != recorded:
        raise ConfigError(
            f"{ref} (version {version.version}): {run_dir / MANIFEST} changed since it was registered (sha256 "
            f"{recorded[:12]}... recorded). Fix: register the run again as a new version; never serve a run that "
            "changed under its version number"
        )
    return run_dir


def promote(name: str, version: int | None = None, *, force: bool = False, uri: str | None = None) -> Change:
    """Make `version` (default: the current challenger) the champion; the champion it replaces becomes `previous`.

    Refuses a version whose run files fail their hashes, and one whose retraining gate refused it unless `force`."""
    client = _client(uri)
    _model(client, name)
    if version is None:
        version = _alias_version(client, name, CHALLENGER)
        if version is None:
            raise ConfigError(
                f"model {name!r} has no {CHALLENGER!r} alias to promote (its aliases: {_aliases_text(client, name)}). "
                f"Fix: name the version (`finesieve promote {name} --version N`), or register a run with "
                f"--alias {CHALLENGER}"
            )
    target = _version(client, name, version)
    verify_run_files(str(target.source))
    verdict = (target.tags or {}).get(TAG + "gate_verdict")
    if verdict == "refused" and not force:
        report = (target.tags or {}).get(TAG + "gate_report", "its gate.json")
        raise ConfigError(
            f"model {name!r} version {version}: the retraining gate refused it ({report}). Fix: read the gate "
            "report; promote it anyway only on purpose, with --force"
        )
    champion = _alias_version(client, name, CHAMPION)
    if champion == version:
        raise ConfigError(f"model {name!r} version {version} is the champion already: nothing to promote")
    if champion is not None:
        client.set_registered_model_alias(name, PREVIOUS, str(champion))
    client.set_registered_model_alias(name, CHAMPION, str(version))
    change = Change(name, "promote", version, champion)
    _record(client, name, {"action": "promote", "version": version, "replaced": champion, "forced": bool(force)})
    return change


def rollback(name: str, *, uri: str | None = None) -> Change:
    """Point `champion` back at `previous` and drop the `previous` alias (a second rollback needs a new promote).

    Refuses when there is no `previous`, or when its run files fail their hashes."""
    client = _client(uri)
    _model(client, name)
    previous = _alias_version(client, name, PREVIOUS)
    if previous is None:
        raise ConfigError(
            f"model {name!r} has no {PREVIOUS!r} version to roll back to (its aliases: "
            f"{_aliases_text(client, name)}): only a promote leaves one. Fix: promote the version you want, "
            f"`finesieve promote {name} --version N`"
        )
    verify_run_files(str(_version(client, name, previous).source))
    champion = _alias_version(client, name, CHAMPION)
    client.set_registered_model_alias(name, CHAMPION, str(previous))
    client.delete_registered_model_alias(name, PREVIOUS)
    _record(client, name, {"action": "rollback", "version": previous, "replaced": champion})
    return Change(name, "rollback", previous, champion)


def describe(name: str, *, uri: str | None = None) -> ModelHistory:
    """Every version of `name` (oldest first) with its aliases and lineage, the aliases, and the recorded changes."""
    client = _client(uri)
    model = _model(client, name)
    aliases = {alias: int(v) for alias, v in (model.aliases or {}).items()}
    by_version: dict[int, list[str]] = {}
    for alias, v in sorted(aliases.items()):
        by_version.setdefault(v, []).append(alias)
    versions = [
        VersionInfo(
            version=int(v.version),
            run_dir=str(v.source),
            aliases=tuple(by_version.get(int(v.version), [])),
            lineage={k[len(TAG) :]: value for k, value in (v.tags or {}).items() if k.startswith(TAG)},
            created=_when(v.creation_timestamp),
        )
        for v in client.search_model_versions(f"name = '{name}'")
    ]
    history = [json.loads(value) for key, value in sorted((model.tags or {}).items()) if key.startswith(HISTORY)]
    return ModelHistory(name, sorted(versions, key=lambda v: v.version), aliases, history)


# ------------------------------------------------------------------------------------------------ internals


def _client(uri: str | None) -> MlflowClient:
    uri = registry_uri(uri)
    # MLflow 3 refuses a file store unless allowed, and phones home unless told not to (as train.tracking does).
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _model(client: MlflowClient, name: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException:
        known = sorted(m.name for m in client.search_registered_models())
        raise ConfigError(
            f"no registered model {name!r} in {_uri_of(client)} (it holds {known or 'none'}). Fix: check the "
            f"name, or register a run first: `finesieve register RUN --name {name}`"
        ) from None


def _uri_of(client: MlflowClient) -> str:
    return str(getattr(client, "_registry_uri", "the registry"))  # for error messages only


def _version(client: MlflowClient, name: str, version: int) -> ModelVersion:
    from mlflow.exceptions import MlflowException

    _model(client, name)
    try:
        return client.get_model_version(name, str(version))
    except MlflowException:
        known = sorted(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))
        raise ConfigError(
            f"model {name!r} has no version {version} (its versions: {known or 'none'}). Fix: name one of those; "
            "`finesieve registry list` shows them"
        ) from None


def _alias_version(client: MlflowClient, name: str, alias: str) -> int | None:
    found = (client.get_registered_model(name).aliases or {}).get(alias)
    return int(found) if found is not None else None


def _aliases_text(client: MlflowClient, name: str) -> str:
    aliases = client.get_registered_model(name).aliases or {}
    return ", ".join(f"{a} -> {v}" for a, v in sorted(aliases.items())) or "none"


def _record(client: MlflowClient, name: str, event: dict) -> None:
    """Append one change to the model's history (a numbered tag; concurrent writers are not expected: people)."""
    tags = client.get_registered_model(name).tags or {}
    n = sum(1 for key in tags if key.startswith(HISTORY)) + 1
    event = {"at": datetime.now(UTC).isoformat(timespec="seconds"), **event}
    client.set_registered_model_tag(name, f"{HISTORY}{n:05d}", json.dumps(event, sort_keys=True))


def _lineage(run_dir: Path) -> dict[str, str]:
    """The version tags (without the finesieve. prefix): where the run came from and how it scored."""
    manifest = run_manifest(run_dir)
    tags = {
        "run_dir": str(run_dir),
        "manifest_sha256": _sha256(run_dir / MANIFEST),
        "kind": manifest.kind,
        "created_utc": manifest.created_utc,
        "parent_run": manifest.parent_run or "",
        "data_hash": str(manifest.data.get("content_hash") or ""),
        "split_hash": str((manifest.splits or {}).get("split_hash") or ""),
    }
    for set_name, figures in sorted(manifest.metrics.items()):  # "test", "corner:NAME", ...
        for metric in ("roc_auc", "pr_auc", "precision", "recall"):
            value = figures.get(metric) if isinstance(figures, dict) else None
            if isinstance(value, int | float):
                tags[f"metric.{set_name}.{metric}"] = f"{value:.4f}"
    verdict, report = _gate(run_dir, manifest.model_dump())
    if verdict is not None:
        tags["gate_verdict"] = verdict
    if report is not None:
        tags["gate_report"] = report
    return {k: v for k, v in tags.items() if v != ""}


def _gate(run_dir: Path, manifest: dict) -> tuple[str | None, str | None]:
    """The retraining gate's verdict ("passed", "refused", or its own word) and report path; (None, None) without a
    gate (a run not made by `finesieve retrain`). gate.json beside the model wins over the manifest's record."""
    path = run_dir / GATE_FILE
    found: dict = {}
    if path.is_file():
        try:
            found = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as err:
            raise ConfigError(f"{path}: not valid JSON ({err}). Fix: restore the run's gate report") from None
    section = manifest.get("gate") or (manifest.get("retrain") or {}).get("gate") or {}
    for source in (found, section if isinstance(section, dict) else {}):
        for key in ("verdict", "decision", "passed", "promote"):
            if key in source:
                return _verdict(source[key]), str(path) if path.is_file() else source.get("report")
    return None, str(path) if path.is_file() else None


def _verdict(value: object) -> str:
    if isinstance(value, bool):
        return "passed" if value else "refused"
    if isinstance(value, dict):  # {"decision": ..., ...} nested one level
        return _verdict(next((value[k] for k in ("verdict", "decision", "passed") if k in value), str(value)))
    word = str(value).strip().lower()
    return "refused" if word in _REFUSED else "passed" if word in _PASSED else word


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _when(ms: int | None) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds") if ms else ""
