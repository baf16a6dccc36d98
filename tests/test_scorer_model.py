"""enrichment.correction.model: a second, smaller GGUF that only judges spellings, beside the model that writes.

The scorer here is a Q4_0 copy of the test model made by `enrichd model quantize`: a different file, so a
different sha256, with the same vocabulary.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from daemon.config import load_config
from daemon.engine.llama import LlamaEngine
from daemon.engine.quantize import quantize
from daemon.engine.runtime import LlamaSettings
from daemon.formats import parse
from daemon.model_store import describe_model, file_sha256
from daemon.pipeline import EnrichContext, enrich
from tests.conftest import ROOT, SIMSAMU, daemon_log, running_daemon, small_model_path, wait_for
from tests.test_end_to_end import check_output, short_srt


@pytest.fixture(scope="module")
def scorer_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return quantize(small_model_path(), tmp_path_factory.mktemp("scorer") / "scorer.q4_0.gguf", "Q4_0", 1).path


class Recording:
    """An engine that notes which of its methods the pipeline called."""

    def __init__(self, engine: LlamaEngine):
        self.engine, self.used = engine, set[str]()

    def __getattr__(self, name: str) -> Any:
        if name != "stats":
            self.used.add(name)
        return getattr(self.engine, name)


def test_the_scorer_model_judges_and_the_main_model_writes(spool, scorer_path):
    path, config = spool({"enrichment": {"correction": {"model": str(scorer_path)}}})
    settings = LlamaSettings(n_ctx=2048)
    main, scorer = Recording(LlamaEngine(small_model_path(), settings)), Recording(LlamaEngine(scorer_path, settings))
    source = config.paths.inbox / "appel.srt"
    source.write_text(short_srt(SIMSAMU / "dj_2022_msn.srt", 6))
    context = EnrichContext(config, describe_model(config), lambda: main, None, lambda: scorer)  # type: ignore[arg-type, return-value]
    output = enrich(parse(source), context)
    check_output(output, source)
    assert "stream" in scorer.used and "chat" not in scorer.used
    assert "chat" in main.used and "stream" not in main.used
    assert output["provenance"]["model"]["scorer"]["sha256"] == file_sha256(scorer_path)
    scored = output["stats"]["correction"]["scorer_tokens"]
    assert scored["evaluated"] > 0 and scored["generated"] == 0
    assert output["stats"]["tokens"]["evaluated"] > scored["evaluated"]
    main.engine.close()
    scorer.engine.close()


def test_a_worker_loads_both_models_once_and_status_reports_them(spool, scorer_path):
    path, config = spool({"workers": {"count": 1, "threads": 1},
                          "enrichment": {"correction": {"model": str(scorer_path)}}})
    names = ["un.srt", "deux.srt"]
    with running_daemon(path, fake=False):
        for name, call in zip(names, ("dj_2022_msn.srt", "dj_2023_coups.srt")):
            (config.paths.inbox / name).write_text(short_srt(SIMSAMU / call, 4))
        wait_for(lambda: all((config.paths.outbox / f"{Path(n).stem}.enriched.json").exists() for n in names), 300,
                 interval=1, what="two outputs")
        status = subprocess.run([sys.executable, "-m", "daemon", "status", "--config", str(path)], cwd=ROOT,
                                capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    model_line = next(line for line in status.stdout.splitlines() if line.strip().startswith("model "))
    assert "+ scorer scorer.q4_0" in model_line and " MB)" in model_line
    assert "MB resident" in status.stdout
    log = daemon_log(path)
    assert log.count("model and scorer loaded in") == 1
    for name in names:
        output = json.loads((config.paths.outbox / f"{Path(name).stem}.enriched.json").read_text())
        assert output["provenance"]["model"]["scorer"]["file"] == "scorer.q4_0.gguf"
        assert output["stats"]["correction"]["scorer_tokens"]["evaluated"] > 0
    assert load_config(path).enrichment.correction.scorer_path == scorer_path
