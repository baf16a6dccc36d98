"""Satisfaction per deployment: labelled calls, fitted thresholds, and the score the daemon then reports."""

from __future__ import annotations

import subprocess
import sys

import pytest

from daemon.calibration import read_labels
from daemon.errors import ConfigError
from daemon.calibration import (fit_thresholds, packaged_thresholds, read_thresholds, satisfaction_fit,
                                thresholds_in_force, write_thresholds)
from daemon.satisfaction import score_of
from daemon.tools.satisfaction import auc
from tests.conftest import ROOT, SIMSAMU, write_config
from tests.test_end_to_end import short_srt


def test_thresholds_give_most_calls_their_label_and_never_split_equal_expectations():
    labelled = [(1.2, 1), (1.8, 1), (2.1, 2), (2.6, 2), (3.0, 3), (3.4, 3), (3.6, 4), (4.1, 4), (4.4, 5), (4.8, 5)]
    cuts = fit_thresholds(labelled)
    assert list(cuts) == sorted(cuts) and all(score_of(e, cuts) == label for e, label in labelled)
    tied = fit_thresholds([(3.5, 1), (3.5, 5), (3.5, 5), (4.2, 5)])
    assert score_of(3.5, tied) == 5 and score_of(4.2, tied) == 5
    assert score_of(3.49, None) == 3 and score_of(3.5, None) == 4 and score_of(0.2, None) == 1
    unmatched = [(3.7, 4), (3.8, 2), (3.9, 2), (4.0, 3), (4.1, 3), (4.2, 4), (4.3, 5)]
    cuts = fit_thresholds(unmatched)
    assert [score_of(e, cuts) for e, _ in unmatched] == [2, 2, 2, 3, 3, 4, 5], "the satisfied caller no rising score " \
        "can match is scored 2, the nearest, not 1"


def test_thresholds_are_stored_for_their_model_and_question_and_a_damaged_file_is_ignored(tmp_path):
    from daemon.config import EnrichmentConfig

    enrichment = EnrichmentConfig()
    path = write_thresholds(tmp_path, (1.9, 2.8, 3.5, 4.2), 12, "a" * 64, enrichment)
    assert read_thresholds(tmp_path, "a" * 64, enrichment) == (1.9, 2.8, 3.5, 4.2)
    assert "12 labelled calls" in path.read_text()
    assert read_thresholds(tmp_path, "b" * 64, enrichment) is None
    asked_otherwise = EnrichmentConfig(prompts={"fr.satisfaction": "Note de 1 à 5 ?"})
    assert read_thresholds(tmp_path, "a" * 64, asked_otherwise) is None
    retitled = EnrichmentConfig(prompts={"fr.title": "Un titre."})
    assert read_thresholds(tmp_path, "a" * 64, retitled) == (1.9, 2.8, 3.5, 4.2)
    path.write_text("thresholds: [1.9, 2.8, 3.5, 4.2]\n")
    assert read_thresholds(tmp_path, "a" * 64, enrichment) is None, "a file from before fits were recorded"
    path.write_text(f"thresholds: [4, 3, 2, 1]\nfitted_for: {satisfaction_fit('a' * 64, enrichment)}\n")
    assert read_thresholds(tmp_path, "a" * 64, enrichment) is None


def test_the_packaged_thresholds_hold_for_the_default_model_and_question_and_yield_to_a_deployment_s_own(tmp_path):
    from daemon.config import EnrichmentConfig
    from daemon.model_store import DEFAULT_MODEL
    from daemon.prompts import LANGUAGES

    enrichment = EnrichmentConfig()
    shipped = packaged_thresholds(DEFAULT_MODEL.sha256, enrichment)
    assert "fr" in shipped, "fitted for the default model and today's satisfaction question: refit after changing either"
    assert all(len(cuts) == 4 and list(cuts) == sorted(cuts) for cuts in shipped.values())
    assert packaged_thresholds("b" * 64, enrichment) == {}
    assert packaged_thresholds(DEFAULT_MODEL.sha256, EnrichmentConfig(prompts={"fr.satisfaction": "Note ?"})) == {}
    assert thresholds_in_force(tmp_path, DEFAULT_MODEL.sha256, enrichment) == shipped
    write_thresholds(tmp_path, (1.9, 2.8, 3.5, 4.2), 12, DEFAULT_MODEL.sha256, enrichment)
    assert thresholds_in_force(tmp_path, DEFAULT_MODEL.sha256, enrichment) == {
        language: (1.9, 2.8, 3.5, 4.2) for language in LANGUAGES}
    damaged = tmp_path / "defaults.yaml"
    fit = satisfaction_fit("a" * 64, enrichment)
    damaged.write_text(f"fr: {{thresholds: [3, 2, 1, 0], fitted_for: {fit}}}\n"
                       f"en: {{thresholds: [1, 2, 3, 4], fitted_for: {fit}}}\nde: nothing\n")
    assert packaged_thresholds("a" * 64, enrichment, damaged) == {"en": (1.0, 2.0, 3.0, 4.0)}


def test_labels_are_read_with_their_files_and_bad_rows_are_named(tmp_path):
    (tmp_path / "a.txt").write_text("Client: bonjour\n")
    (tmp_path / "b.txt").write_text("Client: merci\n")
    good = tmp_path / "labels.csv"
    good.write_text("# my calls\nfile,label\na.txt,2\nb.txt,happy\n")
    calls = read_labels(good)
    assert [(c.path.name, c.level) for c in calls] == [("a.txt", 2), ("b.txt", 5)]
    bad = tmp_path / "bad.csv"
    bad.write_text("a.txt,7\nmissing.txt,1\n")
    with pytest.raises(ConfigError) as caught:
        read_labels(bad)
    assert "row 1" in str(caught.value) and "missing.txt: not found" in str(caught.value)


def test_auc_counts_pairs_ordered_right_and_ties_as_half():
    assert auc([1.0, 2.0], [3.0, 4.0]) == 1.0
    assert auc([3.0, 4.0], [1.0, 2.0]) == 0.0
    assert auc([3.0], [3.0]) == 0.5 and auc([], [1.0]) is None


def test_enrichd_calibrate_fits_checks_on_other_calls_and_the_daemon_uses_the_thresholds(tmp_path):
    from daemon.config import load_config
    from daemon.model_store import describe_model
    from daemon.pipeline import EnrichContext, prompt_version
    from daemon.prompts import LANGUAGES

    corpus = tmp_path / "calls"
    corpus.mkdir()
    for name in ("dj_2023_da.srt", "dj_mai_malaise_joyeux.srt", "reu_covid.srt", "dj_2022_nrp.srt"):
        (corpus / name).write_text(short_srt(SIMSAMU / name, 4))
    (corpus / "labels.csv").write_text("file,label\ndj_2023_da.srt,5\ndj_mai_malaise_joyeux.srt,1\nreu_covid.srt,2\n")
    (corpus / "held_out.csv").write_text("file,label\ndj_2022_nrp.srt,2\n")
    (tmp_path / "spool").mkdir()
    config_path = write_config(tmp_path / "spool", {"logging": {"level": "INFO"}})
    result = subprocess.run([sys.executable, "-m", "daemon", "calibrate", "--config", str(config_path),
                             "--labels", str(corpus / "labels.csv"), "--check", str(corpus / "held_out.csv"), "--write"],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    fitted, _, checked = result.stdout.partition("(not fitted on)")
    assert fitted.count("agrees with the label in") == 2 and "/3;" in fitted, result.stdout
    assert "dj_2022_nrp.srt" in checked and checked.count("agrees with the label in") == 2 and "/1;" in checked
    assert "thresholds written to" in result.stdout
    config = load_config(config_path)
    model = describe_model(config)
    cuts = read_thresholds(config.paths.state, model.sha256, config.enrichment)
    assert cuts is not None and len(cuts) == 4
    assert f"fitted for {satisfaction_fit(model.sha256, config.enrichment)}" in result.stdout
    context = EnrichContext(config, model, lambda: None)  # type: ignore[arg-type]
    assert context.thresholds == {language: cuts for language in LANGUAGES}
    assert context.prompt_version == prompt_version(config.enrichment, context.thresholds)
    assert context.prompt_version != prompt_version(config.enrichment)
