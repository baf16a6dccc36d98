"""Monitoring: the metrics file a real run writes, the dashboard and alerts that read it, `enrichd status`."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT, running_daemon, wait_for
from tests.test_daemon import drop, outputs

SYSTEMD = ROOT / "systemd"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_the_metrics_file_parses_and_counts_what_the_daemon_did(spool):
    path, config = spool({"workers": {"count": 1, "threads": 1}})
    for i in range(3):
        drop(config.paths.inbox, f"call-{i}.txt")
    (config.paths.inbox / "broken.json").write_text('{"segments": [')
    metrics_file = config.paths.state / "enrichd.prom"
    with running_daemon(path):
        wait_for(lambda: len(outputs(config.paths.outbox)) == 3 and (config.paths.failed / "broken.json").exists(), 60,
                 what="three outputs and one failure")

        def counted() -> dict | None:
            found = samples(metrics_file.read_text()) if metrics_file.exists() else {}
            return found if found.get(("enrichd_files_done_total", ())) == 3 else None

        found = wait_for(counted, 30, what="the metrics file to count three files")
    assert found[("enrichd_files_failed_total", (("reason", "TranscriptError"),))] == 1
    assert found[("enrichd_stage_seconds_count", (("stage", "total"),))] == 3
    assert found[("enrichd_stage_seconds_count", (("stage", "write"),))] == 3
    assert found[("enrichd_stage_seconds_count", (("stage", "dispatch"),))] == 3
    assert found[("enrichd_workers", (("state", "alive"),))] == 1
    assert found[("enrichd_files", (("folder", "failed"),))] == 1
    assert found[("enrichd_last_output_timestamp_seconds", ())] > 0
    assert found[("enrichd_tokens_total", (("kind", "generated"),))] > 0
    assert found[("enrichd_model_load_seconds", (("worker", "0"),))] >= 0
    build = next(labels for (name, labels), value in found.items() if name == "enrichd_build_info")
    assert dict(build)["model_sha256"] == "0" * 64 and dict(build)["version"]
    assert "enrichd_segments_total" in {name for name, _ in found}
    assert not list(config.paths.state.glob("*.prom.*")), "the file is written by rename, no temp left"


def metric_names(expression: str) -> set[str]:
    return {re.sub(r"_(bucket|sum|count)$", "", name) for name in re.findall(r"\benrichd_[a-z_]+", expression)}


def test_the_dashboard_and_the_alerts_use_metrics_that_exist(spool):
    from daemon.metrics import Metrics
    from daemon.model_store import ModelInfo

    registry = Metrics(None, ModelInfo("m", "m.gguf", "0" * 64), "v").registry
    exposed = {f"{family.name}_total" if family.type == "counter" else family.name for family in registry.collect()}
    dashboard = json.loads((SYSTEMD / "grafana-dashboard.json").read_text())
    used = set().union(*(metric_names(t["expr"]) for p in dashboard["panels"] for t in p["targets"]))
    alerts = yaml.safe_load((SYSTEMD / "enrichd-alerts.yml").read_text())
    used |= set().union(*(metric_names(rule["expr"]) for group in alerts["groups"] for rule in group["rules"]))
    assert len(used) >= 8 and used <= exposed, used - exposed


def test_make_run_installs_the_default_model_only_when_the_config_names_none(tmp_path):
    custom = tmp_path / "custom.yaml"
    custom.write_text(f"model: {{path: {tmp_path / 'mine.gguf'}}}\n")
    result = subprocess.run(["make", "-s", "model", f"CONFIG={custom}"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "mine.gguf" in result.stderr and "the default model is not needed" in result.stderr
    default = subprocess.run([sys.executable, "-m", "daemon", "model", "extras", "--config", str(ROOT / "config.yaml")],
                             cwd=ROOT, capture_output=True, text=True)
    assert default.returncode == 0 and default.stdout == "default-model\n" and "the default model" in default.stderr


def test_status_shows_each_worker_the_model_and_the_last_figures(spool):
    path, config = spool({"workers": {"count": 1, "threads": 1}})
    with running_daemon(path):
        drop(config.paths.inbox, "call.txt")
        wait_for(lambda: (config.paths.outbox / "call.enriched.json").exists(), 30, what="output")
        wait_for(lambda: '"jobs_done": 1' in (config.paths.state / "status.json").read_text(), 10, what="status")
        text = subprocess.run([sys.executable, "-m", "daemon", "status", "--config", str(path)], cwd=ROOT,
                              capture_output=True, text=True).stdout
        raw = json.loads(subprocess.run([sys.executable, "-m", "daemon", "status", "--json", "--config", str(path)],
                                        cwd=ROOT, capture_output=True, text=True).stdout)
    assert "model fake (sha256 000000000000), 1 worker(s) x 1 thread(s)" in text
    assert "files/min" in text and "generated tokens/s" in text and "cache hit rate" in text
    cpus = ",".join(map(str, raw["workers"][0]["cpus"]))
    assert re.search(rf"worker 0 pid \d+ CPUs {cpus} idle, 1 done", text), text
    assert raw["workers"][0]["jobs_done"] == 1 and raw["throughput"]["files_done_total"] == 1
