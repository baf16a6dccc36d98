"""The result cache: keys, levels, concurrency across processes, corruption, and whole-file hits."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import sqlite3
from pathlib import Path

from daemon.cache import Cache, cache_key, evict, summarize
from daemon.config import CacheConfig, parse_config
from daemon.formats import parse_bytes
from daemon.model_store import ModelInfo
from daemon.pipeline import EnrichContext, enrich, prompt_version
from tests.conftest import running_daemon, wait_for
from tests.fakes import FakeEngine

CALL = "Agent: Bonjour, service client, que puis-je faire pour vous ?\nClient: {tail}\n"


def context(tmp_path: Path, calls: list[FakeEngine], extra: dict | None = None, sha: str = "a" * 64) -> EnrichContext:
    config = parse_config({"paths": {"state": str(tmp_path)}, **(extra or {})})
    info = ModelInfo("fake", "fake.gguf", sha)

    def engine() -> FakeEngine:
        calls.append(FakeEngine())
        return calls[-1]

    return EnrichContext(config, info, engine, Cache(tmp_path / "cache.sqlite"))


def transcript(tail: str, name: str = "call.txt"):
    return parse_bytes(CALL.format(tail=tail).encode(), name)


def model_calls(engines: list[FakeEngine]) -> int:
    return sum(e.stats.calls for e in engines)


def test_same_file_twice_is_served_whole_from_the_cache_without_loading_the_engine(tmp_path):
    engines: list[FakeEngine] = []
    ctx = context(tmp_path, engines)
    first = enrich(transcript("ma box ne marche plus"), ctx)
    assert first["stats"]["cache"] == "miss" and model_calls(engines) > 0
    loaded = len(engines)
    second = enrich(transcript("ma box ne marche plus"), ctx)
    assert len(engines) == loaded
    assert second["stats"]["cache"] == "file" and second["stats"]["model_calls"] == 0
    assert second["stats"]["cache_hits_misses"]["file"] == {"hits": 1, "misses": 0}
    strip = lambda doc: {k: v for k, v in doc.items() if k not in ("timings", "stats")}
    assert strip(second) == strip(first)


def test_transcripts_sharing_their_first_2000_characters_get_different_entries(tmp_path):
    prefix = "Agent: " + ("bonjour et bienvenue au service client, " * 60)[:2000]
    a = parse_bytes((prefix + "\nClient: ma facture est fausse\n").encode(), "a.txt")
    b = parse_bytes((prefix + "\nClient: je veux résilier\n").encode(), "b.txt")
    assert a.dialogue()[:2000] == b.dialogue()[:2000]
    engines: list[FakeEngine] = []
    ctx = context(tmp_path, engines)
    enrich(a, ctx)
    out_b = enrich(b, ctx)
    assert out_b["stats"]["cache"] == "miss"
    assert out_b["stats"]["cache_hits_misses"]["metadata"] == {"hits": 0, "misses": 1}
    # the shared first turn is judged again: its judgement read the turn that follows it, which differs
    assert out_b["stats"]["cache_hits_misses"]["segment"]["hits"] == 0
    assert cache_key("metadata", ["s", "fr", a.dialogue()]) != cache_key("metadata", ["s", "fr", b.dialogue()])
    assert summarize(tmp_path / "cache.sqlite").by_level["metadata"] == 2


def test_changing_the_model_or_a_prompt_changes_every_key(tmp_path):
    engines: list[FakeEngine] = []
    enrich(transcript("allo"), context(tmp_path, engines))
    other_model = enrich(transcript("allo"), context(tmp_path, engines, sha="b" * 64))
    assert other_model["stats"]["cache"] == "miss"
    assert other_model["stats"]["cache_hits_misses"]["segment"]["hits"] == 0
    prompts = {"enrichment": {"prompts": {"fr.title": "Donne un titre différent."}}}
    other_prompt = enrich(transcript("allo"), context(tmp_path, engines, prompts))
    assert other_prompt["stats"]["cache"] == "miss"
    assert prompt_version(parse_config(prompts).enrichment) != prompt_version(parse_config({}).enrichment)


def leaf_settings(value: object, path: str = "") -> list[tuple[str, object]]:
    """Every setting under a config dataclass, as (dotted name, value)."""
    if dataclasses.is_dataclass(value):
        return [leaf for f in dataclasses.fields(value) for leaf in leaf_settings(getattr(value, f.name), f"{path}{f.name}.")]
    return [(path.rstrip("."), value)]


def changed(name: str, value: object, folder: Path) -> object:
    """Another valid value for a setting."""
    confusions = folder / "more.yaml"
    confusions.write_text("words:\n  homophones:\n    - [vert, verre]\n")
    alternatives = {"language": "en", "correction.mode": "both", "correction.confusion_files": [str(confusions)],
                    "correction.margins": {"words": 1.5}, "correction.min_similarity": 0.7,
                    "prompts": {"fr.title": "Donne un titre."}}
    if name in alternatives:
        return alternatives[name]
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    return 0.5 if value is None else value + 0.25


def nested(name: str, value: object) -> dict:
    for part in reversed(name.split(".")):
        value = {part: value}
    return value  # type: ignore[return-value]


def test_every_setting_that_changes_an_output_is_in_every_cache_key(tmp_path, monkeypatch):
    """Each enrichment setting, the context size and the daemon's version: a change is a miss (the scorer's path
    is not one: the scorer's sha256 is in the model identity)."""
    base = context(tmp_path, [])
    settings = [(name, v) for name, v in leaf_settings(base.config.enrichment) if name != "correction.model"]
    assert len(settings) > 25
    for name, value in settings:
        (tmp_path / name).mkdir()
        extra = {"enrichment": nested(name, changed(name, value, tmp_path / name))}
        assert context(tmp_path / name, [], extra).scope() != base.scope(), name
    assert context(tmp_path, [], {"model": {"n_ctx": 2048}}).scope() != base.scope()
    engines: list[FakeEngine] = []
    first = enrich(transcript("allo"), context(tmp_path, engines))
    assert first["stats"]["cache"] == "miss"
    monkeypatch.setattr("daemon.pipeline.__version__", "99.0.0")
    assert enrich(transcript("allo"), context(tmp_path, engines))["stats"]["cache"] == "miss"


def hammer(path: str, worker: int) -> None:
    cache = Cache(Path(path))
    for i in range(2000):
        cache.put("segment", [worker, i], {"text": f"{worker}-{i}"})
        assert cache.get("segment", [worker, (i * 7) % (i + 1)]) is not None
    cache.close()


def test_four_processes_writing_at_once_lose_nothing(tmp_path):
    path = tmp_path / "cache.sqlite"
    Cache(path).close()
    spawn = multiprocessing.get_context("spawn")
    processes = [spawn.Process(target=hammer, args=(str(path), w)) for w in range(4)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(timeout=300)
    assert [p.exitcode for p in processes] == [0, 0, 0, 0]
    cache = Cache(path)
    assert all(cache.get("segment", [w, i]) == {"text": f"{w}-{i}"} for w in range(4) for i in range(2000))
    assert summarize(path).entries == 8000


def test_eviction_keeps_the_most_recently_used(tmp_path):
    path = tmp_path / "cache.sqlite"
    cache = Cache(path)
    for i in range(10):
        cache.put("segment", [i], {"i": i})
    cache.get("segment", [0])
    removed = evict(path, CacheConfig(max_entries=5))
    assert removed == 5
    assert cache.get("segment", [0]) == {"i": 0} and cache.get("segment", [1]) is None
    assert cache.get("segment", [9]) == {"i": 9}


def test_values_are_json_not_pickle(tmp_path):
    cache = Cache(tmp_path / "cache.sqlite")
    cache.put("segment", ["x"], {"text": "é"})
    cache.close()
    with sqlite3.connect(tmp_path / "cache.sqlite") as db:
        (raw,) = db.execute("SELECT value FROM entries").fetchone()
    assert json.loads(raw)["value"] == {"text": "é"}


def test_corrupt_cache_file_is_moved_aside_and_the_daemon_still_enriches(spool):
    path, config = spool()
    config.paths.state.mkdir(parents=True, exist_ok=True)
    (config.paths.state / "cache.sqlite").write_bytes(b"this is not a database" * 100)
    (config.paths.inbox / "call.txt").write_text(CALL.format(tail="ma box ne marche plus"))
    with running_daemon(path):
        wait_for(lambda: (config.paths.outbox / "call.enriched.json").exists(), 30, what="output")
    assert list(config.paths.state.glob("cache.sqlite.corrupt-*"))
    assert "unreadable" in (path.parent / "daemon.log").read_text()


def test_cache_cli_stats_and_clear(spool):
    import subprocess
    import sys

    from tests.conftest import ROOT

    path, config = spool()
    cache = Cache(config.paths.state / "cache.sqlite")
    for i in range(3):
        cache.put("segment", [i], {"i": i})
    cache.put("file", ["f"], {"x": 1})
    cache.close()

    def enrichd(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "daemon", "cache", *args, "--config", str(path)],
                              cwd=ROOT, capture_output=True, text=True)

    stats = enrichd("stats")
    assert stats.returncode == 0 and "4 entries" in stats.stdout and "segment: 3" in stats.stdout
    assert "no daemon running" in stats.stdout
    assert "removed 0 entries" in enrichd("clear", "--older-than", "1").stdout
    assert "removed 4 entries" in enrichd("clear").stdout
    assert "0 entries" in enrichd("stats").stdout


def test_a_cache_that_stays_locked_says_so_and_the_lookup_is_a_miss(tmp_path, monkeypatch):
    from loguru import logger

    cache = Cache(tmp_path / "cache.sqlite")
    monkeypatch.setattr("daemon.cache.time.sleep", lambda _seconds: None)

    def locked(*_args):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(cache, "_reconnect", lambda: cache._db)
    monkeypatch.setattr(type(cache._db), "get", locked)
    lines: list[str] = []
    sink = logger.add(lines.append, level="WARNING")
    try:
        assert cache.get("segment", ["x"]) is None
    finally:
        logger.remove(sink)
    assert cache.misses["segment"] == 1
    assert any("still locked after 5 tries; get skipped" in line for line in lines)


def test_enrich_leaves_the_callers_transcript_as_it_was(tmp_path):
    engines: list[FakeEngine] = []
    call = transcript("il et là")
    before = (call.language, [s.text for s in call.segments])
    output = enrich(call, context(tmp_path, engines))
    assert output["language"] == "fr" and (call.language, [s.text for s in call.segments]) == before
