import difflib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.formats.limits import InputLimits
from daemon.errors import TranscriptError
from daemon.formats import parse
from daemon.output import build_output
from daemon.schema import schema_errors
from tests.conftest import ROOT, SIMSAMU

PROVENANCE = {"daemon_version": "test", "model": None, "prompt_version": None, "parameters": {}}


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def texts(path: Path) -> list[str]:
    return [s.text for s in parse(path).segments]


@pytest.mark.parametrize("json_file", sorted(SIMSAMU.glob("*.json")), ids=lambda p: p.stem)
def test_simsamu_srt_and_rev_json_agree(json_file):
    rev, srt = parse(json_file), parse(json_file.with_suffix(".srt"))
    assert rev.format == "rev" and srt.format == "srt"
    assert len(rev.segments) == len(srt.segments)
    words = [re.findall(r"\w+", " ".join(s.text for s in t.segments).lower()) for t in (rev, srt)]
    assert difflib.SequenceMatcher(None, *words, autojunk=False).ratio() >= 0.99
    assert all(s.speaker for s in rev.segments)
    output = build_output(rev, None, None, PROVENANCE, {}, {})
    assert schema_errors(output) == []


def test_whisper_json(tmp_path):
    doc = {"text": " Bonjour. Oui.", "language": "fr", "segments": [
        {"id": 0, "start": 0.0, "end": 1.5, "text": " Bonjour.", "avg_logprob": -0.1, "no_speech_prob": 0.01},
        {"id": 1, "start": 1.5, "end": 2.0, "text": " Oui.", "avg_logprob": -0.5, "no_speech_prob": 0.02,
         "words": [{"word": " Oui.", "start": 1.5, "end": 2.0, "probability": 0.8}]}]}
    t = parse(write(tmp_path, "w.json", json.dumps(doc)))
    assert (t.format, t.language, [s.text for s in t.segments]) == ("whisper", "fr", ["Bonjour.", "Oui."])
    assert t.segments[0].confidence == pytest.approx(0.9048, abs=1e-3)
    assert t.segments[1].confidence == pytest.approx(0.8)


def test_whisper_timestamped_word_confidence(tmp_path):
    doc = {"text": "a", "segments": [{"id": 0, "start": 0, "end": 1, "text": "salut toi",
                                      "words": [{"text": "salut", "confidence": 0.5}, {"text": "toi", "confidence": 0.7}]}]}
    assert parse(write(tmp_path, "t.json", json.dumps(doc))).segments[0].confidence == pytest.approx(0.6)


def test_whisperx_json_with_speakers_and_untimed_words(tmp_path):
    doc = {"segments": [
        {"start": 0.2, "end": 1.0, "text": " Allô ?", "speaker": "SPEAKER_00",
         "words": [{"word": "Allô", "start": 0.2, "end": 0.6, "score": 0.9, "speaker": "SPEAKER_00"}, {"word": "?", "score": 0.5}]},
        {"start": 1.1, "end": 2.0, "text": " Oui bonjour", "speaker": "SPEAKER_01", "words": [{"word": "Oui", "score": 0.7}]}]}
    t = parse(write(tmp_path, "x.json", json.dumps(doc)))
    assert t.format == "whisperx"
    assert [(s.speaker, s.text) for s in t.segments] == [("SPEAKER_00", "Allô ?"), ("SPEAKER_01", "Oui bonjour")]
    assert t.segments[0].confidence == pytest.approx(0.7)


def test_whisper_cpp_json(tmp_path):
    doc = {"result": {"language": "fr"}, "transcription": [
        {"timestamps": {"from": "00:00:00,000", "to": "00:00:02,500"}, "offsets": {"from": 0, "to": 2500}, "text": " Bonjour"},
        {"timestamps": {"from": "00:00:02,500", "to": "00:01:03,040"}, "text": " au revoir", "speaker": "1",
         "tokens": [{"text": "[_BEG_]", "p": 0.1}, {"text": " au", "p": 0.9}, {"text": " revoir", "p": 0.7}]}]}
    t = parse(write(tmp_path, "c.json", json.dumps(doc)))
    assert t.format == "whisper.cpp" and t.language == "fr"
    assert [(s.start, s.end, s.text) for s in t.segments] == [(0.0, 2.5, "Bonjour"), (2.5, 63.04, "au revoir")]
    assert t.segments[1].speaker == "1" and t.segments[1].confidence == pytest.approx(0.8)


def test_aws_transcribe_grouped_into_speaker_turns(tmp_path):
    def word(text, start, end, speaker):
        return {"type": "pronunciation", "start_time": str(start), "end_time": str(end), "speaker_label": speaker,
                "alternatives": [{"confidence": "0.9", "content": text}]}
    punct = {"type": "punctuation", "alternatives": [{"confidence": "0.0", "content": "."}]}
    doc = {"results": {"language_code": "fr-FR", "items": [
        word("Bonjour", 0.1, 0.5, "spk_0"), punct, word("Oui", 0.7, 0.9, "spk_1"), word("merci", 1.0, 1.3, "spk_1"), punct]}}
    t = parse(write(tmp_path, "a.json", json.dumps(doc)))
    assert t.format == "aws" and t.language == "fr"
    assert [(s.speaker, s.text, s.start, s.end) for s in t.segments] == [
        ("spk_0", "Bonjour.", 0.1, 0.5), ("spk_1", "Oui merci.", 0.7, 1.3)]


def test_aws_speakers_from_speaker_labels_section(tmp_path):
    items = [{"type": "pronunciation", "start_time": "0.1", "end_time": "0.4", "alternatives": [{"confidence": "1", "content": "Allô"}]},
             {"type": "pronunciation", "start_time": "0.6", "end_time": "0.9", "alternatives": [{"confidence": "1", "content": "Oui"}]}]
    labels = {"segments": [{"speaker_label": "spk_0", "items": [{"start_time": "0.1", "speaker_label": "spk_0"}]},
                           {"speaker_label": "spk_1", "items": [{"start_time": "0.6", "speaker_label": "spk_1"}]}]}
    t = parse(write(tmp_path, "a.json", json.dumps({"results": {"items": items, "speaker_labels": labels}})))
    assert [s.speaker for s in t.segments] == ["spk_0", "spk_1"]


def test_srt_quirks(tmp_path):
    body = ("7\r\n00:00:02,429 --> 00:00:07,569 1\r\n[SPEAKER_00]: bonjour\r\nmadame\r\n\r\n"
            "8\r\n00:00:08,000 --> 00:00:09,100\r\nAgent: oui\r\n\r\n\r\n"
            "9\r\n01:00:10,000 --> 01:00:11,500\r\nsans locuteur")
    t = parse(write(tmp_path, "s.srt", body))
    assert [(s.start, s.end, s.speaker, s.text) for s in t.segments] == [
        (2.429, 7.569, "SPEAKER_00", "bonjour madame"), (8.0, 9.1, "Agent", "oui"), (3610.0, 3611.5, None, "sans locuteur")]


def test_vtt(tmp_path):
    body = ("WEBVTT - appel\nKind: captions\n\nNOTE ceci est un commentaire\nsur deux lignes\n\nSTYLE\n::cue { color: red }\n\n"
            "intro\n00:01.000 --> 00:02.500 align:start position:10%\n<v Marie Dupont>Bonjour &amp; bienvenue</v>\n\n"
            "00:00:03.000 --> 00:00:04.000\n<v.loud Paul>Merci <i>beaucoup</i>\n")
    t = parse(write(tmp_path, "v.vtt", body))
    assert t.format == "vtt"
    assert [(s.start, s.end, s.speaker, s.text) for s in t.segments] == [
        (1.0, 2.5, "Marie Dupont", "Bonjour & bienvenue"), (3.0, 4.0, "Paul", "Merci beaucoup")]


def test_plain_text_with_and_without_speakers(tmp_path):
    t = parse(write(tmp_path, "p.txt", "Agent: Bonjour, que puis-je faire ?\n\nje voudrais un rendez-vous\rClient: merci\n"))
    assert t.format == "text"
    assert [(s.speaker, s.text) for s in t.segments] == [
        ("Agent", "Bonjour, que puis-je faire ?"), (None, "je voudrais un rendez-vous"), ("Client", "merci")]


@pytest.mark.parametrize("encoded", [
    "Agent: déjà vu, ça marche\n".encode("utf-8"),
    b"\xef\xbb\xbf" + "Agent: déjà vu, ça marche\n".encode("utf-8"),
    "Agent: déjà vu, ça marche\n".encode("utf-16"),
    "Agent: déjà vu, ça marche\n".encode("cp1252"),
], ids=["utf8", "utf8-bom", "utf16-bom", "cp1252"])
def test_text_encodings(tmp_path, encoded):
    assert texts(write(tmp_path, "e.txt", encoded)) == ["déjà vu, ça marche"]


def test_content_wins_over_extension(tmp_path):
    doc = {"segments": [{"id": 0, "start": 0, "end": 1, "text": "bonjour"}]}
    assert parse(write(tmp_path, "mislabelled.txt", json.dumps(doc))).format == "whisper"
    assert parse(write(tmp_path, "subs.txt", "1\n00:00:01,000 --> 00:00:02,000\nsalut\n")).format == "srt"


@pytest.mark.parametrize("name, content, fmt, problem", [
    ("empty.json", b"", None, "empty file"),
    ("blank.srt", b"  \n\t\n", None, "only whitespace"),
    ("broken.json", b'{"segments": [\n  {"text": }\n]}', "json", "line 2: invalid JSON"),
    ("shape.json", b'{"utterances": []}', "json", "unknown JSON shape"),
    ("garbage.srt", bytes(range(256)) * 4, None, "binary data"),
    ("nothing.json", b'{"segments": [{"start": 0, "end": 1, "text": "   "}]}', "whisper", "no non-empty segment"),
    ("bad.srt", b"1\n00:00:01,000 -> 00:00:02,000\nbonjour\n", "srt", "line 2: malformed timing line"),
    ("novtt.vtt", b"1\n00:00:01.000 --> 00:00:02.000\nbonjour\n", "vtt", "line 1: missing 'WEBVTT'"),
    ("shape2.json", b'{"monologues": [42]}', "rev", "monologues[0]: expected an object"),
])
def test_bad_input_raises_one_clear_error_and_leaves_the_file_alone(tmp_path, name, content, fmt, problem):
    path = write(tmp_path, name, content)
    with pytest.raises(TranscriptError) as info:
        parse(path)
    message = str(info.value)
    assert message.startswith(f"{name} (") and problem in message
    if fmt:
        assert f"({fmt})" in message
    assert path.read_bytes() == content


CARD = "4970 1234 5678 9012"


@pytest.mark.parametrize("name, content", [
    ("timing.srt", f"1\n00:00:01,000 -> {CARD}\nbonjour\n"),
    ("outside.srt", f"{CARD} bonjour\n\n1\n00:00:01,000 --> 00:00:02,000\nsalut\n"),
    ("aws.json", json.dumps({"results": {"items": [{"start_time": CARD, "end_time": "1.0", "type": "pronunciation",
                                                    "alternatives": [{"content": "oui"}]}]}})),
    ("cpp.json", json.dumps({"transcription": [{"timestamps": {"from": CARD, "to": "00:00:01,000"}, "text": "oui"}]})),
    ("broken.json", '{"segments": [{"text": "' + CARD + '" "x"}]}'),
])
def test_a_format_error_names_the_place_never_the_content(tmp_path, name, content):
    """A card number typed into a bad line must not reach the log or failed/'s record (message or traceback)."""
    from daemon.messages import ErrorInfo

    path = write(tmp_path, name, content.encode())
    with pytest.raises(TranscriptError) as info:
        try:
            parse(path)
        except TranscriptError as exc:
            record = ErrorInfo.of(exc)
            raise
    assert str(info.value).startswith(f"{name} (")
    assert CARD not in record.message and CARD not in record.traceback


def test_size_limit(tmp_path):
    path = write(tmp_path, "big.txt", "a b c\n" * 100)
    with pytest.raises(TranscriptError, match="over the 100-byte limit"):
        parse(path, InputLimits(max_bytes=100))


def test_parse_cli(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "daemon", "parse", str(SIMSAMU / "dj_2022_msn.srt")],
                        cwd=ROOT, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    doc = json.loads(ok.stdout)
    assert doc["metadata"] is None and {s["correction"] for s in doc["segments"]} <= {"skipped", "empty"}
    bad = subprocess.run([sys.executable, "-m", "daemon", "parse", str(write(tmp_path, "x.json", b"{"))],
                         cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 1 and "x.json (json)" in bad.stderr


def test_a_read_error_is_not_a_transcript_error_so_it_is_retried(tmp_path, monkeypatch):
    import errno
    import os

    from daemon.errors import TranscriptError
    from daemon.formats import parse

    path = tmp_path / "call.srt"
    path.write_text("1\n00:00:01,000 --> 00:00:02,000\nbonjour\n")

    def unreadable(fd, size):
        raise OSError(errno.EIO, "Input/output error")

    with monkeypatch.context() as patched:
        patched.setattr(os, "read", unreadable)
        with pytest.raises(OSError) as caught:
            parse(path)
    assert not isinstance(caught.value, TranscriptError) and caught.value.errno == errno.EIO


def test_every_registered_format_is_in_the_schema_and_its_extensions_are_taken_by_default():
    """A format is declared once (formats/registry.py): queue.extensions' default follows from the registry, and the
    output schema's format enum (a file other programs read) must name every format, or its outputs fail
    validation."""
    from daemon.config import QueueConfig
    from daemon.formats.registry import FORMATS
    from daemon.schema import output_schema

    enum = output_schema()["properties"]["source"]["properties"]["format"]["enum"]
    assert sorted(f.name for f in FORMATS) == sorted(enum), "the schema's format enum and the registry disagree"
    assert set(QueueConfig().extensions) == {extension for f in FORMATS for extension in f.extensions}
    assert [f.name for f in FORMATS if f.matches] == ["rev", "aws", "whisper.cpp", "whisperx", "whisper"]
