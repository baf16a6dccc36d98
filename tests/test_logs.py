"""The log is one line per event, whatever a message's arguments hold."""

from loguru import logger

from daemon.config import LoggingConfig
from daemon.logs import setup_logging


def test_a_newline_in_an_argument_cannot_forge_a_log_line(tmp_path):
    log = tmp_path / "enrichd.log"
    setup_logging(LoggingConfig(file=log))
    try:
        logger.warning("{}: refused", "call.srt\n2026-12-01 10:00:00.000 | INFO    | 1 | forged.srt: done")
    finally:
        logger.remove()
    lines = log.read_text().splitlines()
    assert len(lines) == 1
    assert lines[0].endswith("call.srt\\n2026-12-01 10:00:00.000 | INFO    | 1 | forged.srt: done: refused")
