"""The data dir holds bearer tokens and every message: owner only, whatever the umask.

Outside systemd (``make run``, a container) a umask of 022 made the dir 0755
and ``data.mdb`` 0644, readable by every local user. The dir is created 0700
and set so explicitly (``mkdir``'s mode is masked by the umask); LMDB creates
its files with the mode it is given (``FILE_MODE``); a dir or file left
readable by an older version is fixed on start, with one log line each.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import Final

import structlog

log = structlog.get_logger()

DIR_MODE: Final = 0o700
FILE_MODE: Final = 0o600


def prepare(path: Path) -> None:
    """Create ``path`` (and parents) if needed, then make it and its files owner-only.

    Raises:
        OSError: it cannot be created or its modes cannot be set.
    """
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    _tighten(path, DIR_MODE)
    with os.scandir(path) as entries:
        for entry in entries:
            if entry.is_file(follow_symlinks=False):
                # Another process opening the same dir at once (the workers of ``--workers N``
                # each open every bucket) may remove its own file between listing and lstat.
                with contextlib.suppress(FileNotFoundError):
                    _tighten(Path(entry.path), FILE_MODE)


def _tighten(path: Path, wanted: int) -> None:
    mode = stat.S_IMODE(path.lstat().st_mode)
    if mode & ~wanted:  # group or others may read/write/enter: take those bits away
        path.chmod(mode & wanted)
        log.warning("store.permissions_fixed", path=str(path), was=oct(mode), now=oct(mode & wanted))
