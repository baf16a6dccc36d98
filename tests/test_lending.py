"""CPU lending with the real test model: a lone job's worker widens onto the idle worker's CPU, gives it back
before that worker's job starts, never runs on a CPU it does not hold, and judges as fixed threads judge."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from daemon.lending import LOCKS_DIR
from daemon.config import load_config
from tests.conftest import SIMSAMU, daemon_log, read_status, running_daemon, wait_for, write_config
from tests.test_end_to_end import short_srt

pytestmark = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="lending needs two CPUs")


def cpu_list(text: str) -> set[int]:
    cpus: set[int] = set()
    for part in text.strip().split(","):
        low, _, high = part.partition("-")
        cpus.update(range(int(low), int(high or low) + 1))
    return cpus


def thread_cpus(pid: int) -> set[int]:
    """The union of the affinities of every thread of a process (empty once it is gone)."""
    cpus: set[int] = set()
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
            cpus |= cpu_list(next(line.split(":")[1] for line in status.splitlines() if line.startswith("Cpus_allowed_list")))
    except (FileNotFoundError, ProcessLookupError):
        return set()
    return cpus


def lock_holders(folder: Path, count: int) -> dict[int, int]:
    """Which pid holds each worker's CPU-set lock, read from /proc/locks."""
    inodes = {}
    for worker in range(count):
        path = folder / f"{worker}.lock"
        if path.exists():
            inodes[path.stat().st_ino] = worker
    holders = {}
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK":
            inode = int(fields[5].rsplit(":", 1)[1])
            if inode in inodes:
                holders[inodes[inode]] = int(fields[4])
    return holders


class Sampler(threading.Thread):
    """Every few milliseconds: the CPUs each worker's threads may use, against the CPU sets it holds."""

    def __init__(self, config, cpu_sets: dict[int, set[int]]):
        super().__init__(daemon=True)
        self.config, self.cpu_sets = config, cpu_sets
        self.widened: set[int] = set()
        self.violations: list[str] = []
        self.samples = 0
        self.done = threading.Event()

    def run(self) -> None:
        folder = self.config.paths.state / LOCKS_DIR
        while not self.done.wait(0.003):
            workers = {w["id"]: w["pid"] for w in read_status(self.config).get("workers", []) if w.get("pid")}
            if len(workers) < 2:
                continue
            before = lock_holders(folder, len(self.cpu_sets))
            running = {worker: thread_cpus(pid) for worker, pid in workers.items()}
            after = lock_holders(folder, len(self.cpu_sets))
            self.samples += 1
            for worker, pid in workers.items():
                if running[worker] == set().union(*self.cpu_sets.values()):
                    self.widened.add(worker)
                foreign = running[worker] - self.cpu_sets[worker]
                # a loan taken or given back between the reads shows in one of them
                if all(foreign - self.held(holders, pid) for holders in (before, after)):
                    self.violations.append(f"worker {worker} on CPUs {sorted(running[worker])} holding {before}/{after}")

    def held(self, holders: dict[int, int], pid: int) -> set[int]:
        return {cpu for worker, holder in holders.items() if holder == pid for cpu in self.cpu_sets[worker]}


def run_two_files(root: Path, lend: bool) -> tuple[dict[str, dict], Sampler, str]:
    """A long call alone (until its worker widens, when lending), then a short one beside it."""
    root.mkdir()
    path = write_config(root, {"workers": {"count": 2, "threads": 1, "lend_cpus": lend}})
    config = load_config(path)
    config.paths.inbox.mkdir(parents=True)
    cpus = sorted(os.sched_getaffinity(0))[:2]
    sampler = Sampler(config, {0: {cpus[0]}, 1: {cpus[1]}})
    files = {"long.srt": short_srt(SIMSAMU / "dj_2022_douleur_abdo.srt", 16), "short.srt": short_srt(SIMSAMU / "dj_2022_msn.srt", 5)}
    with running_daemon(path, fake=False):
        sampler.start()
        (config.paths.inbox / "long.srt").write_text(files["long.srt"])
        wait_for(lambda: any(w.get("file") == "long.srt" for w in read_status(config).get("workers", [])), 60,
                 what="the long call running")
        if lend:
            wait_for(lambda: sampler.widened, 60, interval=0.05, what="the busy worker on both CPUs")
        (config.paths.inbox / "short.srt").write_text(files["short.srt"])
        wait_for(lambda: all((config.paths.outbox / f"{Path(n).stem}.enriched.json").exists() for n in files), 600,
                 interval=0.5, what="both outputs")
        sampler.done.set()
        sampler.join()
    outputs = {n: json.loads((config.paths.outbox / f"{Path(n).stem}.enriched.json").read_text()) for n in files}
    return outputs, sampler, daemon_log(path)


def comparable(document: dict) -> dict:
    """What judging decides (corrections, the satisfaction reading); sampled text (title, summary, bullets,
    justification) follows llama.cpp's numerics, which move with the thread count, and may differ."""
    satisfaction = document["metadata"]["satisfaction"]
    return {"segments": document["segments"], "satisfaction": {k: satisfaction[k] for k in ("score", "probabilities")}}


def test_a_lone_job_widens_gives_back_first_and_judges_as_fixed_threads_do(tmp_path):
    lent, sampler, log = run_two_files(tmp_path / "lending", lend=True)
    assert sampler.samples > 100 and sampler.widened
    assert sampler.violations == []
    lines = log.splitlines()
    given_back = next(i for i, line in enumerate(lines) if "gives back the CPUs" in line)
    borrower = lines[given_back].split("worker ", 1)[1].split()[0]
    lender = "1" if borrower == "0" else "0"
    holds = [i for i, line in enumerate(lines) if f"worker {lender} holds its CPUs" in line]
    assert len(holds) == 1 and holds[0] > given_back  # the short call's worker decoded only after the hand-back

    fixed, _, _ = run_two_files(tmp_path / "fixed", lend=False)
    assert {n: comparable(d) for n, d in lent.items()} == {n: comparable(d) for n, d in fixed.items()}
