"""The product end to end with real GGUF models through `enrichd run` and `enrichd enrich`."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.formats import parse
from daemon.answers import SourceText
from daemon.schema import schema_errors
from daemon.text import WORD, words
from tests.conftest import (
    DEFAULT_MODEL,
    ROOT,
    SIMSAMU,
    daemon_log,
    running_daemon,
    small_model_path,
    wait_for,
)


def short_srt(source: Path, cues: int) -> str:
    """The first `cues` cues of a real call, as SRT."""
    t = parse(source)
    clock = lambda s: f"{int(s // 3600):02d}:{int(s % 3600 // 60):02d}:{int(s % 60):02d},{int(round(s % 1 * 1000)):03d}"
    return "".join(f"{i + 1}\n{clock(s.start)} --> {clock(s.end)}\n{s.text}\n\n" for i, s in enumerate(t.segments[:cues]))


def check_output(output: dict, source: Path) -> None:
    assert schema_errors(output) == []
    original = parse(source)
    assert [(s["index"], s["start"], s["end"], s["speaker"], s["original_text"]) for s in output["segments"]] == \
        [(s.index, s.start, s.end, s.speaker, s.text) for s in original.segments]
    for segment in output["segments"]:
        if segment["correction"] in ("rejected", "unchanged", "skipped", "empty"):
            assert segment["text"] == segment["original_text"] and "edits" not in segment
        for edit in segment.get("edits", []):
            if edit["gain"] is not None:  # a scored edit replaces one word and leaves the others as they were
                before, after = WORD.findall(segment["original_text"]), WORD.findall(segment["text"])
                assert before[edit["word"]] == edit["from"] and after[edit["word"]] == edit["to"]
                assert len(before) == len(after)
    record = (output["metadata"] or {}).get("record")
    if record:  # every entity is in the very segment it points at
        texts = {s["index"]: s["text"].lower() for s in output["segments"]}
        assert all(entity["text"].lower() in texts[entity["segment"]] for entity in record["entities"])


def test_enrichd_run_with_the_real_test_model(spool):
    path, config = spool({"output": {"markdown": True}})
    sources = []
    for name, call in (("reveil.srt", "dj_2022_msn.srt"), ("ventre.srt", "dj_2022_douleur_abdo.srt")):
        source = config.paths.inbox.parent / name
        source.write_text(short_srt(SIMSAMU / call, 5))
        sources.append(source)
    with running_daemon(path, fake=False):
        for source in sources:
            (config.paths.inbox / source.name).write_bytes(source.read_bytes())
        wait_for(lambda: all((config.paths.outbox / f"{s.stem}.enriched.json").exists() for s in sources), 400,
                 interval=1, what="two enriched outputs")
    model_sha = hashlib.sha256(small_model_path().read_bytes()).hexdigest()
    for source in sources:
        output = json.loads((config.paths.outbox / f"{source.stem}.enriched.json").read_text())
        check_output(output, source)
        assert output["provenance"]["model"]["sha256"] == model_sha
        assert output["stats"]["model_calls"] > 0 and output["stats"]["tokens"]["generated"] > 0
        markdown = (config.paths.outbox / f"{source.stem}.enriched.md").read_text()
        assert markdown.startswith("# ") and "## Call record" in markdown and "**Resolution:** " in markdown
        assert output["metadata"]["record"]["resolution"]["value"] in ("resolved", "partly", "unresolved")
        assert (config.paths.archive / source.name).read_bytes() == source.read_bytes()
    log = daemon_log(path)
    assert "done reveil.srt" in log and "done ventre.srt" in log and "llama.cpp:" in log


def test_enrichd_enrich_cli_and_whole_file_cache_hit(tmp_path):
    source = tmp_path / "appel.srt"
    source.write_text(short_srt(SIMSAMU / "dj_2023_coups.srt", 4))
    config = tmp_path / "c.yaml"
    config.write_text(f"paths: {{state: {tmp_path / 'state'}}}\nmodel: {{path: {small_model_path()}, n_ctx: 2048}}\n")
    outputs = []
    for run in range(2):
        out = tmp_path / f"out{run}.json"
        result = subprocess.run([sys.executable, "-m", "daemon", "enrich", str(source), "-o", str(out), "--config", str(config)],
                                cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-2000:]
        outputs.append(json.loads(out.read_text()))
    check_output(outputs[0], source)
    assert outputs[0]["stats"]["cache"] == "miss" and outputs[1]["stats"]["cache"] == "file"
    assert outputs[1]["stats"]["model_calls"] == 0
    assert "llama.cpp: llama_model_load" not in result.stderr
    strip = lambda doc: {k: v for k, v in doc.items() if k not in ("timings", "stats")}
    assert strip(outputs[0]) == strip(outputs[1])


# two short real calls, JSON with speaker labels (the slowest check of `make test`: five calls, then three made CI
# overrun its 30-minute budget). Quality at scale is measured by `enrichd bench`, not here.
QUALITY_CALLS = ["dj_2022_msn.json", "dj_2022_arme_blanche.json"]


@pytest.mark.quality
def test_quality_with_the_default_model(spool):
    if not DEFAULT_MODEL.is_file():
        pytest.fail(f"{DEFAULT_MODEL} is missing: `make test` installs it with `enrichd model install`")
    path, config = spool({"model": {"path": str(DEFAULT_MODEL), "n_ctx": 4096}, "cache": {"enabled": False}})
    for name in QUALITY_CALLS:
        (config.paths.inbox / name).write_bytes((SIMSAMU / name).read_bytes())
    with running_daemon(path, fake=False):
        wait_for(lambda: len(list(config.paths.archive.iterdir())) + len(list(config.paths.failed.iterdir())) >= len(QUALITY_CALLS),
                 1800, interval=5, what="the enriched calls")
    assert list(config.paths.failed.iterdir()) == []
    kept = total = 0
    for name in QUALITY_CALLS:
        output = json.loads((config.paths.outbox / name.replace(".json", ".enriched.json")).read_text())
        check_output(output, SIMSAMU / name)
        meta = output["metadata"]
        source = SourceText.of(parse(SIMSAMU / name).dialogue())
        assert output["language"] == "fr"
        assert meta["title"] and 3 <= len(words(meta["title"])) <= 12, (name, output["stats"]["metadata"])
        assert meta["satisfaction"]["score"] in range(1, 6)
        assert 3 <= len(meta["bullet_points"]) <= 6
        assert not source.copies(meta["summary"]) and not any(source.copies(b) for b in meta["bullet_points"])
        counts = output["stats"]["segments"]
        kept += counts["corrected"] + counts["unchanged"]
        total += sum(counts.values()) - counts["empty"]
        assert len(output["stats"]["rejections"]) == counts["rejected"]
    assert kept >= 0.6 * total
