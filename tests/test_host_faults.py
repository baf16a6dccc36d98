"""Faults of the host, not of a file: a full spool file system, a read-only state folder, a metrics file the
daemon may not write. A real daemon with the fake engine; the file systems are small tmpfs mounts each test
makes and removes (root only; elsewhere these tests are skipped with the reason)."""

from __future__ import annotations

import errno
import os
import subprocess
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from daemon.config import load_config
from tests.conftest import daemon_log, read_status, running_daemon, wait_for, write_config

TRANSCRIPT = "Agent: Bonjour, vous appelez pour quoi ?\nClient: ma box internet ne marche plus depuis hier.\n"
SPOOL = ("inbox", "processing", "outbox", "failed", "archive")


def can_mount() -> bool:
    if os.geteuid() != 0:
        return False
    probe = Path(f"/tmp/enrichd-mount-probe-{uuid.uuid4().hex[:8]}")
    probe.mkdir()
    try:
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)], capture_output=True).returncode:
            return False
        subprocess.run(["umount", str(probe)], check=True)
        return True
    finally:
        probe.rmdir()


needs_mount = pytest.mark.skipif(not can_mount(), reason="needs root to mount a small tmpfs")


@contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(folder: Path) -> Path:
    """Write a filler file until the file system says it is full."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def drop(inbox: Path, name: str) -> None:
    part = inbox / f".{name}.part"
    part.write_text(TRANSCRIPT, encoding="utf-8")
    os.rename(part, inbox / name)


def files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@needs_mount
def test_a_full_spool_pauses_intake_fails_nothing_and_finishes_every_file_once_space_returns(tmp_path):
    with tmpfs(tmp_path / "disk", "2m") as disk:
        path = write_config(tmp_path, {"paths": {name: str(disk / name) for name in SPOOL}})
        config = load_config(path)
        for name in SPOOL:
            (disk / name).mkdir()
        names = [f"call-{i}.txt" for i in range(4)]
        for name in names:
            drop(config.paths.inbox, name)
        (tmp_path / "state").mkdir()
        (tmp_path / "state" / "pause").touch()  # hold intake until the disk is full
        with running_daemon(path) as daemon:
            filler = fill(disk)
            (tmp_path / "state" / "pause").unlink()
            wait_for(lambda: "host fault:" in daemon_log(path), 30, what="the host fault noticed")
            wait_for(lambda: "host fault" in (read_status(config).get("pause_reason") or ""), 10, what="status says why")
            time.sleep(6)  # longer than every backoff a counted failure would have had
            assert files(config.paths.failed) == [] and daemon.poll() is None
            assert read_status(config)["paused"] is True
            filler.unlink()
            wait_for(lambda: all((config.paths.outbox / n.replace(".txt", ".enriched.json")).exists() for n in names)
                     and not files(config.paths.processing), 60, what="every file once space returned")
        log = daemon_log(path)
        assert files(config.paths.failed) == [] and files(config.paths.inbox) == []
        assert sorted(files(config.paths.archive)) == names
    for name in names:
        assert log.count(f"done {name}:") == 1, name
    assert "intake resumes" in log and "retry call-" not in log and "Traceback" not in log


@needs_mount
def test_a_full_state_folder_pauses_and_the_daemon_resumes_when_there_is_room(tmp_path):
    with tmpfs(tmp_path / "state", "1m") as state:
        path = write_config(tmp_path)
        config = load_config(path)
        with running_daemon(path) as daemon:
            filler = fill(state)
            wait_for(lambda: "host fault:" in daemon_log(path), 30, what="the host fault noticed")
            drop(config.paths.inbox, "call.txt")
            time.sleep(3)
            assert daemon.poll() is None and files(config.paths.failed) == []
            assert files(config.paths.inbox) == ["call.txt"]  # intake paused: the file waits, uncharged
            filler.unlink()
            wait_for(lambda: (config.paths.archive / "call.txt").exists() and not files(config.paths.processing), 60,
                     what="the file retired once the state folder has room")
        log = daemon_log(path)
    assert (config.paths.outbox / "call.enriched.json").exists() and files(config.paths.failed) == []
    assert log.count("done call.txt:") == 1 and "intake resumes" in log and "Traceback" not in log


@needs_mount
def test_a_read_only_outbox_pauses_intake_and_nothing_fails(tmp_path):
    path = write_config(tmp_path)
    config = load_config(path)
    outbox = config.paths.outbox
    outbox.mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(outbox), str(outbox)], check=True)
    try:
        with running_daemon(path) as daemon:
            subprocess.run(["mount", "-o", "remount,bind,ro", str(outbox)], check=True)
            for i in range(3):
                drop(config.paths.inbox, f"call-{i}.txt")
            wait_for(lambda: "Read-only file system" in daemon_log(path), 30, what="the read-only outbox noticed")
            time.sleep(3)
            assert daemon.poll() is None and files(config.paths.failed) == [] and files(config.paths.archive) == []
            subprocess.run(["mount", "-o", "remount,bind,rw", str(outbox)], check=True)
            wait_for(lambda: len(files(config.paths.archive)) == 3, 60, what="three files once the outbox is writable")
    finally:
        subprocess.run(["umount", "-l", str(outbox)], check=False)
    log = daemon_log(path)
    assert files(config.paths.failed) == [] and "retry call-" not in log
    assert all(log.count(f"done call-{i}.txt:") == 1 for i in range(3))


def test_a_metrics_file_the_daemon_cannot_write_is_reported_and_nothing_else_changes(tmp_path):
    unwritable = tmp_path / "not-a-folder"
    unwritable.write_text("a file where the metrics folder should be\n")
    path = write_config(tmp_path, {"metrics": {"file": str(unwritable / "enrichd.prom")}})
    config = load_config(path)
    with running_daemon(path) as daemon:
        for i in range(3):
            drop(config.paths.inbox, f"call-{i}.txt")
        wait_for(lambda: len(files(config.paths.archive)) == 3, 30, what="three files")
        wait_for(lambda: "not written" in daemon_log(path), 10, what="the metrics complaint")
        time.sleep(2.5)  # two more throughput periods
        assert daemon.poll() is None
    log = daemon_log(path)
    assert log.count(f"metrics file {unwritable / 'enrichd.prom'} not written") == 1
    assert files(config.paths.failed) == [] and "Traceback" not in log
