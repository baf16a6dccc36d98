"""CPU lending: a busy worker's threads grow into the CPUs of idle workers and give them back first.

Every worker's CPU set has a lock file, held by whichever process runs threads on those CPUs: the owner
for the length of each job, a borrower for the length of a loan. The pool writes who may borrow which
set (`Loans`, shared memory); a borrower looks between two decodes. To take a set it locks it without
waiting (an owner that has just been given a job wins), widens the affinity of all its threads, then
its thread count; to give it back it narrows the thread count, then the affinity, then unlocks. The
owner's own lock, taken before its job's first decode, returns only then: two workers never run on one
CPU, even for one decode step. A lock dies with its process, so a borrower killed mid-loan frees the
CPUs it held.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence, TextIO

from loguru import logger

LOCKS_DIR = "cpu-sets"
NOBODY = -1


def lock_path(state: Path, worker: int) -> Path:
    return state / LOCKS_DIR / f"{worker}.lock"


def pin_all_threads(cpus: set[int]) -> None:
    """Every thread of this process (llama.cpp's OpenMP threads included) onto `cpus`."""
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except (ProcessLookupError, FileNotFoundError):  # a thread that has just ended
            pass


class Loans:
    """Which worker may borrow each worker's CPU set (NOBODY: none), shared between the pool and its workers."""

    def __init__(self, context: Any, count: int):
        self.lent = context.RawArray("i", [NOBODY] * count)

    def lend(self, lender: int, borrower: int) -> None:
        self.lent[lender] = borrower

    def withdraw(self, lender: int) -> None:
        self.lent[lender] = NOBODY

    def borrower(self, lender: int) -> int:
        return int(self.lent[lender])

    def withdraw_involving(self, worker: int) -> None:
        """No loan from or to this worker."""
        for lender in range(len(self.lent)):
            if lender == worker or self.borrower(lender) == worker:
                self.withdraw(lender)

    def cpus_of(self, worker: int, cpu_sets: Sequence[Sequence[int]]) -> tuple[int, ...]:
        """The CPUs a worker owns and those lent to it."""
        return tuple(cpu for lender, cpus in enumerate(cpu_sets)
                     if lender == worker or self.borrower(lender) == worker for cpu in cpus)


@dataclass
class Lending:
    """A worker's side: its own set's lock around each job, and the sets it borrows between decodes."""

    me: int
    cpu_sets: list[tuple[int, ...]]
    loans: Loans
    state: Path
    resize: Callable[[int], None] = lambda threads: None
    borrowed: dict[int, TextIO] = field(default_factory=dict)
    own: TextIO | None = None

    def __post_init__(self) -> None:
        (self.state / LOCKS_DIR).mkdir(parents=True, exist_ok=True)

    def _open(self, worker: int) -> TextIO:
        return open(lock_path(self.state, worker), "a")

    def hold_own(self) -> None:
        """Before a job: wait until no borrower runs on this worker's CPUs, and keep them until `free_own`."""
        self.own = self._open(self.me)
        fcntl.flock(self.own, fcntl.LOCK_EX)
        logger.debug("worker {} holds its CPUs {}", self.me, ",".join(map(str, self.cpu_sets[self.me])))

    def free_own(self) -> None:
        self.give_back(set(self.borrowed))
        if self.own is not None:
            self.own.close()
            self.own = None

    def cpus(self) -> set[int]:
        return {cpu for worker in (self.me, *self.borrowed) for cpu in self.cpu_sets[worker]}

    def adjust(self) -> None:
        """Between two decodes: give back what was withdrawn, take what is newly lent."""
        if self.own is None:
            return
        lent = {k for k in range(len(self.cpu_sets)) if k != self.me and self.loans.borrower(k) == self.me}
        self.give_back(set(self.borrowed) - lent)
        self.take(lent - set(self.borrowed))

    def take(self, workers: set[int]) -> None:
        taken = []
        for worker in sorted(workers):
            handle = self._open(worker)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            self.borrowed[worker] = handle
            taken.append(worker)
        if taken:
            cpus = self.cpus()
            pin_all_threads(cpus)
            self.resize(len(cpus))
            logger.debug("worker {} borrows the CPUs of worker(s) {}: {} threads on CPUs {}", self.me,
                         ",".join(map(str, taken)), len(cpus), ",".join(map(str, sorted(cpus))))

    def give_back(self, workers: set[int]) -> None:
        if not workers:
            return
        handles = [self.borrowed.pop(worker) for worker in sorted(workers)]
        cpus = self.cpus()
        self.resize(len(cpus))
        pin_all_threads(cpus)
        logger.debug("worker {} gives back the CPUs of worker(s) {}: {} threads on CPUs {}", self.me,
                     ",".join(map(str, sorted(workers))), len(cpus), ",".join(map(str, sorted(cpus))))
        for handle in handles:
            handle.close()
