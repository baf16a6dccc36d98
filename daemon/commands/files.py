"""Commands on single files: `enrichd parse`, `enrichd enrich` (one file through the pipeline, no daemon), `enrichd requeue`."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from loguru import logger

from daemon import __version__
from daemon.commands.common import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, loaded_config
from daemon.config import Config
from daemon.errors import TranscriptError
from daemon.transcript import Transcript


def _parse_or_say(file: str, config: Config) -> Transcript | None:
    """The file as a transcript, or None after saying on stderr what is wrong with it."""
    from daemon.formats import parse

    try:
        return parse(file, config.queue.limits)
    except TranscriptError as exc:
        print(f"error: {exc}", file=sys.stderr)
    except OSError as exc:
        print(f"error: {file}: cannot read: {exc.strerror or exc}", file=sys.stderr)
    return None


def cmd_parse(args: argparse.Namespace) -> int:
    from daemon.output import build_output

    config = loaded_config(args)
    transcript = _parse_or_say(args.file, config)
    if transcript is None:
        return EXIT_FAILED
    output = build_output(transcript, None, None, {"daemon_version": __version__, "model": None,
                                                   "prompt_version": None, "parameters": {}}, {}, {})
    json.dump(output, sys.stdout, ensure_ascii=False, indent=2)
    print()
    return EXIT_OK


def cmd_enrich(args: argparse.Namespace) -> int:
    from daemon.cpus import available_cpus
    from daemon.engine import EngineFactory, load_llama
    from daemon.model_store import describe_model
    from daemon.output import render_markdown, write_atomic
    from daemon.pipeline import enrich
    from daemon.worker_setup import open_context

    config = loaded_config(args)
    if args.no_cache:
        config.cache.enabled = False
    started = time.perf_counter()
    transcript = _parse_or_say(args.file, config)
    if transcript is None:
        return EXIT_FAILED
    parse_seconds = time.perf_counter() - started
    cpus = tuple(available_cpus())
    context, _ = open_context(config, EngineFactory(describe_model, load_llama), cpus[:args.threads or None], lazy=True)
    output = enrich(transcript, context, parse_seconds, progress=lambda text: print(f"\r{text}   ", end="", file=sys.stderr))
    print(file=sys.stderr)
    text = json.dumps(output, ensure_ascii=False, indent=2) + "\n"
    if args.output:
        write_atomic(Path(args.output), text)
        if config.output.markdown:
            write_atomic(Path(args.output).with_suffix(".md"), render_markdown(output))
    else:
        sys.stdout.write(text)
    stats = output["stats"]
    logger.info("enriched {} in {:.1f}s: {} model calls, {} generated tokens, segments {}",
                transcript.source_file, output["timings"]["total"], stats["model_calls"],
                stats["tokens"]["generated"], stats.get("segments", {}))
    return EXIT_OK


def cmd_requeue(args: argparse.Namespace) -> int:
    from daemon.spool import FileQueue, Spool

    config = loaded_config(args)
    if not args.all and not args.names:
        print("name files to requeue, or --all", file=sys.stderr)
        return EXIT_CONFIG
    spool = Spool.from_config(config)
    spool.prepare()
    file_queue = FileQueue.open(spool, config.queue)
    moved = file_queue.requeue(None if args.all else args.names)
    file_queue.ledger.close()
    for name in moved:
        print(f"requeued {name}")
    return EXIT_OK if moved or args.all else EXIT_FAILED
