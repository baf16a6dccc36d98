"""Model files: the default model verifies, a damaged copy is refused clearly, llama.cpp's log is routed."""

from __future__ import annotations

import subprocess
import sys

import pytest
from loguru import logger

from daemon.engine.llama import LlamaEngine
from daemon.engine.runtime import LlamaSettings
from daemon.errors import ModelError
from daemon.model_store import DEFAULT_MODEL, ModelInfo, model_info
from tests.conftest import DEFAULT_MODEL as INSTALLED_DEFAULT, ROOT, small_model_path


def verify(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daemon", "model", "verify", *args, "--config", str(ROOT / "config.yaml")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_installed_default_model_verifies():
    if not INSTALLED_DEFAULT.is_file():
        pytest.fail(f"{INSTALLED_DEFAULT} is missing: `make test` installs it with `enrichd model install`")
    result = verify()
    assert result.returncode == 0, result.stderr
    assert f"sha256 {DEFAULT_MODEL.sha256}" in result.stdout


def test_damaged_copies_are_refused_with_what_differs(tmp_path):
    short = tmp_path / "short.gguf"
    short.write_bytes(b"GGUF" + b"\0" * 1000)
    result = verify(str(short))
    assert result.returncode == 1
    assert "1,004 bytes, expected 1,117,320,768" in result.stderr
    same_size = tmp_path / "same-size.gguf"
    with open(same_size, "wb") as handle:
        handle.truncate(DEFAULT_MODEL.size)
    result = verify(str(same_size))
    assert result.returncode == 1
    assert f"expected {DEFAULT_MODEL.sha256}" in result.stderr and "sha256 " in result.stderr


def test_model_hash_is_remembered_and_follows_changes(tmp_path):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"one")
    first = model_info(model, tmp_path / "state")
    assert (tmp_path / "state" / "model-hashes.json").exists()
    model.write_bytes(b"two!")
    assert model_info(model, tmp_path / "state").sha256 != first.sha256


def test_llama_cpp_errors_reach_the_log_as_errors(tmp_path):
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"not a gguf file at all" * 100)
    records: list[tuple[str, str]] = []
    sink = logger.add(lambda m: records.append((m.record["level"].name, m.record["message"])), level="TRACE")
    try:
        with pytest.raises(ModelError, match="could not load"):
            LlamaEngine(garbage, LlamaSettings(n_ctx=256))
    finally:
        logger.remove(sink)
    errors = [message for level, message in records if level == "ERROR" and message.startswith("llama.cpp: ")]
    assert errors, records[-5:]


def test_small_model_loads_with_its_chat_template():
    engine = LlamaEngine(small_model_path(), LlamaSettings(n_ctx=512))
    completion = engine.chat("Réponds en un mot.", "Quelle est la couleur du ciel ?", max_tokens=8, temperature=0)
    assert completion.generated_tokens > 0 and completion.prompt_tokens > engine.count_tokens("Quelle est la couleur du ciel ?")
