"""Who may read what on disk: the folders' modes and groups, checked against the roles README sets up.

Producers are whoever may write the inbox (its group, or everyone); readers are the outbox's group. Transcripts
and outputs are personal data, so a layout where producers could read outputs, the archive, failed/ or the
state (cache, ledger, secrets), or delete each other's drops, is named by `enrichd check-config` and logged at
start. These are warnings: a single-user test set-up is legitimately open, and the service still runs.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from daemon.config import Config

PRIVATE = ("processing", "failed", "archive", "state")


def _stat(path: Path) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def _readable_by(info: os.stat_result, group: int | None) -> str | None:
    """Who besides the owner may read a folder or file: everyone, the producers' group, or nobody (None)."""
    if info.st_mode & stat.S_IROTH:
        return "every account"
    if group is not None and info.st_gid == group and info.st_mode & stat.S_IRGRP:
        return "the producers' group"
    return None


def exposure(config: Config) -> list[str]:
    """What in the spool, state and secrets lets producers or strangers see more than their own drops."""
    paths = config.paths
    inbox = _stat(paths.inbox)
    if inbox is None:
        return []
    problems = []
    producers = inbox.st_gid if inbox.st_mode & stat.S_IWGRP else None
    if inbox.st_mode & stat.S_IWOTH:
        problems.append(f"paths.inbox: {paths.inbox} is writable by every account, not only by producers")
    if not inbox.st_mode & stat.S_ISVTX:
        problems.append(f"paths.inbox: {paths.inbox} has no sticky bit: producers can delete or replace each "
                        f"other's files (chmod +t)")
    if inbox.st_mode & (stat.S_IRGRP | stat.S_IROTH):
        problems.append(f"paths.inbox: {paths.inbox} can be listed by producers: they see each other's file names")
    folders = {"outbox": paths.outbox, **{name: getattr(paths, name) for name in PRIVATE}}
    if config.celery.credentials_file is not None:
        folders["celery.credentials_file"] = config.celery.credentials_file
    for name, path in folders.items():
        info = _stat(path)
        who = info and _readable_by(info, producers)
        if who:
            key = name if "." in name else f"paths.{name}"
            problems.append(f"{key}: {path} (mode {stat.S_IMODE(info.st_mode):04o}) can be read by {who}")
    return problems
