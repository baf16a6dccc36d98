"""A Celery child's job and what the supervisor accepts back from it, without a broker (the fake engine)."""

from __future__ import annotations

import base64
import hashlib

from daemon.messages import Job, TaskMessage, to_wire
from daemon.calibration import write_thresholds
from daemon.prompts import LANGUAGES
from daemon.output import not_of_job
from daemon.pipeline import EnrichContext, in_force
from daemon.remote.tasks import Child, run_task
from tests.fakes import describe_fake, load_fake
from tests.test_daemon import TRANSCRIPT


def _message(name: str, data: bytes, identity: str, version: str) -> dict:
    return to_wire(TaskMessage(Job(name, 1, sha256=hashlib.sha256(data).hexdigest()), base64.b64encode(data).decode("ascii"),
                               identity, version))


def test_a_child_started_before_calibrate_enriches_with_the_thresholds_of_the_version_it_is_sent(spool):
    """The job names the prompt version of the supervisor, which read thresholds the child had not: the child reads
    them again, and its document says that version (it used to pass the check and score with its old cuts)."""
    _, config = spool()
    model = describe_fake(config)
    engine = load_fake(config, 1)
    context = EnrichContext(config, model, lambda: engine)
    child = Child(config, 0, (0,), None, context, model.identity)  # type: ignore[arg-type]
    before = context.prompt_version
    write_thresholds(config.paths.state, (1.5, 2.5, 3.5, 3.9), 12, model.sha256, config.enrichment)
    thresholds, after = in_force(config, model)
    assert thresholds == {language: (1.5, 2.5, 3.5, 3.9) for language in LANGUAGES} and after != before
    data = TRANSCRIPT.format(marker="").encode()
    result = run_task(child, _message("call.txt", data, model.identity, after), lambda text: None)
    assert result["kind"] == "done", result
    assert result["document"]["provenance"]["prompt_version"] == after == context.prompt_version
    assert context.thresholds == thresholds
    assert not_of_job(result["document"], "call.txt", hashlib.sha256(data).hexdigest(), model.identity, after) is None
    refused = run_task(child, _message("call.txt", data, model.identity, "0" * 12), lambda text: None)
    assert refused["kind"] == "failed" and f"with prompts {after}" in refused["error"]["message"]


def test_a_document_that_is_not_its_job_s_output_is_named_for_what_differs():
    document = {"source": {"file": "a.srt", "sha256": "ab" * 32},
                "provenance": {"model": {"sha256": "m" * 64, "scorer": {"sha256": "s" * 64}}, "prompt_version": "v1"}}
    identity = f"{'m' * 64}+{'s' * 64}"
    assert not_of_job(document, "a.srt", "ab" * 32, identity, "v1") is None
    assert "other bytes" in not_of_job(document, "a.srt", "cd" * 32, identity, "v1")
    assert "another file ('a.srt')" in not_of_job(document, "b.srt", "ab" * 32, identity, "v1")
    assert "another model" in not_of_job(document, "a.srt", "ab" * 32, "m" * 64, "v1")
    assert "other prompts" in not_of_job(document, "a.srt", "ab" * 32, identity, "v2")
    assert "other bytes" in not_of_job({"source": "x", "provenance": None}, "a.srt", "ab" * 32, identity, "v1")


def test_a_celery_worker_host_takes_the_tuned_split_as_the_local_pool_does(spool):
    """`enrichd tune --write` on a worker host: its `enrichd worker` plans its children and n_batch from it (it
    used to ignore the file); a configured split still wins over it."""
    from daemon.cpus import WorkerPlan, available_cpus, host_plan, write_tuned

    cpus = available_cpus()
    _, config = spool({"workers": {"count": "auto", "threads": "auto"}})
    write_tuned(config.paths.state, {"workers": 1, "threads": len(cpus), "n_batch": 256})
    assert host_plan(config, cpus) == WorkerPlan(1, len(cpus)) and config.model.n_batch == 256
    _, fixed = spool({"workers": {"count": 1, "threads": 1}})
    write_tuned(fixed.paths.state, {"workers": 1, "threads": len(cpus), "n_batch": 256})
    assert host_plan(fixed, cpus) == WorkerPlan(1, 1) and fixed.model.n_batch != 256


def test_what_crosses_the_broker_round_trips_through_json_and_a_newer_worker_s_field_is_a_clear_error():
    import json

    import pytest

    from daemon.engine import EngineStats
    from daemon.errors import WireError
    from daemon.messages import Done, ErrorInfo, Failed, JobSummary, from_wire

    job = Job("2026/call é.srt", 2, 1764600000.5, "ab" * 32)
    summary = JobSummary(("2026/call é.enriched.json",), {"total": 1.5}, 3, {"kept": 3}, EngineStats(), "miss",
                         host="h1", pid=42)
    messages = [TaskMessage(job, "ZGF0YQ==", "m" * 64, "v1"), Done(0, job, summary, {"id": "x"}),
                Failed(0, job, ErrorInfo("TranscriptError", "bad timing", None, 7), permanent=True)]
    for message in messages:
        assert from_wire(json.loads(json.dumps(to_wire(message)))) == message
    newer = {**to_wire(messages[1]), "record": {}}
    with pytest.raises(WireError, match="unknown field.s. record .sent by a newer enrichd"):
        from_wire(newer)
    deeper = to_wire(messages[2])
    deeper["error"]["hint"] = "x"
    with pytest.raises(WireError, match="ErrorInfo with unknown field.s. hint"):
        from_wire(deeper)
    for bad, problem in (({**to_wire(messages[0]), "version": 1}, "wire version '1'"), ([], "not an object"),
                         ({"kind": "lost", "version": 2}, "unknown kind 'lost'"),
                         ({"kind": "done", "version": 2, "worker": 0}, "wrong shape")):
        with pytest.raises(WireError, match=problem):
            from_wire(bad)
