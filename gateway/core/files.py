"""Owner-only files: what the gateway keeps on local disk is its owner's alone.

The embedded profile's ``var/`` holds the SQLite database (staff sessions,
TOTP seeds, token hashes), the generated ``SECRET_KEY``, the store's epoch
and the usage spool (device ids, client IPs, costs); SPEC section 1 wants
them readable by their owner only. Each is created owner-only from the
start, with explicit modes whatever the umask, and ``protect_local_files``
tightens at start-up what an older install, a copy or a restored backup
left open.

No Django import here: settings use it before Django is set up.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)
T = TypeVar("T")

DIRECTORY_MODE = 0o700
FILE_MODE = 0o600
# Permission bits for the group and for others: the ones taken away.
_OPEN_TO_OTHERS = 0o077


def tighten(path: Path) -> None:
    """Take every group and other permission off ``path``, if it exists."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & _OPEN_TO_OTHERS:
            os.chmod(path, mode & ~_OPEN_TO_OTHERS)
    except FileNotFoundError:
        return
    except PermissionError:
        # Not ours (e.g. a volume mounted by root): say so, serve anyway.
        logger.warning("%s is open to other users and cannot be made private", path)


def private_directory(path: Path) -> Path:
    """``path`` as an owner-only directory: created so (with any missing parents), or tightened."""
    path.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
    tighten(path)
    return path


def create_private(path: Path, text: str = "") -> None:
    """Create ``path`` holding ``text``, owner-only from its first byte, unless it exists.

    Written aside then linked into place: a concurrent reader never sees it
    half-written, and of two processes creating it at once the first wins
    and both then read what it wrote.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    _write(temporary, text)
    try:
        os.link(temporary, path)
    except FileExistsError:
        pass
    finally:
        temporary.unlink()


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically, owner-only (one writer per process at a time)."""
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    _write(temporary, text)
    os.replace(temporary, path)


def open_private_append(path: Path) -> int:
    """A descriptor appending to ``path``, created owner-only if missing."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, FILE_MODE)


def _write(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
    with open(fd, "w", encoding="utf-8") as stream:
        # A file left by a crashed writer keeps its old mode through O_TRUNC.
        os.fchmod(stream.fileno(), FILE_MODE)
        stream.write(text)


def protect_local_files(*, var_dir: Path, sqlite_database: Path | None, spool_dir: Path) -> None:
    """Start-up: create the SQLite database owner-only before SQLite would (with the
    umask's mode; its -wal and -shm copy the database's), and tighten the var
    directory, the spool and everything in them."""
    if sqlite_database is not None and sqlite_database.parent.is_dir():
        if not sqlite_database.exists():
            create_private(sqlite_database)
        for suffix in ("", "-wal", "-shm", "-journal"):
            tighten(sqlite_database.with_name(sqlite_database.name + suffix))
    if var_dir.is_dir():
        _tighten_tree(var_dir)
    if spool_dir.is_dir() and not spool_dir.resolve().is_relative_to(var_dir.resolve()):
        _tighten_tree(spool_dir)


def _tighten_tree(root: Path) -> None:
    tighten(root)
    for directory, subdirectories, names in os.walk(root):
        for name in [*subdirectories, *names]:
            path = Path(directory, name)
            if not path.is_symlink():  # a link's target is not necessarily ours to change
                tighten(path)


class WatchedFile(Generic[T]):
    """A small file's parsed content, read again only when the file changed.

    Its writers replace the file, so the inode changes even when two writes
    fall inside one tick of the file system's mtime resolution. A missing
    or empty file reads as ``default``.
    """

    __slots__ = ("_default", "_parse", "_stamp", "_value", "path")

    def __init__(self, path: Path, parse: Callable[[str], T], default: T) -> None:
        self.path = path
        self._parse = parse
        self._default = default
        self._stamp: tuple[int, int] | None = None
        self._value = default

    def value(self) -> T:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._stamp = None
            return self._default
        stamp = (stat.st_ino, stat.st_mtime_ns)
        if stamp != self._stamp:
            text = self.path.read_text().strip()
            self._value = self._parse(text) if text else self._default
            self._stamp = stamp
        return self._value
