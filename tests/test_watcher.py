"""The inbox watcher hands over every event, however many times it has been drained."""

from __future__ import annotations

import os
import time

from daemon.watcher import InboxWatcher
from tests.conftest import wait_for


def test_names_keep_arriving_after_every_drain(tmp_path):
    watcher = InboxWatcher(tmp_path, polling=False)
    watcher.start()
    try:
        time.sleep(0.3)
        for i in range(3):
            (tmp_path / f".call-{i}.part").write_text("allo")
            os.rename(tmp_path / f".call-{i}.part", tmp_path / f"call-{i}.txt")
            seen: set[str] = set()
            wait_for(lambda: seen.update(watcher.drain()) or f"call-{i}.txt" in seen, 10, what=f"the event of call-{i}.txt")
    finally:
        watcher.stop()
