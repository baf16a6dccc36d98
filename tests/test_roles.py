"""The folders systemd/enrichd.tmpfiles makes, tried by real accounts: a service user, two producers, a reader.

Runs as root (CI does): it creates the accounts and groups, builds the folders with systemd-tmpfiles from the
shipped file (paths and names swapped for the test's own), tries each role's reads, writes and deletes with
the account's own credentials, and removes the accounts after.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from daemon.config import parse_config
from daemon.permissions import exposure

ROOT = Path(__file__).resolve().parent.parent
TMPFILES = ROOT / "systemd" / "enrichd.tmpfiles"

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(tool) for tool in ("systemd-tmpfiles", "useradd", "setpriv")),
    reason="needs root, systemd-tmpfiles, useradd and setpriv (CI runs as root)")


class Accounts:
    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.service, self.producers, self.readers = f"ensvc{tag}", f"enprod{tag}", f"enread{tag}"
        self.alice, self.bob, self.reader = f"enpa{tag}", f"enpb{tag}", f"enrd{tag}"
        self.users: list[str] = []
        self.groups: list[str] = []

    def create(self) -> None:
        for group in (self.producers, self.readers):
            subprocess.run(["groupadd", "--system", group], check=True)
            self.groups.append(group)
        for user, group in ((self.service, None), (self.alice, self.producers), (self.bob, self.producers),
                            (self.reader, self.readers)):
            extra = ["-G", group] if group else []
            subprocess.run(["useradd", "--system", "--no-create-home", "--user-group", *extra, user], check=True)
            self.users.append(user)

    def remove(self) -> None:
        for user in self.users:
            subprocess.run(["userdel", user], check=False)
        for group in self.groups:
            subprocess.run(["groupdel", group], check=False)


@pytest.fixture
def layout() -> Iterator[tuple[Accounts, Path]]:
    accounts = Accounts()
    base = Path(tempfile.mkdtemp(prefix="roles-", dir="/tmp"))
    base.chmod(0o711)
    try:
        accounts.create()
        text = (TMPFILES.read_text().replace("/var/spool/enrichd", str(base / "spool"))
                .replace("/var/lib/enrichd", str(base / "state"))
                .replace("enrichd-producers", accounts.producers).replace("enrichd-readers", accounts.readers)
                .replace("enrichd", accounts.service))
        rules = base / "enrichd.conf"
        rules.write_text(text)
        subprocess.run(["systemd-tmpfiles", "--create", str(rules)], check=True, capture_output=True)
        yield accounts, base
    finally:
        accounts.remove()
        shutil.rmtree(base, ignore_errors=True)


def as_user(user: str, script: str, umask: str = "0022") -> bool:
    """Whether the shell `script` succeeds with `user`'s own uid, primary group and supplementary groups."""
    result = subprocess.run(["setpriv", "--reuid", user, "--regid", user, "--init-groups", "--",
                             "sh", "-c", f"umask {umask}; {script}"], capture_output=True, text=True)
    return result.returncode == 0


@needs_root
def test_each_role_gets_only_what_it_must(layout):
    accounts, base = layout
    spool, state = base / "spool", base / "state"
    inbox, processing, outbox, archive = spool / "inbox", spool / "processing", spool / "outbox", spool / "archive"
    svc, alice, bob, reader = accounts.service, accounts.alice, accounts.bob, accounts.reader

    # producers create files, and nothing else in the inbox
    assert as_user(alice, f"echo 'Agent: bonjour' > {inbox}/alice.srt")
    assert as_user(bob, f"echo 'Agent: allo' > {inbox}/bob.srt")
    assert not as_user(bob, f"rm -f {inbox}/alice.srt") and (inbox / "alice.srt").exists()
    assert not as_user(bob, f"mv {inbox}/alice.srt {inbox}/stolen.srt")
    assert not as_user(bob, f"cat {inbox}/alice.srt")
    assert not as_user(bob, f"ls {inbox}")
    assert as_user(alice, f"cat {inbox}/alice.srt")  # her own drop stays hers
    assert not as_user(reader, f"echo x > {inbox}/reader.srt")

    # the service claims, writes the output (its unit's UMask) and archives
    assert as_user(svc, f"cat {inbox}/alice.srt > /dev/null && mv {inbox}/alice.srt {processing}/alice.srt")
    assert as_user(svc, f"echo '{{}}' > {outbox}/alice.enriched.json && mv {processing}/alice.srt {archive}/",
                   umask="0027")
    assert as_user(svc, f"echo 'broker_url: redis://:pw@host/0' > {state}/broker.yaml && chmod 0600 {state}/broker.yaml")

    # producers read nothing of the service's: outputs, archive, processing, failed/, state, secrets
    for path in (f"{outbox}/alice.enriched.json", f"{archive}/alice.srt", f"{state}/broker.yaml"):
        assert not as_user(alice, f"cat {path}"), path
    for folder in (processing, spool / "failed", archive, state):
        assert not as_user(alice, f"ls {folder}"), folder
    # the reader reads outputs, and only outputs
    assert as_user(reader, f"ls {outbox} && cat {outbox}/alice.enriched.json")
    for path in (f"{archive}/alice.srt", f"{state}/broker.yaml", f"{inbox}/bob.srt"):
        assert not as_user(reader, f"cat {path}"), path
    assert not as_user(reader, f"rm -f {outbox}/alice.enriched.json")

    # and the layout is one check-config finds nothing to say about
    config = parse_config({"paths": {"inbox": str(inbox), "processing": str(processing), "outbox": str(outbox),
                                     "failed": str(spool / "failed"), "archive": str(archive), "state": str(state)}})
    assert exposure(config) == []


def test_check_config_names_a_layout_that_lets_producers_read_outputs(tmp_path):
    """Today's README layout before this change: one group for producers and outputs, no sticky bit."""
    folders = {name: tmp_path / name for name in ("inbox", "processing", "outbox", "failed", "archive", "state")}
    for name, path in folders.items():
        path.mkdir()
        path.chmod(0o2770 if name == "inbox" else 0o2750)
    found = exposure(parse_config({"paths": {k: str(v) for k, v in folders.items()}}))
    assert any("no sticky bit" in p for p in found)
    assert any(p.startswith("paths.outbox:") and "producers' group" in p for p in found)
    assert any(p.startswith("paths.state:") for p in found)
