"""A real daemon (supervisor, spawned workers, the fake engine: the queue is under test) against entries a real
inbox meets. Every case: the daemon is still running, every good file is enriched exactly once, every hostile
entry is in failed/ with a record naming its problem (or enriched, where it is a good transcript under an odd
name)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from daemon.config import QueueConfig, load_config
from daemon.names import shown
from daemon.spool import FileQueue, Spool, error_record_name
from tests.conftest import ROOT, daemon_log, read_status, running_daemon, wait_for, write_config

GOOD_TEXT = "Agent: Bonjour, vous appelez pour quoi ?\nClient: ma box internet ne marche plus depuis hier.\n"
GOOD_SRT = ("1\n00:00:01,000 --> 00:00:03,000\nAgent: Bonjour, vous appelez pour quoi ?\n\n"
            "2\n00:00:03,500 --> 00:00:06,000\nClient: ma box internet ne marche plus.\n")
MAX_SEGMENTS = 300


def drop(inbox: Path, name: str, content: str | bytes) -> Path:
    """Producer contract: write under a hidden .part name in the same folder, then rename into place."""
    path = inbox / name
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name[:40]}.part")
    part.write_bytes(content.encode() if isinstance(content, str) else content)
    os.rename(part, path)
    return path


def deep_tree(root: Path, depth: int) -> None:
    """`depth` nested folders with a good file at the bottom, made relative to descriptors (no path limit)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(depth):
        os.mkdir("d", dir_fd=fd)
        child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
    with open(os.open("bottom.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "w") as handle:
        handle.write(GOOD_TEXT)
    os.close(fd)


def remove_deep_tree(root: Path) -> None:
    """Remove a `deep_tree` (the `d` folder of `root`) bottom-up through descriptors: shutil.rmtree, and so
    pytest's clean-up of old temporary folders, recurse and would fail on it."""
    fds = [os.open(root, os.O_RDONLY | os.O_DIRECTORY)]
    while "d" in os.listdir(fds[-1]):
        fds.append(os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fds[-1]))
    for name in os.listdir(fds[-1]) if len(fds) > 1 else []:
        os.unlink(name, dir_fd=fds[-1])
    while len(fds) > 1:
        os.close(fds.pop())
        os.rmdir("d", dir_fd=fds[-1])
    os.close(fds[0])


def record(failed: Path, name: str) -> dict:
    return json.loads((failed / error_record_name(name)).read_text(encoding="utf-8"))


def outputs(outbox: Path) -> set[str]:
    return {str(p.relative_to(outbox)) for p in outbox.rglob("*.enriched.json")}


GOOD = {  # name -> content: good transcripts, some under odd names
    "plain.txt": GOOD_TEXT,
    os.fsdecode(b"caf\xe9 latin-1.srt"): GOOD_SRT,
    "x" * 246 + ".txt": GOOD_TEXT,
    "-rf --all\n2026-12-01 00:00:00.000 | ERROR   | 1 | forged.txt": GOOD_TEXT,
    "2026/11/30/call-0001.srt": GOOD_SRT,
    "2026/12/01/call-0001.srt": GOOD_SRT,
    "folder.srt/inside.txt": GOOD_TEXT,
}
HOSTILE = {  # name -> (content, what its record must say)
    "deep.json": ("[" * 200_000 + "]" * 200_000, "nested too deeply"),
    "hours.srt": ("1\n" + "9" * 400 + ":00:01,000 --> 00:00:02,000\nbonjour\n", "cannot be read"),
    "negative.json": (json.dumps({"segments": [{"start": -5.0, "end": 1.0, "text": "bonjour"}]}), "outside 0 to"),
    "backwards.json": (json.dumps({"segments": [{"start": 9.0, "end": 2.0, "text": "bonjour"}]}), "before it starts"),
    "many.txt": ("Agent: allo\n" * (MAX_SEGMENTS + 1), "queue.max_segments"),
    "empty.txt": ("", "empty file"),
    "nul.txt": (b"\0" * 64, "binary data"),
}


def test_hostile_entries_beside_good_files(tmp_path):
    path = write_config(tmp_path, {"queue": {"recursive": True, "max_segments": MAX_SEGMENTS, "max_depth": 16}})
    config = load_config(path)
    inbox = config.paths.inbox
    inbox.mkdir(parents=True)
    for name, content in GOOD.items():
        drop(inbox, name, content)
    for name, (content, _) in HOSTILE.items():
        drop(inbox, name, content)
    os.mkfifo(inbox / "pipe.srt")
    (tmp_path / "secret.txt").write_text("Agent: TOP SECRET\n")
    (inbox / "link.txt").symlink_to(tmp_path / "secret.txt")
    (inbox / "dev.txt").symlink_to("/dev/zero")
    deep_tree(inbox, 1100)
    with running_daemon(path) as daemon:
        expected = {str(Path(n).parent / (Path(n).stem + ".enriched.json")) for n in GOOD if len(n) < 200}
        wait_for(lambda: expected <= outputs(config.paths.outbox) and len(outputs(config.paths.outbox)) == len(GOOD)
                 and not any(config.paths.processing.iterdir()), 90, what="every good file enriched")
        failed = config.paths.failed
        hostile = set(HOSTILE) | {"pipe.srt", "link.txt", "dev.txt"}
        wait_for(lambda: all((failed / error_record_name(n)).exists() for n in hostile), 30, what="hostile records")
        assert daemon.poll() is None, daemon_log(path)[-3000:]
        assert read_status(config)["state"] == "running"
    log = daemon_log(path)
    for name in GOOD:
        assert log.count(f"done {shown(name)}:") == 1, name
    for name, (_, problem) in HOSTILE.items():
        error = record(failed, name)
        assert error["error_type"] == "TranscriptError" and problem in error["message"], (name, error)
        assert error["permanent"] is True and error["attempts"] == 1, name
        assert (failed / name).exists(), name
    assert "FIFO" in record(failed, "pipe.srt")["message"]
    assert "symbolic link" in record(failed, "dev.txt")["message"] and (failed / "link.txt").is_symlink()
    # odd names: the output keeps the bytes of the name on disk, the document and the log show it escaped
    latin = json.loads((config.paths.outbox / os.fsdecode(b"caf\xe9 latin-1.enriched.json")).read_text())
    assert latin["source"]["file"] == "caf\\xe9 latin-1.srt"
    long_output = next(p for p in config.paths.outbox.glob("xxxx*.enriched.json"))
    assert len(os.fsencode(long_output.name)) <= 250 and "~" in long_output.name
    assert json.loads(long_output.read_text())["source"]["file"] == "x" * 246 + ".txt"
    assert not any(line.startswith("2026-12-01 00:00:00.000 | ERROR") for line in log.splitlines())
    assert "forged.txt" in log and "\\n2026-12-01" in log
    # same name in two date folders: both taken, each archived in its own folder
    for day in ("2026/11/30", "2026/12/01"):
        assert (config.paths.archive / day / "call-0001.srt").exists()
    # the deep tree is reported, not walked; the watcher that cannot watch it leaves the rescan in charge
    assert "deeper than queue.max_depth (16); not entered" in log
    assert os.path.exists(os.path.join(inbox, "d/" * 1100 + "bottom.txt"))
    assert (tmp_path / "secret.txt").read_text() == "Agent: TOP SECRET\n"
    assert "TOP SECRET" not in "".join(p.read_text() for p in config.paths.outbox.rglob("*.json"))
    assert "Traceback" not in log
    remove_deep_tree(inbox)


def test_a_subfolder_swapped_for_a_link_after_the_scan_moves_nothing_from_outside(tmp_path):
    spool = Spool(*(tmp_path / name for name in ("inbox", "processing", "outbox", "failed", "archive", "state")))
    spool.prepare()
    queue = FileQueue.open(spool, QueueConfig(recursive=True))
    drop(spool.inbox, "day/call.txt", GOOD_TEXT)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "call.txt").write_text("Agent: not the inbox's\n")
    shutil.rmtree(spool.inbox / "day")  # the producer swaps the folder for a link once the scan has named the file
    (spool.inbox / "day").symlink_to(outside)
    assert queue.claim("day/call.txt") is None
    assert (outside / "call.txt").read_text() == "Agent: not the inbox's\n" and not any(spool.processing.iterdir())


def test_the_archive_and_failed_never_replace_a_file_of_the_same_name(tmp_path):
    spool = Spool(*(tmp_path / name for name in ("inbox", "processing", "outbox", "failed", "archive", "state")))
    spool.prepare()
    queue = FileQueue.open(spool, QueueConfig())
    from daemon.messages import Job

    for content in ("first", "second"):
        drop(spool.inbox, "call.txt", content)
        assert queue.claim("call.txt") is not None
        assert queue.settle(Job("call.txt", 1)).action == "retired"
    assert sorted(p.read_text() for p in spool.archive.iterdir()) == ["first", "second"]


def test_an_input_that_changes_after_its_claim_is_enriched_again(tmp_path):
    spool = Spool(*(tmp_path / name for name in ("inbox", "processing", "outbox", "failed", "archive", "state")))
    spool.prepare()
    queue = FileQueue.open(spool, QueueConfig())
    from daemon.messages import Job

    drop(spool.inbox, "call.txt", "Agent: bonjour\n")
    claimed = queue.claim("call.txt")
    with open(claimed, "a") as handle:  # a producer that paused longer than settle_seconds, then went on
        handle.write("Client: la suite de l'appel\n")
    assert queue.settle(Job("call.txt", 1)).action == "requeued"
    assert (spool.inbox / "call.txt").read_text().endswith("la suite de l'appel\n") and not any(spool.archive.iterdir())


def without_permission_overrides() -> list[str] | None:
    """A command prefix that runs as root without the capabilities that let root ignore folder permissions
    (setpriv drops them from the bounding set); None where this does not run as root or has no setpriv."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        return None
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--"]


@pytest.mark.skipif(without_permission_overrides() is None, reason="needs root and setpriv to drop permission overrides")
def test_a_producer_folder_the_service_cannot_write_is_set_aside_and_the_rest_goes_on(tmp_path):
    path = write_config(tmp_path, {"queue": {"recursive": True}})
    config = load_config(path)
    drop(config.paths.inbox, "good.txt", GOOD_TEXT)
    locked = drop(config.paths.inbox, "producer/locked.txt", GOOD_TEXT)
    os.chown(locked.parent, 65534, 65534)  # a producer's folder made with umask 022: the service may not write it
    os.chmod(locked.parent, 0o755)
    command = [*without_permission_overrides(), sys.executable, "-m", "tests.fake_daemon", str(path)]
    with open(tmp_path / "daemon.log", "wb") as log:
        daemon = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: (config.paths.outbox / "good.enriched.json").exists(), 60, what="the good file")
            wait_for(lambda: "set aside" in daemon_log(path), 30, what="the locked file set aside")
            time.sleep(2.5)  # two more rescans meet the same entry
            notes = list((config.paths.state / "quarantine").glob("*.json"))
            assert len(notes) == 1 and json.loads(notes[0].read_text())["file"] == "producer/locked.txt"
            assert locked.read_text() == GOOD_TEXT
            assert daemon.poll() is None
        finally:
            daemon.terminate()
            daemon.wait(timeout=60)
    log_text = daemon_log(path)
    assert log_text.count("set aside") == 1 and "Traceback" not in log_text
