"""The daemon with real processes and real files, and the fake engine for speed (the queue is under test)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import ROOT, daemon_log, read_status, running_daemon, wait_for

TRANSCRIPT = "Agent: Bonjour, vous appelez pour quoi ?\nClient: {marker} ma box internet ne marche plus depuis hier.\n"


def drop(inbox: Path, name: str, marker: str = "") -> Path:
    """Producer contract: write under a .part name, then rename into place."""
    part = inbox / f".{name}.part"
    part.write_text(TRANSCRIPT.format(marker=marker), encoding="utf-8")
    os.rename(part, inbox / name)
    return inbox / name


def outputs(outbox: Path) -> list[str]:
    return sorted(p.name for p in outbox.iterdir() if not p.name.startswith("."))


def test_burst_of_200_files_enriched_exactly_once(spool):
    path, config = spool()
    for i in range(200):
        drop(config.paths.inbox, f"call-{i:03d}.txt")
    with running_daemon(path):
        wait_for(lambda: len(outputs(config.paths.outbox)) == 200 and not any(config.paths.processing.iterdir()),
                 120, what="200 outputs")
    assert outputs(config.paths.outbox) == [f"call-{i:03d}.enriched.json" for i in range(200)]
    assert list(config.paths.inbox.iterdir()) == [] and list(config.paths.failed.iterdir()) == []
    assert len(list(config.paths.archive.iterdir())) == 200
    log = daemon_log(path)
    assert log.count("done call-") == 200
    assert "throughput:" in log


def write_slowly(target: Path, output: Path) -> None:
    """A producer writing a transcript a word every quarter second; no output may appear meanwhile."""
    with open(target, "w", encoding="utf-8") as handle:
        for chunk in TRANSCRIPT.format(marker="").split(" "):
            handle.write(chunk + " ")
            handle.flush()
            time.sleep(0.25)
            assert not output.exists()


def test_files_dropped_one_by_one_are_taken_on_their_events_not_on_the_rescan(spool):
    """With the periodic rescan far away, each file is claimed from its filesystem event within seconds."""
    path, config = spool({"queue": {"rescan_seconds": 600}})
    with running_daemon(path):
        wait_for(lambda: "ready: watching" in daemon_log(path), 30, what="the daemon ready")
        for i in range(3):
            drop(config.paths.inbox, f"call-{i}.txt")
            wait_for(lambda: (config.paths.outbox / f"call-{i}.enriched.json").exists(), 20, what=f"call-{i} from its event")


def test_slowly_written_file_is_taken_only_after_it_settles(spool):
    path, config = spool({"queue": {"settle_seconds": 1.5}})
    with running_daemon(path):
        write_slowly(config.paths.inbox / "slow.txt", config.paths.outbox / "slow.enriched.json")
        wait_for(lambda: (config.paths.outbox / "slow.enriched.json").exists(), 30, what="output")
        output = json.loads((config.paths.outbox / "slow.enriched.json").read_text())
    assert "box internet" in " ".join(s["text"] for s in output["segments"])
    assert daemon_log(path).count("claimed slow.txt") == 1


def test_ignored_names_and_wrong_extensions_are_left_alone(spool):
    path, config = spool()
    inbox = config.paths.inbox
    for name in (".hidden.txt", "~$lock.txt", "x.tmp", "y.part", "z.crdownload", ".a.swp", "notes.docx"):
        (inbox / name).write_text("Agent: bonjour\n")
    drop(inbox, "real.txt")
    with running_daemon(path):
        wait_for(lambda: (config.paths.outbox / "real.enriched.json").exists(), 30, what="output")
        time.sleep(1.5)
    assert sorted(p.name for p in inbox.iterdir()) == sorted(
        [".hidden.txt", "~$lock.txt", "x.tmp", "y.part", "z.crdownload", ".a.swp", "notes.docx"])


def test_symlinks_and_fifos_go_to_failed_unread_and_folders_are_left_alone(spool, tmp_path):
    path, config = spool()
    inbox = config.paths.inbox
    secret = tmp_path / "secret.txt"
    secret.write_text("Agent: TOP SECRET\n")
    (inbox / "link.txt").symlink_to(secret)
    (inbox / "shadow.txt").symlink_to("/etc/shadow")
    os.mkfifo(inbox / "pipe.txt")
    (inbox / "folder.json").mkdir()
    name = "appel à l'accueil\nnuméro 2 ☎.txt"
    drop(inbox, name)
    with running_daemon(path):
        wait_for(lambda: len([p for p in config.paths.failed.iterdir() if p.name.endswith(".error.json")]) == 3, 30,
                 what="three failures")
        wait_for(lambda: (config.paths.outbox / "appel à l'accueil\nnuméro 2 ☎.enriched.json").exists(), 30,
                 what="unicode output")
    failed = config.paths.failed
    assert (failed / "link.txt").is_symlink() and (failed / "shadow.txt").is_symlink()
    assert secret.read_text() == "Agent: TOP SECRET\n"
    error = json.loads((failed / "shadow.txt.error.json").read_text())
    assert error["error_type"] == "UnsafeEntry" and "symbolic link" in error["message"]
    assert "FIFO" in json.loads((failed / "pipe.txt.error.json").read_text())["message"]
    assert "TOP SECRET" not in "".join(p.read_text() for p in config.paths.outbox.iterdir())
    assert (inbox / "folder.json").is_dir() and not (failed / "folder.json").exists()
    assert daemon_log(path).count("inbox folder folder.json left alone: queue.recursive is off") == 1


def test_unparseable_file_fails_at_once_with_its_error(spool):
    path, config = spool()
    (config.paths.inbox / "broken.json").write_text('{"segments": [')
    drop(config.paths.inbox, "fine.txt")
    with running_daemon(path):
        wait_for(lambda: (config.paths.failed / "broken.json.error.json").exists(), 30, what="error sidecar")
        wait_for(lambda: (config.paths.outbox / "fine.enriched.json").exists(), 30, what="output")
    error = json.loads((config.paths.failed / "broken.json.error.json").read_text())
    assert error["error_type"] == "TranscriptError" and error["attempts"] == 1 and error["permanent"] is True
    assert "broken.json (json) line 1: invalid JSON" in error["message"]
    assert (config.paths.failed / "broken.json").read_text() == '{"segments": ['


def test_worker_killed_mid_job_is_replaced_and_poison_file_ends_in_failed(spool):
    path, config = spool({"queue": {"max_attempts": 3}})
    drop(config.paths.inbox, "poison.txt", marker="CRASH-WORKER")
    for i in range(6):
        drop(config.paths.inbox, f"good-{i}.txt")
    with running_daemon(path):
        wait_for(lambda: (config.paths.failed / "poison.txt.error.json").exists(), 60, what="poison in failed/")
        wait_for(lambda: len(outputs(config.paths.outbox)) == 6, 60, what="good outputs")
    error = json.loads((config.paths.failed / "poison.txt.error.json").read_text())
    assert error["attempts"] == 3 and error["error_type"] == "WorkerDied" and "exited with code -9" in error["message"]
    assert outputs(config.paths.outbox) == [f"good-{i}.enriched.json" for i in range(6)]
    assert daemon_log(path).count("replaced: process") == 3


def test_sigkill_worker_mid_job_requeues_and_completes_once(spool):
    path, config = spool()
    drop(config.paths.inbox, "slow.txt", marker="SLOW-JOB")
    with running_daemon(path):
        status = wait_for(lambda: next((w for w in read_status(config)["workers"] if w["file"] == "slow.txt"), None),
                          30, what="slow job in flight")
        os.kill(status["pid"], signal.SIGKILL)
        wait_for(lambda: (config.paths.outbox / "slow.enriched.json").exists(), 60, what="output after retry")
    assert outputs(config.paths.outbox) == ["slow.enriched.json"]
    assert [p.name for p in config.paths.archive.iterdir()] == ["slow.txt"]
    assert "retry slow.txt" in daemon_log(path)


def test_sigkill_supervisor_then_restart_loses_and_duplicates_nothing(spool):
    path, config = spool()
    names = [f"call-{i:02d}.txt" for i in range(10)]
    for i, name in enumerate(names):
        drop(config.paths.inbox, name, marker="SLOW-JOB" if i < 2 else "")
    with running_daemon(path) as first:
        wait_for(lambda: any(config.paths.processing.iterdir()), 30, what="work in flight")
        worker_pids = wait_for(lambda: [w["pid"] for w in read_status(config)["workers"] if w["pid"]]
                               if all(w["pid"] for w in read_status(config)["workers"]) else None, 10, what="worker pids")
        first.send_signal(signal.SIGKILL)
        first.wait()
    for pid in worker_pids:
        wait_for(lambda: not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z",
                 10, what=f"orphaned worker {pid} to exit")
    with running_daemon(path):
        wait_for(lambda: len(outputs(config.paths.outbox)) == 10 and not any(config.paths.processing.iterdir()),
                 90, what="all outputs after restart")
    assert outputs(config.paths.outbox) == [n.replace(".txt", ".enriched.json") for n in names]
    assert sorted(p.name for p in config.paths.archive.iterdir()) == names
    assert list(config.paths.inbox.iterdir()) == [] and list(config.paths.failed.iterdir()) == []


def test_sigterm_drains_in_flight_and_returns_the_rest(spool):
    path, config = spool({"workers": {"drain_seconds": 1}})
    for i in range(4):
        drop(config.paths.inbox, f"slow-{i}.txt", marker="SLOW-JOB")
    with running_daemon(path) as process:
        wait_for(lambda: sum(1 for w in read_status(config)["workers"] if w["file"]) == 2, 30, what="two jobs in flight")
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert time.monotonic() - started < 15
    assert list(config.paths.processing.iterdir()) == []
    assert sorted(p.name for p in config.paths.inbox.iterdir()) == [f"slow-{i}.txt" for i in range(4)]
    assert read_status(config)["state"] == "stopped"


def test_workers_are_pinned_to_disjoint_cpus(spool):
    cpus = sorted(os.sched_getaffinity(0))
    path, config = spool({"workers": {"count": len(cpus), "threads": 1}})
    with running_daemon(path):
        workers = wait_for(lambda: [w for w in read_status(config).get("workers", []) if w["pid"]] if
                           len([w for w in read_status(config).get("workers", []) if w["pid"]]) == len(cpus) else None,
                           30, what="workers ready")
        allowed = []
        for worker in workers:
            line = next(l for l in open(f"/proc/{worker['pid']}/status") if l.startswith("Cpus_allowed_list"))
            allowed.append(line.split(":")[1].strip())
    assert sorted(allowed) == sorted(str(c) for c in cpus)


def test_oversubscribed_config_refused_at_start(spool):
    path, config = spool({"workers": {"count": 8, "threads": 8}})
    result = subprocess.run([sys.executable, "-m", "tests.fake_daemon", str(path)], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert "exceeds the" in result.stderr and "available CPUs" in result.stderr


def test_pause_file_stops_intake_and_requeue_brings_failed_back(spool):
    path, config = spool()
    config.paths.state.mkdir(parents=True, exist_ok=True)
    (config.paths.state / "pause").touch()
    with running_daemon(path):
        drop(config.paths.inbox, "held.txt")
        time.sleep(2)
        assert (config.paths.inbox / "held.txt").exists() and read_status(config)["paused"] is True
        (config.paths.state / "pause").unlink()
        wait_for(lambda: (config.paths.outbox / "held.enriched.json").exists(), 30, what="output after resume")
    (config.paths.failed / "again.txt").write_text(TRANSCRIPT.format(marker=""))
    (config.paths.failed / "again.txt.error.json").write_text("{}")
    result = subprocess.run([sys.executable, "-m", "daemon", "requeue", "--config", str(path), "--all"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0 and "requeued again.txt" in result.stdout
    assert (config.paths.inbox / "again.txt").exists() and not any(config.paths.failed.iterdir())


def test_status_command_reports_running_and_stopped(spool):
    path, config = spool()
    with running_daemon(path) as process:
        result = subprocess.run([sys.executable, "-m", "daemon", "status", "--config", str(path)], cwd=ROOT,
                                capture_output=True, text=True)
        assert result.returncode == 0 and f"enrichd pid {process.pid}: running" in result.stdout
    result = subprocess.run([sys.executable, "-m", "daemon", "status", "--config", str(path)], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 1 and "no daemon is running" in result.stdout


def test_failed_output_write_puts_the_input_back_and_the_daemon_keeps_running(spool):
    path, config = spool({"queue": {"max_attempts": 10}})
    blocker = config.paths.outbox / ".blocked.enriched.json.tmp"
    blocker.mkdir()
    with running_daemon(path):
        drop(config.paths.inbox, "blocked.txt")
        wait_for(lambda: "retry blocked.txt" in daemon_log(path), 30, what="a retry")
        assert not (config.paths.outbox / "blocked.enriched.json").exists()
        drop(config.paths.inbox, "other.txt")
        wait_for(lambda: (config.paths.outbox / "other.enriched.json").exists(), 30, what="other output")
        blocker.rmdir()
        wait_for(lambda: (config.paths.outbox / "blocked.enriched.json").exists(), 30, what="output once writable")
    assert "OutputError" in daemon_log(path)
    assert [p.name for p in config.paths.outbox.iterdir() if p.name.startswith(".")] == []


def test_workers_are_recycled_after_max_jobs(spool):
    path, config = spool({"workers": {"max_jobs_per_worker": 2, "count": 1, "threads": 1}})
    for i in range(5):
        drop(config.paths.inbox, f"call-{i}.txt")
    with running_daemon(path):
        wait_for(lambda: len(outputs(config.paths.outbox)) == 5, 60, what="five outputs")
    log = daemon_log(path)
    assert log.count("recycled after 2 jobs") == 2
    assert len({line.split("(pid ")[1].split(")")[0] for line in log.splitlines() if "ready (pid" in line}) == 3


def test_an_unexpected_exception_fails_the_job_with_its_traceback_and_the_worker_lives_on(spool):
    path, config = spool({"queue": {"max_attempts": 2}, "workers": {"count": 1, "threads": 1}})
    drop(config.paths.inbox, "odd.txt", marker="RAISE-KEYERROR")
    drop(config.paths.inbox, "fine.txt")
    with running_daemon(path):
        wait_for(lambda: (config.paths.failed / "odd.txt.error.json").exists(), 30, what="odd.txt in failed/")
        wait_for(lambda: (config.paths.outbox / "fine.enriched.json").exists(), 30, what="fine output")
    error = json.loads((config.paths.failed / "odd.txt.error.json").read_text())
    assert error["error_type"] == "KeyError" and error["attempts"] == 2 and error["permanent"] is False
    assert "RAISE-KEYERROR" not in error["traceback"] and "raise KeyError" in error["traceback"]
    log = daemon_log(path)
    assert "replaced:" not in log and "retry odd.txt" in log
    assert len({line.split("(pid ")[1].split(")")[0] for line in log.splitlines() if "ready (pid" in line}) == 1


def test_a_recycled_worker_that_lingers_is_killed_without_blocking_the_loop(spool):
    path, config = spool({"workers": {"max_jobs_per_worker": 1, "count": 1, "threads": 1}})
    for i in range(3):
        drop(config.paths.inbox, f"call-{i}.txt")
    with running_daemon(path, env={"FAKE_LINGER_SECONDS": "120"}):
        wait_for(lambda: len(outputs(config.paths.outbox)) == 3, 60, what="three outputs")
        updates = set()
        wait_for(lambda: updates.add(read_status(config).get("updated")) or len(updates) >= 3, 10,
                 what="status updates while a worker lingers")
    log = daemon_log(path).splitlines()
    killed = [i for i, line in enumerate(log) if "did not exit within 2 s of being recycled; killed" in line]
    assert len(killed) >= 2
    for i in killed:  # the successor starts only once its predecessor is gone: never two on one CPU set
        assert any("worker 0 started" in line for line in log[i + 1:]) and not any("worker 0 started" in line for line in log[i - 3:i])


def test_a_worker_stuck_loading_its_model_is_replaced_with_an_error_line(spool):
    path, config = spool({"workers": {"load_timeout_seconds": 1, "count": 1, "threads": 1}})
    with running_daemon(path, env={"FAKE_LOAD_SECONDS": "60"}):
        wait_for(lambda: "replaced: did not load its model within 1 s" in daemon_log(path), 30, what="a replacement")
    assert "ERROR" in next(line for line in daemon_log(path).splitlines() if "did not load its model within 1 s" in line)


def test_worker_log_records_say_which_worker_wrote_them(spool):
    path, config = spool({"logging": {"json": True}, "workers": {"count": 1, "threads": 1}})
    drop(config.paths.inbox, "call.txt")
    with running_daemon(path):
        wait_for(lambda: (config.paths.outbox / "call.enriched.json").exists(), 30, what="output")
    roles = {json.loads(line)["record"]["extra"].get("process_role") for line in daemon_log(path).splitlines()
             if line.startswith("{")}
    assert {"main", "worker-0"} <= roles


def test_files_in_nested_folders_are_taken_when_recursive_and_their_folders_mirrored(spool, tmp_path):
    path, config = spool({"queue": {"recursive": True, "settle_seconds": 1.5}})
    inbox = config.paths.inbox
    nested = inbox / "2026" / "11" / "27"
    nested.mkdir(parents=True)
    hostile = inbox / "équipe\nnuit ☎"
    hostile.mkdir()
    drop(hostile, "appel 1.txt")
    secret = tmp_path / "elsewhere"
    secret.mkdir()
    (secret / "outside.txt").write_text("Agent: TOP SECRET\n")
    (inbox / "linked").symlink_to(secret, target_is_directory=True)
    with running_daemon(path):
        write_slowly(nested / "slow.txt", config.paths.outbox / "2026/11/27/slow.enriched.json")
        wait_for(lambda: (config.paths.outbox / "2026/11/27/slow.enriched.json").exists(), 30, what="nested output")
        wait_for(lambda: (config.paths.outbox / "équipe\nnuit ☎" / "appel 1.enriched.json").exists(), 30,
                 what="output of the hostile folder")
        wait_for(lambda: (config.paths.failed / "linked.error.json").exists(), 30, what="the folder link failed")
    output = json.loads((config.paths.outbox / "2026/11/27/slow.enriched.json").read_text())
    assert output["source"]["file"] == "2026/11/27/slow.txt" and output["id"] == "slow"
    assert (config.paths.archive / "2026/11/27/slow.txt").exists()
    assert nested.is_dir() and hostile.is_dir(), "a producer's folders stay where they are"
    assert list(config.paths.processing.iterdir()) == [], "the folders made in processing/ are gone"
    assert (config.paths.failed / "linked").is_symlink() and (secret / "outside.txt").exists()
    assert not (config.paths.outbox / "linked").exists()
    assert daemon_log(path).count("claimed 2026/11/27/slow.txt") == 1


def test_satisfaction_thresholds_are_used_only_for_the_model_and_question_they_were_fitted_with(spool):
    from daemon.calibration import write_thresholds
    from tests.fakes import describe_fake

    path, config = spool({"workers": {"count": 1, "threads": 1}})
    low_cuts = (1.0, 1.5, 2.0, 2.5)  # the fake model expects about 3.9: 5 with these, 4 when rounded
    for name, model_sha256, score in (("fitted.txt", describe_fake(config).sha256, 5), ("other.txt", "f" * 64, 4)):
        write_thresholds(config.paths.state, low_cuts, 3, model_sha256, config.enrichment)
        drop(config.paths.inbox, name)
        output = config.paths.outbox / name.replace(".txt", ".enriched.json")
        with running_daemon(path):
            wait_for(output.exists, 30, what=f"{name} enriched")
        assert json.loads(output.read_text())["metadata"]["satisfaction"]["score"] == score
    assert daemon_log(path).count("satisfaction thresholds ignored") == 1
