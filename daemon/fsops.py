"""File system steps the queue trusts: folders opened without following links, moves that never overwrite,
folder fsyncs.

An inbox is written by other accounts: between the daemon's scan and its move, a subfolder may be swapped for
a link to anywhere. So a folder of the inbox is reached one component at a time with O_NOFOLLOW, and the move
is made relative to that descriptor: what is moved is what lies in the inbox, never what a link points to.
A move into archive/ or failed/ is renameat2(RENAME_NOREPLACE), or link + unlink where the file system has
no such flag: a name taken meanwhile is never replaced.
"""

from __future__ import annotations

import ctypes
import errno
import os
import time
from pathlib import Path

from daemon.names import fitted

RENAME_NOREPLACE = 1
# errors of a folder, whatever is written into it: a fault of the host, not of one file
HOST_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO}
FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_libc = ctypes.CDLL(None, use_errno=True)
_libc_renameat2 = getattr(_libc, "renameat2", None)


class Folder:
    """A folder under `root` (`relative` may be "" or `a/b`), opened one component at a time without following a
    link (made first where missing, with `create`); raises OSError (ELOOP, ENOTDIR, ENOENT) where a component
    is not a plain folder."""

    def __init__(self, root: Path, relative: str, create: bool = False):
        self.fd = os.open(root, FOLDER_FLAGS)
        try:
            for part in (p for p in relative.split("/") if p):
                if create:
                    try:
                        os.mkdir(part, dir_fd=self.fd)
                    except FileExistsError:
                        pass
                child = os.open(part, FOLDER_FLAGS, dir_fd=self.fd)
                os.close(self.fd)
                self.fd = child
        except BaseException:
            os.close(self.fd)
            raise

    def __enter__(self) -> "Folder":
        return self

    def __exit__(self, *_exc: object) -> None:
        os.close(self.fd)


def is_host_fault(exc: OSError, folder: Path) -> bool:
    """Whether writing into `folder` failed for a reason of the folder's (full, read-only, not ours to write)."""
    return exc.errno in HOST_ERRNOS or (exc.errno in (errno.EACCES, errno.EPERM)
                                        and not os.access(folder, os.W_OK | os.X_OK))


def _renameat2(src_fd: int, src: str, dst_fd: int, dst: str) -> None:
    if _libc_renameat2 is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available")
    if _libc_renameat2(src_fd, os.fsencode(src), dst_fd, os.fsencode(dst), RENAME_NOREPLACE) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), dst)


def rename_noreplace(src_fd: int, src: str, dst_fd: int, dst: str) -> None:
    """Move `src` (relative to `src_fd`) to `dst` (relative to `dst_fd`, or absolute); FileExistsError if `dst`
    exists. Never follows a link: the entry itself moves."""
    try:
        _renameat2(src_fd, src, dst_fd, dst)
        return
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            raise
    # no RENAME_NOREPLACE here: a hard link fails on an existing name too (folders cannot be linked: none is moved)
    os.link(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd, follow_symlinks=False)
    os.unlink(src, dir_fd=src_fd)


def twin_names(name: str) -> list[str]:
    """`name`, then names with a timestamp and a counter: candidates for a move that must not overwrite."""
    stem, suffix = os.path.splitext(name)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    return [name] + [fitted(stem, f".{stamp}-{os.getpid()}-{n}{suffix}", 0) for n in range(1, 100)]


def fsync_dir(directory: Path | int) -> None:
    """Make a rename in `directory` durable (the rename is in the folder's data, not the file's)."""
    fd = directory if isinstance(directory, int) else os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        if not isinstance(directory, int):
            os.close(fd)
