"""The one read of an input file, for the local worker and the Celery publisher alike.

Opened without following a link and without blocking (a FIFO swapped in after the claim would hang the
read), checked to be a regular file on the descriptor itself, and read at most `max_bytes + 1` bytes from
that descriptor: a file that grows, a device, a link to /dev/zero are each refused, never read whole.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from daemon.errors import TranscriptError

READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
CHUNK_BYTES = 1 << 20


def read_input(path: Path, max_bytes: int, name: str) -> bytes:
    """The file's bytes; TranscriptError (permanent) for what is not a regular file or is over `max_bytes`, an
    OSError (transient: EIO, a file gone) otherwise."""
    try:
        fd = os.open(path, READ_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise TranscriptError(name, None, "a symbolic link: never followed or read") from exc
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise TranscriptError(name, None, "not a regular file: never read")
        if info.st_size > max_bytes:
            raise TranscriptError(name, None, f"file is {info.st_size:,} bytes, over the {max_bytes:,}-byte limit")
        os.set_blocking(fd, True)
        chunks, size = [], 0
        while size <= max_bytes:
            chunk = os.read(fd, min(CHUNK_BYTES, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > max_bytes:
        raise TranscriptError(name, None, f"file grew past the {max_bytes:,}-byte limit while it was read")
    return b"".join(chunks)
