"""Writer locks: which process is writing which feature set (and row table) of a cache, now.

Shards are written atomically, so no process ever leaves half a file; but two runs writing
one set with different settings would each leave a valid-looking part of it (set.json from
one, shards from the other: every shard then fails `emo cache verify`), and two runs
writing the same shards race on their temporaries. So before it writes, a run registers
as a holder of the row table's lock and of each of its sets' locks:

    CACHE/.locks/rows/HOST-PID-NONCE.lock            one file per holder, JSON: host, pid,
    CACHE/.locks/sets/<modality>/<name>/...lock      started, digest, scope (splits, shards)
    CACHE/.locks/.../mutex                           held for milliseconds while one registers

Lock files, not flock: caches live on shared file systems (a SLURM array's nodes) whose
advisory locks are unreliable, while creating a file with O_CREAT|O_EXCL is atomic on all
of them. The folder is hidden, so nothing that lists a cache's shards or sets sees it.

A run is refused, in one sentence naming the holder, when a live holder of the same thing
has another digest (other settings) or may write the same shards: a split both name, and
`--shard-index` values that can meet (two whole-split runs, one task twice). Tasks of one
array (same digest and `--num-shards`, different `--shard-index`) write disjoint shards and
hold the lock side by side. This module is the only code that knows these files.

A holder is dead when, on this machine, its process is gone, or, on any machine, its file
was not refreshed for `STALE_S` (a live holder touches it every `HEARTBEAT_S`); a dead
holder's lock is taken over. Holders are only added or taken over by the one process that
holds the folder's mutex, so two takers never both win. If the mutex's own holder died in
its milliseconds, the mutex is renamed aside and created again with O_EXCL; a process that
finds at the end of its turn that the mutex is no longer its own withdraws its holder file
and tries again, so even two processes that both believed they held the mutex cannot both
register conflicting holders.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import random
import re
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

from emo.atomic import disk_full_as_error, pid_alive, this_host
from emo.errors import CacheError

LOCKS_DIR = ".locks"
HEARTBEAT_S = 15.0  # how often a holder refreshes its lock file
STALE_S = 120.0  # a lock file not refreshed for this long belongs to a dead (or frozen) process
MUTEX_STALE_S = 30.0  # a mutex is held for milliseconds: older than this, its holder died
MUTEX_WAIT_S = 60.0  # how long to wait for a live mutex holder before giving up
_MUTEX = "mutex"
_HOLDER_RE = re.compile(r"^([A-Za-z0-9_]+)-(\d+)-([0-9a-f]+)\.lock$")


@dataclass(frozen=True)
class Scope:
    """The shards a writer may touch: those of `splits` numbered `shard_index` modulo `num_shards`."""

    splits: tuple[str, ...]
    num_shards: int = 1
    shard_index: int = 0

    def overlaps(self, other: "Scope") -> bool:
        """True when some shard k of a split both name has k % N1 == i1 and k % N2 == i2."""
        if not set(self.splits) & set(other.splits):
            return False
        return (self.shard_index - other.shard_index) % math.gcd(self.num_shards, other.num_shards) == 0

    def to_dict(self) -> dict[str, Any]:
        return {"splits": list(self.splits), "num_shards": self.num_shards, "shard_index": self.shard_index}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Scope":
        return cls(tuple(data.get("splits", ())), int(data.get("num_shards", 1)), int(data.get("shard_index", 0)))


def lock_folder(root: Path, what: str | None) -> Path:
    """The lock folder of the row table (`what` None) or of the set named `what`."""
    base = Path(root) / LOCKS_DIR
    return base / "rows" if what is None else base / "sets" / what


# -- holding ---------------------------------------------------------------------------------


class WriterLocks:
    """The holder files of one run; refreshed by a background thread until `release`."""

    def __init__(self, root: Path, created_root: bool) -> None:
        self.root = Path(root)
        self.paths: dict[str, Path] = {}
        self._folders: list[Path] = []  # lock folders this run made or used, removed when left empty
        self._created_root = created_root
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._refresh, name="emo-lock-heartbeat", daemon=True)
        self._thread.start()

    def _refresh(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            for path in list(self.paths.values()):
                with contextlib.suppress(OSError):
                    os.utime(path)

    def check(self) -> None:
        """Raise if another process took a lock of this run over (this process was frozen
        for longer than `STALE_S`, e.g. suspended): it must stop writing now."""
        for what, path in self.paths.items():
            if not path.exists():
                raise CacheError(
                    f"The writer lock of {_what(what)} in {self.root} was taken over by another process while this "
                    "run was paused, so it stopped before writing more; run the same command again once that "
                    f"process has finished (see `emo cache status {self.root}`)."
                )

    def release(self) -> None:
        """Remove the holder files (and lock folders left empty); safe to call twice."""
        self._stop.set()
        for path in self.paths.values():
            with contextlib.suppress(OSError):
                path.unlink()
        for folder in self._folders:
            _remove_empty_up_to(folder, self.root)
        self.paths.clear()
        if self._created_root:  # nothing else was written: leave no cache folder behind
            with contextlib.suppress(OSError):
                self.root.rmdir()

    def __enter__(self) -> "WriterLocks":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def acquire(root: str | Path, digests: Mapping[str | None, str], scope: Scope) -> WriterLocks:
    """Register this process as a writer of every `what` in `digests` (None: the row table,
    else a set's name -> its fingerprint digest) for `scope`; one sentence naming the
    holder when another live writer stands in the way. Nothing is held after an error."""
    root = Path(root)
    held = WriterLocks(root, created_root=not root.exists())
    try:
        with disk_full_as_error(root / LOCKS_DIR):
            for what, digest in digests.items():
                held._folders.append(lock_folder(root, what))
                held.paths["rows" if what is None else str(what)] = _register(root, what, digest, scope)
    except BaseException:
        held.release()
        raise
    held._start()
    return held


def _register(root: Path, what: str | None, digest: str, scope: Scope) -> Path:
    folder = lock_folder(root, what)
    deadline = time.monotonic() + MUTEX_WAIT_S
    while True:
        with _mutex(folder, deadline) as still_mine:
            for path, holder in _holders(folder):
                if _stale(path, holder):
                    _remove(path)
                    continue
                refusal = _refusal(root, what, holder, digest, scope)
                if refusal:
                    raise CacheError(refusal)
            path = folder / f"{this_host()}-{os.getpid()}-{uuid.uuid4().hex[:12]}.lock"
            record = {
                "what": "rows" if what is None else what,
                "host": this_host(),
                "pid": os.getpid(),
                "started": _now(),
                "digest": digest,
                "scope": scope.to_dict(),
            }
            _create(path, record)
            if still_mine():
                return path
            _remove(path)  # two processes held the mutex at once: withdraw and try again
        time.sleep(random.uniform(0.01, 0.05))


def _refusal(root: Path, what: str | None, holder: dict[str, Any], digest: str, scope: Scope) -> str | None:
    """The sentence refusing a writer of `what` while `holder` lives, or None if they can share."""
    theirs = Scope.from_dict(holder.get("scope") or {})
    who = f"process {holder.get('pid')} on {holder.get('host')} since {holder.get('started')} ({_scope_words(theirs)})"
    status = f"see `emo cache status {root}`"
    if holder.get("digest") != digest:
        hint = "or choose another --name" if what is not None else "or use another --cache"
        return (
            f"{_what(what, cap=True)} in {root} is being written with other settings by {who}; "
            f"wait for it to finish {hint} ({status})."
        )
    if theirs.overlaps(scope):
        return f"{_what(what, cap=True)} in {root} is already being written by {who}; wait for it to finish ({status})."
    return None


def _scope_words(scope: Scope) -> str:
    splits = ", ".join(scope.splits) or "no split"
    if scope.num_shards == 1:
        return f"{splits}, every shard"
    return f"{splits}, --shard-index {scope.shard_index} of --num-shards {scope.num_shards}"


def _what(what: str | None, cap: bool = False) -> str:
    if what in (None, "rows"):
        return "The row table" if cap else "the row table"
    return f"Feature set {what}" if cap else f"feature set {what}"


# -- reading (status) ------------------------------------------------------------------------


def holders(root: str | Path) -> list[dict[str, Any]]:
    """Every writer lock in the cache: its record plus `live` (False: a dead process's, taken
    over by the next writer), `refreshed` (last heartbeat) and `file`."""
    base = Path(root) / LOCKS_DIR
    found = []
    # os.walk, not rglob: writers remove their lock folders while this reads (`emo cache status`
    # during an extraction), and rglob raises when a folder goes between listing and entering.
    files = [Path(top) / name for top, _, names in os.walk(base) for name in names if name.endswith(".lock")]
    for path in sorted(files):
        holder = _record(path)
        try:
            refreshed = _dt.datetime.fromtimestamp(path.stat().st_mtime).astimezone().replace(microsecond=0)
            live = not _stale(path, holder)
        except OSError:  # released while this read it
            continue
        found.append({**holder, "file": str(path), "refreshed": refreshed.isoformat(), "live": live})
    return found


def describe(holder: Mapping[str, Any]) -> str:
    """`audio/mel: process 123 on node7 since ... (train, every shard)` for `emo cache status`."""
    scope = Scope.from_dict(holder.get("scope") or {})
    state = "" if holder.get("live") else " - dead, the next run takes it over"
    what = "row table" if holder.get("what") == "rows" else holder.get("what", "?")
    return (
        f"{what}: process {holder.get('pid')} on {holder.get('host')} since "
        f"{holder.get('started')} ({_scope_words(scope)}){state}"
    )


# -- files -----------------------------------------------------------------------------------


def _now() -> str:
    return _dt.datetime.now().astimezone().replace(microsecond=0).isoformat()


def _create(path: Path, record: dict[str, Any]) -> None:
    """Create `path` holding `record`, failing with FileExistsError if it exists (O_EXCL)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, (json.dumps(record) + "\n").encode())
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        _remove(path)
        raise
    os.close(fd)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _remove_empty_up_to(folder: Path, root: Path) -> None:
    """Remove `folder` and its parents while they are empty, up to the cache's lock folder."""
    stop = Path(root)
    while folder != stop and stop in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


def _holders(folder: Path) -> list[tuple[Path, dict[str, Any]]]:
    return [(p, _record(p)) for p in sorted(folder.glob("*.lock"))]


def _record(path: Path) -> dict[str, Any]:
    """A holder file's record; for one left empty by a crash right after its creation, what
    its name tells (host and pid)."""
    holder = _read(path) or {}
    match = _HOLDER_RE.match(path.name)
    if match and "pid" not in holder:
        base = next(p for p in path.parents if p.name == LOCKS_DIR)
        what = path.parent.relative_to(base).as_posix().removeprefix("sets/")
        holder = {"what": what, "host": match.group(1), "pid": int(match.group(2))}
    return holder


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


def _stale(path: Path, holder: Mapping[str, Any]) -> bool:
    """A holder file of a dead process: gone on this machine, or not refreshed for STALE_S."""
    match = _HOLDER_RE.match(path.name)
    if match and match.group(1) == this_host() and not pid_alive(int(match.group(2))):
        return True
    return _age(path) > STALE_S


# -- the mutex -------------------------------------------------------------------------------


@contextlib.contextmanager
def _mutex(folder: Path, deadline: float) -> Iterator[Any]:
    """Hold `folder`'s mutex for one turn; yields `still_mine()` (the mutex file is still the
    one this turn created, i.e. nobody broke it meanwhile)."""
    path = folder / _MUTEX
    nonce = uuid.uuid4().hex
    record = {"host": this_host(), "pid": os.getpid(), "nonce": nonce, "taken": _now()}
    while True:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            _create(path, record)
            break
        except FileExistsError:
            pass
        except FileNotFoundError:  # the folder was removed by a releasing holder: again
            continue
        holder = _read(path)
        if _mutex_stale(path, holder):
            _take_aside(path, holder)
            continue
        if time.monotonic() > deadline:
            who = f"process {holder.get('pid')} on {holder.get('host')}" if holder else "another process"
            raise CacheError(
                f"Waited {MUTEX_WAIT_S:.0f} s for {who} to release the lock file {path}; "
                "if no emo process is running, delete that file and run the same command again."
            )
        time.sleep(random.uniform(0.01, 0.05))

    def still_mine() -> bool:
        return (_read(path) or {}).get("nonce") == nonce

    try:
        yield still_mine
    finally:
        if still_mine():
            _remove(path)


def _mutex_stale(path: Path, holder: Mapping[str, Any] | None) -> bool:
    if holder and holder.get("host") == this_host() and not pid_alive(int(holder.get("pid", 0) or 0)):
        return True
    return _age(path) > MUTEX_STALE_S  # also a file left empty by a crash right after its creation


def _take_aside(path: Path, judged: Mapping[str, Any] | None) -> None:
    """Take a stale mutex away atomically: rename it aside (only one taker can), check that
    what moved is the file judged stale, and put back a fresh one moved by mistake."""
    aside = path.with_name(f"{path.name}.stale-{this_host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return  # another taker was first
    moved = _read(aside)
    if (moved or {}).get("nonce") != (judged or {}).get("nonce"):
        with contextlib.suppress(OSError):
            os.link(aside, path)  # not the stale one: give it back unless a newer one exists
    _remove(aside)
