"""`enrichd bench` runs end to end on two short calls with the test model and writes a complete report.

No speed is asserted here: speed claims come from running the command, see BENCHMARKS.md.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, SIMSAMU, small_model_path, wait_for, write_config
from tests.test_end_to_end import short_srt

MODES = ("baseline", "baseline-allcores", "enrichd", "enrichd-warm", "enrichd-celery", "llama-server")
FIGURES = ("wall_seconds", "transcripts_per_hour", "prompt_tokens", "evaluated_tokens", "generated_tokens",
           "generated_tokens_per_second", "peak_rss_mb", "outputs_valid", "fields_null", "segments_rejected")


def two_short_calls(tmp_path: Path, cues: int = 3) -> Path:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in ("dj_2022_msn.srt", "dj_2023_psy.srt"):
        (corpus / name).write_text(short_srt(SIMSAMU / name, cues))
    return corpus


def test_bench_report_is_complete_and_the_same_jobs_run_through_celery_and_the_llama_server_peer(tmp_path):
    """Every mode in one run (a `make test` budget: each mode starts its own daemon, workers or server). The plan is
    one thread per CPU without lending, so `enrichd-celery` (one 1-CPU worker per CPU) runs the very jobs `enrichd`
    runs: the same documents, so the same tokens, and each file's dispatch latency measured."""
    server = os.environ.get("ENRICHD_LLAMA_SERVER")
    if not server or not Path(server).is_file():
        pytest.skip("no llama-server: `make test` builds one and names it in $ENRICHD_LLAMA_SERVER")
    cpus = len(os.sched_getaffinity(0))
    corpus = two_short_calls(tmp_path)
    labels = tmp_path / "labels.csv"
    labels.write_text("file,label\ndj_2022_msn.srt,unhappy\ndj_2023_psy.srt,happy\n")
    (tmp_path / "spool").mkdir()
    config = write_config(tmp_path / "spool", {"logging": {"level": "INFO"},
                                               "workers": {"count": cpus, "threads": 1, "lend_cpus": False}})
    report_file = tmp_path / "report.json"
    result = subprocess.run([sys.executable, "-m", "daemon", "bench", "--config", str(config), "--corpus", str(corpus),
                             "--model", str(small_model_path()), "--out", str(report_file),
                             "--modes", "baseline,baseline-allcores,enrichd,enrichd-celery,llama-server,limit,recall,satisfaction",
                             "--llama-server", server, "--seeds", "0", "--injection-rate", "1.0", "--labels", str(labels)],
                            cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(report_file.read_text())
    assert report["corpus"]["files"] == ["dj_2022_msn.srt", "dj_2023_psy.srt"]
    assert set(report["modes"]) == set(MODES)
    for mode in MODES:
        figures = report["modes"][mode]
        assert all(figures[key] is not None for key in FIGURES), (mode, figures)
        assert figures["transcripts"] == 2 and figures["wall_seconds"] > 0 and figures["peak_rss_mb"] > 0
    for mode in ("enrichd", "enrichd-warm", "enrichd-celery"):
        assert report["modes"][mode]["outputs_valid"] == 2, mode
    assert report["modes"]["enrichd-warm"]["generated_tokens"] == 0
    assert report["modes"]["baseline"]["generated_tokens"] > 0
    assert all(report["ratios"][k] is not None for k in ("baseline / enrichd", "baseline-allcores / enrichd", "enrichd / enrichd-warm",
                                                         "enrichd-celery / enrichd", "llama-server / enrichd"))
    for key in ("prompt_tokens_per_second", "generation_tokens_per_second_one_sequence",
                "generation_tokens_per_second_aggregate", "floor_seconds", "efficiency",
                "floor_seconds_with_drafts", "efficiency_with_drafts"):
        assert report["limit"][key] > 0
    recall = report["recall"]
    assert recall["mode"] == "score" and recall["seeds"] == [0] and set(recall["runs"]) == {"clean", "seed 0"}
    assert recall["injected"] > 0 and recall["restored"] + recall["missed"] + recall["wrong_edit"] == recall["injected"]
    assert sum(sum(counts.values()) for counts in recall["by_kind"].values()) == recall["injected"]
    assert sum(sum(counts.values()) for counts in recall["by_pair"].values()) == recall["injected"]
    assert all(run["segments"] == 6 and run["wer_before"] >= 0 and run["evaluated_tokens"] > 0 for run in recall["runs"].values())
    assert recall["runs"]["clean"]["wer_before"] == 0 and recall["runs"]["seed 0"]["wer_before"] > 0
    assert set(recall["margins"]) == {"injected_runs", "clean_run"}
    satisfaction = report["satisfaction"]
    assert satisfaction["calls"] == 2 and satisfaction["labels"] == {"happy": 1, "unhappy": 1}
    assert satisfaction["scored"]["null_scores"] == 0 and 0 <= satisfaction["scored"]["auc_expected"] <= 1
    assert satisfaction["previous"]["seconds"] > 0 and len(satisfaction["per_call"]) == 2
    assert satisfaction["scored"]["evaluated_tokens"] > 0 and satisfaction["previous"]["generated_tokens"] > 0
    assert report["model"]["sha256"] and report["machine"]["llama_cpp_python"] == "0.3.36"
    assert "baseline: dj_2022_msn.srt done" in result.stderr and "enrichd-warm: dj_2023_psy.enriched.json" in result.stderr
    # the distributed mode: the same documents as the local workers, dispatch measured on both
    local, remote = report["modes"]["enrichd"], report["modes"]["enrichd-celery"]
    assert remote["settings"]["backend"] == "celery" and remote["settings"]["workers"] == cpus
    for key in ("generated_tokens", "evaluated_tokens", "prompt_tokens"):
        assert remote[key] == local[key] > 0, key
    for mode in (local, remote):
        assert 0 <= mode["dispatch_seconds"]["mean"] <= mode["dispatch_seconds"]["max"] < 60
    # the peer: llama.cpp's own server, one slot per worker
    peer = report["modes"]["llama-server"]
    assert peer["evaluated_tokens"] > 0 and peer["settings"]["parallel"] == cpus
    assert "llama-server: dj_2023_psy.srt done" in result.stderr


def test_tune_measures_every_split_and_writes_the_best_for_workers_auto(tmp_path):
    from daemon.config import load_config
    from daemon.cpus import available_cpus, possible_plans, read_tuned

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "dj_2022_msn.srt").write_text(short_srt(SIMSAMU / "dj_2022_msn.srt", 2))
    (tmp_path / "spool").mkdir()
    config = write_config(tmp_path / "spool", {"logging": {"level": "INFO"}})
    result = subprocess.run([sys.executable, "-m", "daemon", "tune", "--config", str(config), "--corpus", str(corpus),
                             "--limit", "1", "--write"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.split() for line in result.stdout.splitlines()[1:] if line.split() and line.split()[0].isdigit()]
    n_cpus = len(available_cpus())
    assert len(rows) == 2 * len(possible_plans(n_cpus))
    assert {(int(r[0]), int(r[1])) for r in rows} == {(p.count, p.threads) for p in possible_plans(n_cpus)}
    tuned = read_tuned(load_config(config).paths.state)
    assert tuned is not None and (tuned[0].count, tuned[0].threads, tuned[1]) == (int(rows[0][0]), int(rows[0][1]), int(rows[0][2]))


def test_load_shapes_drop_the_first_n_files_at_once_for_each_n(tmp_path):
    corpus = two_short_calls(tmp_path, cues=2)
    (tmp_path / "spool").mkdir()
    config = write_config(tmp_path / "spool", {"logging": {"level": "INFO"}})
    report_file = tmp_path / "report.json"
    result = subprocess.run([sys.executable, "-m", "daemon", "bench", "--config", str(config), "--corpus", str(corpus),
                             "--model", str(small_model_path()), "--out", str(report_file), "--modes", "enrichd",
                             "--shapes", "1,2"],
                            cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(report_file.read_text())
    assert "modes" not in report and set(report["shapes"]) == {"1", "2"}
    for n, shape in report["shapes"].items():
        assert shape["files"] == ["dj_2022_msn.srt", "dj_2023_psy.srt"][:int(n)] and set(shape["modes"]) == {"enrichd"}
        figures = shape["modes"]["enrichd"]
        assert figures["transcripts"] == int(n) == figures["outputs_valid"] and figures["wall_seconds"] > 0
        assert figures["settings"]["cache"] == "cold"




def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def test_a_bench_stopped_with_sigterm_stops_the_daemon_it_started(tmp_path):
    """Once killed this way, a bench left its `enrichd run` working on, which took the CPUs of the next run."""
    (tmp_path / "spool").mkdir()
    config = write_config(tmp_path / "spool", {"workers": {"count": 1, "threads": 1}})
    bench = subprocess.Popen([sys.executable, "-m", "daemon", "bench", "--config", str(config), "--corpus",
                              str(two_short_calls(tmp_path)), "--model", str(small_model_path()), "--modes", "enrichd"],
                             cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        daemon = wait_for(lambda: next(iter(_children(bench.pid)), None), 60, what="the bench's daemon")
        bench.send_signal(signal.SIGTERM)
        assert bench.wait(timeout=180) == 128 + signal.SIGTERM
        assert not Path(f"/proc/{daemon}").exists() or "zombie" in Path(f"/proc/{daemon}/status").read_text()
    finally:
        bench.kill()
        bench.wait()


def test_summaries_repeated_with_n_batch_halved_report_each_run_and_the_spread(tmp_path):
    """`--modes summaries --repeats 2`: the same files read with n_batch 512 then 256, each run scored against the fact
    sheets (the corpus folder is named after them) and kept apart, and the range of each figure; a count below 1, one
    that would halve n_batch below 32, or a tuned split that would fix n_batch, is refused before anything runs."""
    corpus = tmp_path / "simsamu"
    corpus.mkdir()
    for name in ("dj_2022_msn.srt", "dj_2023_psy.srt"):
        (corpus / name).write_text(short_srt(SIMSAMU / name, 3))
    (tmp_path / "spool").mkdir()
    config = write_config(tmp_path / "spool", {"logging": {"level": "INFO"}, "model": {"n_batch": 512},
                                               "workers": {"count": 1, "threads": 1}})
    kept = tmp_path / "kept"
    command = [sys.executable, "-m", "daemon", "bench", "--config", str(config), "--corpus", str(corpus),
               "--model", str(small_model_path()), "--modes", "summaries", "--outputs", str(kept)]
    result = subprocess.run(command + ["--repeats", "2"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    summaries = json.loads(result.stdout)["summaries"]
    assert [run["n_batch"] for run in summaries["runs"]] == [512, 256]
    for run in summaries["runs"]:
        assert run["structure"]["files"] == 2 and run["fact_sheets"]["calls"] == 2 and run["wall_seconds"] > 0
        assert len(list((kept / f"n_batch-{run['n_batch']}").glob("*.enriched.json"))) == 2
    facts = [run["fact_sheets"]["facts_stated"] for run in summaries["runs"]]
    assert summaries["spread"]["facts_stated"] == {"min": min(facts), "mean": sum(facts) / 2, "max": max(facts)}
    assert set(summaries["spread"]) >= {"caller_right", "contradicting_calls", "null_summaries", "fields_null"}
    refused = subprocess.run(command + ["--repeats", "0"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "--repeats 0: give 1 or more" in refused.stderr
    refused = subprocess.run(command + ["--repeats", "6"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "model.n_batch 512 halved 5 times falls below 32" in refused.stderr
    from daemon.cpus import write_tuned

    assert write_config(tmp_path / "spool", {"workers": {"count": "auto", "threads": "auto"}}) == config
    write_tuned(tmp_path / "spool" / "state", {"workers": 1, "threads": 1, "n_batch": 128})
    refused = subprocess.run(command + ["--repeats", "2"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "--repeats varies model.n_batch" in refused.stderr
