"""Every declared metadata field (daemon/fields.py) goes the whole way: made by the writer or derived after it,
present in the document, named and required by the output schema, shown in the Markdown view."""

from __future__ import annotations

from daemon.fields import FIELDS, WRITER_FIELDS
from daemon.formats import parse
from daemon.metadata import TASKS
from daemon.output import render_markdown
from daemon.pipeline import EnrichContext, enrich
from daemon.prompts import prompt_set
from daemon.schema import output_schema, schema_errors
from tests.fakes import FakeEngine, describe_fake
from tests.test_daemon import TRANSCRIPT


def test_every_declared_field_is_in_the_document_the_schema_and_the_markdown(spool):
    _, config = spool()
    source = config.paths.inbox / "call.txt"
    source.write_text(TRANSCRIPT.format(marker="Bonjour,"))
    engine = FakeEngine()
    document = enrich(parse(source), EnrichContext(config, describe_fake(config), lambda: engine))
    assert schema_errors(document) == []

    metadata = document["metadata"]
    schema = output_schema()["properties"]["metadata"]
    assert list(metadata) == [f.name for f in FIELDS]
    assert set(schema["properties"]) == set(schema["required"]) == {f.name for f in FIELDS}
    markdown = render_markdown(document)
    for declared in FIELDS:
        value = metadata[declared.name]
        assert value is not None, (declared.name, document["stats"]["metadata"])
        shown = [line for line in declared.markdown(value) if line.strip()]
        if declared.name == "title":
            assert markdown.startswith(f"# {value}\n")
        else:
            assert shown and all(line in markdown for line in shown), declared.name
    assert TASKS == tuple(f.value_key for f in WRITER_FIELDS)
    for declared in WRITER_FIELDS:  # each task the writer runs has its prompt and its settings
        assert all(getattr(prompt_set(config.enrichment, language), declared.value_key) for language in ("fr", "en"))
        assert getattr(config.enrichment.metadata, declared.value_key).max_tokens > 0
        assert (declared.validate is None) == (declared.made == "read")
