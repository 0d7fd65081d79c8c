"""Finding encoder weights: fail fast without a network, and know exactly what was loaded.

Two concerns shared by the encoders (whose `identity`, read from these files, also lets a
finished cache be recognised without loading any model) live here:
- Fetching. A model id that is not on this machine costs one quick reachability probe
  (a few seconds at most), never the minutes of retries the hub clients would spend; when
  the hub is unreachable the user gets one sentence pointing at `--preset offline` or a
  local path.
- Identity. The fingerprint names each encoder by the SHA-256 of its weight files (plus
  the hub revision when there is one), not by the path it was loaded from, so two machines
  holding the same weights in different folders can fill one cache, and a silently changed
  checkpoint cannot.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

from typing import Any, Callable

from emo.errors import NetworkError, UsageError

PROBE_TIMEOUT_S = 4.0
_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def looks_like_path(name: str) -> bool:
    """A model reference meant as a file or folder rather than a hub id (`org/name`)."""
    if Path(name).expanduser().exists():
        return True
    return name.startswith((".", "/", "~")) or name.endswith((".pt", ".pth", ".bin", ".safetensors"))


def endpoint_reachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """One TCP connect to the host of `url`, bounded in time even when DNS hangs."""
    parsed = urlparse(url if "://" in url else f"https://{url}")
    host = parsed.hostname
    if not host:
        return False
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 1.0)
    return bool(result and result[0])


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


# Pip-shipped choices worth naming beside --preset offline, per option.
OFFLINE_CHOICES = {"--audio-model": "--audio-model whisper-base", "--text-model": "--text-model all-mpnet-base-v2"}


def offline_sentence(what: str, name: str, option: str) -> str:
    extra = f" or {OFFLINE_CHOICES[option]}" if option in OFFLINE_CHOICES else ""
    return (
        f"The {what} '{name}' is not on this machine and the model hub cannot be reached; "
        f"use --preset offline{extra}, or pass a local path with {option}."
    )


def require_hub(what: str, name: str, option: str) -> None:
    """Raise NetworkError at once when a download would be needed but cannot happen."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes") or not endpoint_reachable(hub_endpoint()):
        raise NetworkError(offline_sentence(what, name, option))


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, memoised per (path, size, mtime) since weights are large."""
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _HASH_CACHE:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
        _HASH_CACHE[key] = digest.hexdigest()
    return _HASH_CACHE[key]


def files_sha256(paths: list[Path]) -> str:
    """One digest over several files (e.g. sharded weights), independent of folder."""
    digest = hashlib.sha256()
    for path in sorted(paths, key=lambda p: Path(p).name):
        digest.update(Path(path).name.encode("utf-8"))
        digest.update(file_sha256(Path(path)).encode("ascii"))
    return digest.hexdigest()


WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth")


def weight_files(folder: Path) -> list[Path]:
    """The weight files of a model folder; safetensors win when both formats are present."""
    folder = Path(folder)
    safetensors = sorted(folder.glob("*.safetensors"))
    if safetensors:
        return safetensors
    found: list[Path] = []
    for pattern in WEIGHT_PATTERNS[1:]:
        found.extend(sorted(folder.glob(pattern)))
    return [p for p in found if "training_args" not in p.name]


def first_line(error: Exception) -> str:
    """An exception's first line as a sentence, for a one-sentence error."""
    lines = str(error).strip().splitlines()
    line = lines[0] if lines else type(error).__name__
    return line if line.endswith(".") else line + "."


def local_model_folder(name: str) -> tuple[Path | None, str | None]:
    """A model's folder on this machine and its hub revision, found without loading it:
    the folder itself for a path, the local hub cache's snapshot for an id; (None, None)
    when it is not here."""
    if looks_like_path(name):
        folder = Path(name).expanduser()
        return (folder, None) if folder.is_dir() else (None, None)
    try:
        from huggingface_hub import try_to_load_from_cache

        config_file = try_to_load_from_cache(name, "config.json")
    except Exception:  # noqa: BLE001 - not locatable only means "load it and see"
        return None, None
    if not isinstance(config_file, str):
        return None, None
    folder = Path(config_file).parent
    return folder, folder.name if folder.parent.name == "snapshots" else None


def load_pretrained(loader: Callable[..., Any], name: str, what: str, option: str) -> Any:
    """`loader(name)` (a transformers `from_pretrained`) without hanging: local folders with
    local_files_only; hub ids from the local cache first, then one download only if the hub
    answers a quick probe (else one sentence naming `option`). `what` is e.g. "text model"."""
    if looks_like_path(name):
        folder = Path(name).expanduser()
        if not folder.is_dir():
            raise UsageError(f"{what.capitalize()} folder {folder} does not exist.")
        try:
            return loader(str(folder), local_files_only=True)
        except (OSError, ValueError) as error:
            raise UsageError(
                f"{what.capitalize()} folder {folder} does not hold a usable model: {first_line(error)}"
            ) from None
    try:
        return loader(name, local_files_only=True)
    except (OSError, ValueError):
        pass
    require_hub(what, name, option)
    try:
        return loader(name)
    except (OSError, ValueError) as error:
        raise UsageError(
            f"{what.capitalize()} '{name}' could not be loaded from the hub: {first_line(error)}"
        ) from None
