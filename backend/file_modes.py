"""Files of ours are readable by us only (issue 14, finding 7).

The data directory holds device password hashes (the SQLite database and its `-wal`), the
generated secrets, the broker's sessions and queued commands, the simulator's device
credentials and logs. Every entry point calls `restrict_new_files()` first, so whatever
the process creates is 0600 (files) / 0700 (folders), SQLite's `-wal`/`-shm` included
(SQLite creates them itself, with the process umask). `tighten()` fixes what an older
version left group- or world-readable.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

PRIVATE_UMASK = 0o077
FILE_MODE = 0o600
DIR_MODE = 0o700
SQLITE_SUFFIXES = ("", "-wal", "-shm", "-journal")


def restrict_new_files() -> None:
    """Files and folders this process creates from now on: owner only."""
    os.umask(PRIVATE_UMASK)


def _tighten_one(path: Path) -> None:
    try:
        info = path.lstat()
    except OSError:
        return
    if stat.S_ISLNK(info.st_mode):
        return  # never follow a link out of our directory
    wanted = DIR_MODE if stat.S_ISDIR(info.st_mode) else FILE_MODE
    if stat.S_IMODE(info.st_mode) & ~wanted:
        try:
            os.chmod(path, stat.S_IMODE(info.st_mode) & wanted)
        except OSError as exc:
            log.warning("cannot restrict %s to mode %o: %s", path, wanted, exc.strerror)


def tighten(data_dir: Path, extra_files: Iterable[Path] = ()) -> None:
    """Remove group and other access from `data_dir`, everything in it, and `extra_files`
    (e.g. a SQLite database outside the data dir, with its `-wal` and `-shm`)."""
    if data_dir.is_dir() and not data_dir.is_symlink():
        _tighten_one(data_dir)
        for root, dirs, files in os.walk(data_dir):
            for name in (*dirs, *files):
                _tighten_one(Path(root) / name)
    for path in extra_files:
        _tighten_one(path)


def sqlite_files(db_url: str) -> list[Path]:
    """The files of a `sqlite:///...` database (none for other URLs)."""
    prefix = "sqlite:///"
    if not db_url.startswith(prefix):
        return []
    base = db_url[len(prefix) :].split("?", 1)[0]
    if not base or base == ":memory:":
        return []
    return [Path(base + suffix) for suffix in SQLITE_SUFFIXES]
