"""Files written whole or not at all: the template snapshots, parked data sets and spooled batches
that a restart reads back. A reader never sees half a file, a crash leaves at most a temporary
file (named `.<name>.<pid>.<thread>.tmp`, which nothing reads), and a failed write removes its own."""

from __future__ import annotations

import os
import threading
from pathlib import Path


def write_atomically(path: Path, data: bytes | memoryview, *, sync_directory: bool = False) -> None:
    """Blocking: write to a temporary file beside `path`, fsync it, rename it over `path`; with
    `sync_directory`, fsync the directory too, so the rename itself survives a power loss. Each
    process and thread has its own temporary file, so concurrent writers of one path never mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with temporary.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError:
        temporary.unlink(missing_ok=True)
        raise
    if sync_directory:
        _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
