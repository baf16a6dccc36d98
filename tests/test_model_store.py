"""Model files: the packaged models assemble and verify, a damaged copy is refused clearly, quantised copies
load, llama.cpp's log is routed."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from loguru import logger

from daemon.engine.llama import LlamaEngine
from daemon.engine.runtime import LlamaSettings
from daemon.errors import ModelError
from daemon.config import Config, load_config
from daemon.model_store import (
    DEFAULT_MODEL,
    SCORER_MODEL,
    ModelInfo,
    describe_model,
    file_sha256,
    install,
    model_info,
    needed_packages,
)
from tests.conftest import DEFAULT_MODEL as INSTALLED_DEFAULT, ROOT, small_model_path


def load_config_text(folder: Path, text: str) -> Config:
    (folder / "c.yaml").write_text(f"paths: {{state: {folder / 'state'}}}\n{text}")
    return load_config(folder / "c.yaml")


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


def test_the_scorer_package_assembles_to_its_pinned_size_and_sha256(tmp_path):
    scorer = f"enrichment: {{correction: {{model: {tmp_path / 'models' / SCORER_MODEL.file}}}}}\n"
    both = load_config_text(tmp_path, f"model: {{models_dir: {tmp_path / 'models'}}}\n{scorer}")
    assert [spec.extra for spec in needed_packages(both)] == ["default-model", "scorer-model"]
    config = load_config_text(tmp_path, f"model: {{models_dir: {tmp_path / 'models'}, path: {small_model_path()}}}\n{scorer}")
    assert [spec.extra for spec in needed_packages(config)] == ["scorer-model"]
    path = install(SCORER_MODEL, config)
    assert path.stat().st_size == SCORER_MODEL.size and file_sha256(path) == SCORER_MODEL.sha256
    result = verify(str(path))
    assert result.returncode == 0 and f"OK ({SCORER_MODEL.name}, sha256 {SCORER_MODEL.sha256})" in result.stdout
    assert describe_model(config).scorer == ModelInfo(SCORER_MODEL.name, SCORER_MODEL.file, SCORER_MODEL.sha256,
                                                      SCORER_MODEL.size)
    path.unlink()
    damaged = replace(SCORER_MODEL, sha256="0" * 64)
    with pytest.raises(ModelError, match="the part packages are damaged"):
        install(damaged, config)
    assert list((tmp_path / "models").iterdir()) == []


def quantize_command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daemon", "model", "quantize", *args, "--config", str(ROOT / "config.yaml")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_quantize_writes_a_copy_that_loads_and_answers_and_never_overwrites(tmp_path):
    source = tmp_path / "small.gguf"
    source.write_bytes(small_model_path().read_bytes())
    before = file_sha256(source)
    target = tmp_path / "small.q4_0.gguf"
    result = quantize_command(str(source), "--type", "q4_0", "--output", str(target))
    assert result.returncode == 0, result.stderr
    assert f"{target}: Q4_0" in result.stdout and "it loads and answers" in result.stdout
    engine = LlamaEngine(target, LlamaSettings(n_ctx=512))
    assert engine.chat("Réponds en un mot.", "Quelle est la couleur du ciel ?", max_tokens=8, temperature=0).text.strip()
    engine.close()
    assert target.stat().st_size < source.stat().st_size
    written = file_sha256(target)
    again = quantize_command(str(source), "--type", "Q8_0", "--output", str(target))
    assert again.returncode == 1 and "already exists" in again.stderr and file_sha256(target) == written
    onto_input = quantize_command(str(source), "--type", "Q8_0", "--output", str(source))
    assert onto_input.returncode == 1 and "already exists" in onto_input.stderr
    unknown = quantize_command(str(source), "--type", "Q9_9", "--output", str(tmp_path / "x.gguf"))
    assert unknown.returncode == 1 and "unknown quantisation type 'Q9_9'" in unknown.stderr and "Q4_0" in unknown.stderr
    assert file_sha256(source) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.gguf", "small.q4_0.gguf"]
