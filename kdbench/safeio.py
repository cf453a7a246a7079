"""Files on a shared file system: read bounded, written whole, readable by the group.

A results root, a weights cache and a study folder may live where other accounts can write. So:

- every file kdbench reads from a spec or a results root is read with ``read_capped``: a regular
  file only (a FIFO, a device or a directory is refused without blocking on it), never through a
  link that leads out of the folder it belongs to (``root``), and never more than a cap:
  ``SPEC_CAP`` for studies, defaults files and run files, ``RESULT_CAP`` for a run's JSON files
  (final.json, error.json, spec.json, env.json, job.json), ``METRICS_CAP`` for its metrics.jsonl
  and ``REFERENCE_CAP`` for a reference CSV;
- every file is written through a temporary file that is created exclusively (a unique name;
  ``O_EXCL`` never follows a planted link) in the target folder, then renamed over the target
  (kdbench.store.write_bytes_atomic); a rename replaces a link, it never writes through it;
- files get the mode the process umask gives (0644 under the usual 0022, 0664 under 0002), as
  ``open`` would, not the 0600 of a bare temporary file, so a group can share a root.
"""

from __future__ import annotations

import os
import re
import stat
import threading
import time
from pathlib import Path

SPEC_CAP = 1 << 20          # 1 MiB: the largest shipped study is under 8 KB
RESULT_CAP = 4 << 20        # 4 MiB: an error.json with a long traceback is tens of KB
METRICS_CAP = 64 << 20      # 64 MiB: one line per evaluation
REFERENCE_CAP = 1 << 20     # 1 MiB: the shipped reference tables are a few KB each

# What tempfile.mkstemp names a temporary file here: ``.<target name>.<8 random characters>.tmp``.
TEMPORARY = re.compile(r"\..+\.[A-Za-z0-9_]{8}\.tmp")
_umask_lock = threading.Lock()


class UnsafeFile(OSError):
    """A file kdbench will not read: not a regular file, too large, or a link out of its root.
    ``str()`` is one line naming the file and the reason."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(reason)
        self.path = os.fspath(path)
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory")):
        if test(mode):
            return name
    return "not a regular file"


def _inside(path: str, root: str) -> bool:
    return os.path.commonpath([path, root]) == root


def _real_path(fd: int, path: str) -> str:
    """The path of the open file itself (Linux: /proc/self/fd), else its path resolved."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return os.path.realpath(path)


def read_capped(path: str | Path, cap: int, root: str | Path | None = None) -> bytes:
    """The bytes of ``path``, a regular file of at most ``cap`` bytes that, with ``root`` given,
    lies inside ``root`` once every link is followed. Anything else is an UnsafeFile naming the
    reason; a missing file is the usual FileNotFoundError."""
    path = os.fspath(path)
    mode = os.stat(path).st_mode    # before opening: a device is never opened, a FIFO never waited on
    if not stat.S_ISREG(mode):
        raise UnsafeFile(path, f"{_kind(mode)}, not a regular file")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)         # the file opened, whatever a link was changed to meanwhile
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeFile(path, f"{_kind(info.st_mode)}, not a regular file")
        if root is not None:
            real, top = _real_path(fd, path), os.path.realpath(root)
            if not _inside(real, top):
                raise UnsafeFile(path, f"a link to {real}, outside {top}")
        if info.st_size > cap:
            raise UnsafeFile(path, f"{info.st_size:,} bytes, over the {cap:,}-byte limit for this file")
        chunks, size = [], 0
        while size <= cap:
            chunk = os.read(fd, min(1 << 20, cap + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > cap:              # it grew while being read
            raise UnsafeFile(path, f"over the {cap:,}-byte limit for this file")
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_text_capped(path: str | Path, cap: int, root: str | Path | None = None) -> str:
    """``read_capped`` decoded as UTF-8 (a UnicodeDecodeError, a ValueError, when it is not)."""
    return read_capped(path, cap, root).decode()


def umask() -> int:
    """The process umask, read without changing it where Linux says it (/proc/self/status)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode ``open`` gives a new file: 0o666 less the umask."""
    return 0o666 & ~umask()


def open_no_follow(path: str | Path, flags: int, mode: int = 0o666) -> int:
    """``os.open`` of a file kdbench appends to or locks, refusing a link in its place (ELOOP)."""
    return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)


def clean_leftovers(folder: str | Path, older_than: float | None = None) -> list[Path]:
    """Delete the temporary files a killed writer left in ``folder`` (``.NAME.XXXXXXXX.tmp``),
    those older than ``older_than`` seconds when given (a writer may be busy with a fresh one);
    returns what was deleted. A link is deleted, never followed."""
    deleted = []
    now = time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return deleted
    for entry in entries:
        if not TEMPORARY.fullmatch(entry.name):
            continue
        try:
            info = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(info.st_mode) or (older_than is not None and now - info.st_mtime < older_than):
                continue
            os.unlink(entry.path)
            deleted.append(Path(entry.path))
        except OSError:
            pass
    return deleted
