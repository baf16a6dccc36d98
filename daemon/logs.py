"""Logging set-up (loguru only) and the bridge that routes llama.cpp's own log into it.

The stderr sink writes to a duplicate of file descriptor 2: llama-cpp-python points fd 2 at
/dev/null while it loads a model, and the load is exactly when its errors matter.
"""

from __future__ import annotations

import ctypes
import os
import sys
from typing import Any, TextIO

from loguru import logger

from daemon.config import LoggingConfig

HUMAN_FORMAT = "{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <7} | {process.id} | {message}"
# ggml_log_level: NONE=0, DEBUG=1, INFO=2, WARN=3, ERROR=4, CONT=5 (continue the previous line).
GGML_LEVELS = {0: "INFO", 1: "TRACE", 2: "DEBUG", 3: "WARNING", 4: "ERROR"}
GGML_CONT = 5

# every event is one line, whatever its arguments hold (a name that slipped past `names.shown`, a library's
# multi-line error): a newline in a message would forge the next line of the human format
ONE_LINE = str.maketrans({"\n": "\\n", "\r": "\\r", "\u2028": "\\u2028", "\u2029": "\\u2029"})

_stderr: TextIO | None = None
_llama_state: dict[str, Any] = {"level": "DEBUG", "buffer": "", "callback": None}


def _stderr_copy() -> TextIO:
    global _stderr
    if _stderr is None:
        _stderr = os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1, encoding="utf-8", errors="replace")
    return _stderr


def setup_logging(config: LoggingConfig, process: str = "main") -> None:
    """Replace loguru's default sink with the configured ones. Safe to call again (SIGHUP reopen)."""
    logger.remove()
    logger.configure(extra={"process_role": process}, patcher=_one_line)
    logger.add(_stderr_copy(), level=config.level, serialize=config.json,
               format=HUMAN_FORMAT, backtrace=False, diagnose=False, enqueue=False)
    if config.file is not None:
        config.file.parent.mkdir(parents=True, exist_ok=True)
        logger.add(str(config.file), level=config.level, serialize=config.json, format=HUMAN_FORMAT,
                   rotation=config.rotation, retention=config.retention, backtrace=False, diagnose=False)


def _one_line(record: Any) -> None:
    record["message"] = record["message"].translate(ONE_LINE)


def _on_llama_log(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
    """llama.cpp writes partial lines; emit whole lines at the level of the line's first part."""
    message = text.decode("utf-8", errors="replace")
    if level != GGML_CONT:
        _llama_state["level"] = GGML_LEVELS.get(level, "DEBUG")
    _llama_state["buffer"] += message
    while "\n" in _llama_state["buffer"]:
        line, _llama_state["buffer"] = _llama_state["buffer"].split("\n", 1)
        if line.strip():
            logger.log(_llama_state["level"], "llama.cpp: {}", line.rstrip())


def route_llama_logs() -> None:
    """Install our callback in place of llama-cpp-python's, whose level mapping is off by one."""
    import llama_cpp

    if _llama_state["callback"] is None:
        _llama_state["callback"] = llama_cpp.llama_log_callback(_on_llama_log)
    llama_cpp.llama_log_set(_llama_state["callback"], ctypes.c_void_p(0))
