"""What the supervisor's signals ask of it, as flags its loop reads between two ticks (a handler does no work).

SIGTERM/SIGINT: stop (a second SIGINT: stop without draining); SIGHUP: reopen the log files; SIGUSR1: pause
intake, or resume it.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Any


@dataclass
class Signals:
    stopping: bool = False
    immediate: bool = False
    paused: bool = False
    reopen_logs: bool = False

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)
        signal.signal(signal.SIGUSR1, self._on_usr1)

    def _on_stop(self, signum: int, _frame: Any) -> None:
        if self.stopping and signum == signal.SIGINT:
            self.immediate = True
        self.stopping = True

    def _on_hup(self, _signum: int, _frame: Any) -> None:
        self.reopen_logs = True

    def _on_usr1(self, _signum: int, _frame: Any) -> None:
        self.paused = not self.paused
