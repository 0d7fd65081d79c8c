"""A small disk for full-disk tests, made for real where the machine allows it.

Disk-full handling is only worth testing against the real failure: the C libraries under
emo (HDF5, Zarr's codecs, torch's zip writer, matplotlib) each see ENOSPC from the kernel,
not from a Python mock. So `small_disk` mounts a tmpfs of a few hundred KiB when the test
runs as root (CI does), and otherwise falls back to a per-process file-size limit
(`RLIMIT_FSIZE`, with SIGXFSZ ignored), under which the kernel fails the same `write(2)`
calls with EFBIG. Either way no emo function is patched; `SmallDisk.method` says which one
a test used, and tests print it so a log shows it.

Usage (the command runs in a child process, since only the child gets the rlimit):

    with small_disk(tmp_path, kib=512) as disk:
        result = subprocess.run([...], cwd=..., preexec_fn=disk.preexec, ...)
        disk.grow()            # "free space": the same command must now finish
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator


@dataclass
class SmallDisk:
    path: Path  # a folder on the small disk: put the artifact under test here
    method: str  # "tmpfs" (a real full filesystem) or "rlimit-fsize" (write(2) fails with EFBIG)
    kib: int
    _limited: bool = True

    @property
    def preexec(self) -> Callable[[], None] | None:
        """`preexec_fn` for subprocess: applies the file-size limit in the rlimit method."""
        if self.method != "rlimit-fsize" or not self._limited:
            return None
        limit = self.kib * 1024

        def apply() -> None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        return apply

    def fill(self) -> None:
        """Leave no room at all: the tmpfs is filled to its last byte (a hidden `.filler`
        file, which `grow` leaves in place), or the file-size limit drops to 0 bytes."""
        if self.method != "tmpfs":
            self.kib = 0
            return
        with open(self.path / ".filler", "ab", buffering=0) as handle:
            for size in (65536, 4096, 512, 1):  # what did not fit is tried again in smaller pieces
                with contextlib.suppress(OSError):
                    while handle.write(b"\0" * size):
                        pass

    def grow(self, kib: int = 512 * 1024) -> None:
        """Free space: the tmpfs is remounted bigger (its files stay), or the limit is lifted."""
        if self.method == "tmpfs":
            subprocess.run(["mount", "-o", f"remount,size={kib}k", str(self.path)], check=True)
        else:
            self._limited = False
        self.kib = kib


def _can_mount() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("mount") is not None


@contextlib.contextmanager
def small_disk(tmp_path: Path, kib: int = 512) -> Iterator[SmallDisk]:
    """A folder with about `kib` KiB of room (see the module docstring for how)."""
    folder = Path(tmp_path) / f"small-disk-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)
    mounted = False
    if _can_mount():
        mounted = (
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(folder)], capture_output=True
            ).returncode
            == 0
        )
    try:
        yield SmallDisk(folder, "tmpfs" if mounted else "rlimit-fsize", kib)
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)
