"""Secrets never shown, and kept where only the service user reads them.

A broker URL carries its password; a YAML parser's error quotes the offending line (the password in it); a
credentials file that the producers' or readers' group can read hands the broker to them. So URLs are shown
only redacted, in every form Redis and kombu take a password; YAML errors are reported by position alone;
and a credentials file is read only when its owner is the reading user and nobody else may read or write it.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any

import yaml

from daemon.errors import ConfigError

MASK = "***"
# scheme://[userinfo@]rest: the userinfo is everything up to the last "@" before any query or fragment (a
# password may hold "@", ":" or an unescaped "/")
_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^?#]*)@")
_QUERY_SECRET = re.compile(r"([?&](?:password|passwd|pass|pwd|secret|token|ssl_keyfile_password)=)[^&#]*", re.I)


def redacted(url: str) -> str:
    """The URL with its password masked: `redis://user:***@host`, `redis://***@host` (a bare secret) and
    `?password=***`; the user name, host, port and database stay, for the operator to recognise the broker."""
    match = _USERINFO.match(url)
    if match:
        user, colon, _ = match["userinfo"].partition(":")
        shown = f"{user}:{MASK}" if colon else MASK
        url = f"{match['scheme']}{shown}@{url[match.end():]}"
    return _QUERY_SECRET.sub(rf"\1{MASK}", url)


def yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error without the text it quotes: where it is and what kind of mistake, never the line."""
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or "not valid YAML"
    return f"invalid YAML{where}: {problem}"


def private_problem(path: Path, info: os.stat_result) -> str | None:
    """Why a secret file is not the service user's alone, or None when it is."""
    mode = stat.S_IMODE(info.st_mode)
    if not stat.S_ISREG(info.st_mode):
        return "is not a regular file"
    if info.st_uid != os.geteuid():
        return (f"is owned by uid {info.st_uid}, not by the user the daemon runs as (uid {os.geteuid()}): "
                f"chown it to the service user")
    if mode & 0o077:
        return f"has mode {mode:04o}: others than the service user may read it; chmod 0600 {path}"
    return None


def read_credentials(path: Path) -> dict[str, Any]:
    """The credentials file's mapping; refused unless it is the service user's alone (`ConfigError`)."""
    key = "celery.credentials_file"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise ConfigError(str(path), [f"{key}: cannot read: {exc.strerror}"]) from exc
    with os.fdopen(fd, "rb") as file:
        problem = private_problem(path, os.fstat(file.fileno()))
        if problem:
            raise ConfigError(str(path), [f"{key}: {problem}"])
        text = file.read()
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), [f"{key}: {yaml_problem(exc)}"]) from None
    if not isinstance(data, dict):
        raise ConfigError(str(path), [f"{key}: expected a mapping of broker_url and result_backend"])
    return data


def passwords(url: str) -> list[str]:
    """The secrets a URL carries (its userinfo's password, or a bare secret, and any `password=` value)."""
    found = []
    match = _USERINFO.match(url)
    if match:
        user, colon, password = match["userinfo"].partition(":")
        found.append(password if colon else user)
    found += [m.group(0)[len(m.group(1)):] for m in _QUERY_SECRET.finditer(url)]
    return [secret for secret in found if secret]


def scrubbed(text: str, urls: list[str]) -> str:
    """`text` (a library's error, which may quote the URL it failed on) with these URLs' secrets masked."""
    for secret in sorted({s for url in urls for s in passwords(url)}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text
