import subprocess
import sys
from pathlib import Path

import pytest

from daemon.config import load_config, parse_config
from daemon.cpus import WorkerPlan, plan_workers
from daemon.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def enrichd(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daemon", *args], cwd=ROOT, capture_output=True, text=True, env=env)


def test_shipped_config_is_valid_and_matches_defaults():
    shipped = load_config(ROOT / "config.yaml")
    defaults = parse_config({}, base=ROOT)
    shipped.source = None
    assert shipped == defaults


def test_check_config_prints_resolved_config_and_exits_0():
    result = enrichd("check-config", "config.yaml")
    assert result.returncode == 0, result.stderr
    assert "inbox: " + str(ROOT / "var" / "inbox") in result.stdout


@pytest.mark.parametrize("text, key", [
    ("queue:\n  setle_seconds: 2\n", "queue.setle_seconds"),
    ("workers:\n  count: -1\n", "workers.count"),
    ("model:\n  n_ctx: many\n", "model.n_ctx"),
    ("queue:\n  on_success: shred\n", "queue.on_success"),
    ("cachee: {}\n", "cachee"),
])
def test_bad_config_exits_2_naming_the_key(tmp_path, text, key):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = enrichd("check-config", str(path))
    assert result.returncode == 2
    assert key in result.stderr
    assert str(path) in result.stderr


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as info:
        parse_config({"queue": {"max_attempts": 0, "polling": "yes"}, "logging": {"level": "LOUD"}})
    keys = " ".join(info.value.problems)
    assert "queue.max_attempts" in keys and "queue.polling" in keys and "logging.level" in keys


def test_relative_paths_follow_the_config_file_and_env_overrides_win(tmp_path, monkeypatch):
    path = tmp_path / "c.yaml"
    path.write_text("paths:\n  outbox: out\n")
    monkeypatch.setenv("ENRICHD_PATHS_INBOX", str(tmp_path / "elsewhere"))
    config = load_config(path)
    assert config.paths.outbox == tmp_path / "out"
    assert config.paths.inbox == tmp_path / "elsewhere"


def test_config_path_from_environment(tmp_path, monkeypatch):
    path = tmp_path / "c.yaml"
    path.write_text("queue:\n  max_attempts: 7\n")
    monkeypatch.setenv("ENRICHD_CONFIG", str(path))
    assert load_config(None).queue.max_attempts == 7


def test_workers_auto_shorthand_and_oversubscription_refused():
    config = parse_config({"workers": "auto"})
    assert plan_workers(config.workers, [0, 1]) == WorkerPlan(2, 1)
    config = parse_config({"workers": {"count": 2, "threads": 2}})
    with pytest.raises(ConfigError, match="exceeds the 2 available CPUs"):
        plan_workers(config.workers, [0, 1])
    assert plan_workers(parse_config({"workers": {"count": 1}}).workers, [0, 1]) == WorkerPlan(1, 2)
    assert WorkerPlan(2, 1).cpu_sets([4, 5]) == [[4], [5]]


def test_oversubscribed_config_refused_by_cli(tmp_path):
    path = tmp_path / "over.yaml"
    path.write_text("workers:\n  count: 64\n  threads: 64\n")
    result = enrichd("check-config", str(path))
    assert result.returncode == 2
    assert "workers.count x workers.threads" in result.stderr


def test_unknown_prompt_override_and_a_count_that_is_not_one_are_errors(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("enrichment:\n  prompts:\n    fr.titel: x\n    en.summary_sentences: two\n    fr.summary_sentences: '3'\n")
    result = enrichd("check-config", str(path))
    assert result.returncode == 2 and "fr.titel: unknown prompt" in result.stderr
    assert "en.summary_sentences: 'two' is not a number of sentences" in result.stderr
    assert "fr.summary_sentences" not in result.stderr
