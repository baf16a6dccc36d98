"""Commands that measure: `enrichd bench`, `enrichd tune`, `enrichd calibrate`."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from daemon.commands.common import EXIT_CONFIG, EXIT_OK, loaded_config
from daemon.config import Config


def cmd_bench(args: argparse.Namespace) -> int:
    from daemon.model_store import model_path
    from daemon.tools.bench import MODES, run_bench
    from daemon.tools.harness import Outputs

    unknown = set(args.modes.split(",")) - set(MODES)
    if unknown:
        print(f"enrichd bench: unknown mode(s) {', '.join(sorted(unknown))}; choose from {', '.join(MODES)}", file=sys.stderr)
        return EXIT_CONFIG
    config = loaded_config(args)
    problem = repeats_problem(args.repeats, config)
    if problem:
        print(f"enrichd bench: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    model = Path(args.model).resolve() if args.model else model_path(config)
    # a bench stopped with SIGTERM stops what it started (the daemon under test, its workers, redis-server, a
    # llama-server) on its way out: left running, they would take the CPUs of whatever is measured next
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if args.correction_model is not None:
        config.enrichment.correction.model = Path(args.correction_model).resolve() if args.correction_model else None
    report = run_bench(config, Path(args.corpus), model, args.limit, args.modes.split(","),
                       progress=lambda line: print(line, file=sys.stderr, flush=True),
                       seeds=tuple(int(s) for s in args.seeds.split(",") if s), injection_rate=args.injection_rate,
                       labels=Path(args.labels) if args.labels else None,
                       llama_server=Path(args.llama_server) if args.llama_server else None,
                       shapes=[int(n) for n in args.shapes.split(",")] if args.shapes else None,
                       keep=Outputs(Path(args.outputs) if args.outputs else None,
                                    Path(args.reference) if args.reference else None), repeats=args.repeats)
    text = json.dumps(report, indent=2, ensure_ascii=False) + "\n"
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    print(text, end="")
    return EXIT_OK


def repeats_problem(repeats: int, config: Config) -> str | None:
    """Why `--repeats` cannot run as asked: a count below 1 or one that halves n_batch too far, or a tuned split
    whose n_batch would stand in for the halved ones."""
    from daemon.cpus import TUNED_FILE, read_tuned
    from daemon.tools.bench import MIN_N_BATCH

    if repeats < 1:
        return f"--repeats {repeats}: give 1 or more"
    if config.model.n_batch >> (repeats - 1) < MIN_N_BATCH:
        return (f"--repeats {repeats}: model.n_batch {config.model.n_batch} halved {repeats - 1} times falls below "
                f"{MIN_N_BATCH}")
    if repeats > 1 and config.workers.count == config.workers.threads == "auto" and read_tuned(config.paths.state):
        return (f"--repeats varies model.n_batch, which the tuned split in {config.paths.state / TUNED_FILE} fixes "
                "under `workers: auto`: set workers.count and workers.threads in the bench's config")
    return None


def cmd_tune(args: argparse.Namespace) -> int:
    from daemon.cpus import write_tuned
    from daemon.model_store import model_path
    from daemon.tools.tune import run_tune

    config = loaded_config(args)
    model = Path(args.model).resolve() if args.model else model_path(config)
    rows = run_tune(config, Path(args.corpus), model, args.limit,
                    progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(f"{'workers':>7} {'threads':>7} {'n_batch':>7} {'transcripts/hour':>16} {'wall s':>8}")
    for row in rows:
        print(f"{row['workers']:>7} {row['threads']:>7} {row['n_batch']:>7} {row['transcripts_per_hour']:>16} {row['wall_seconds']:>8}")
    if args.write:
        print(f"best written to {write_tuned(config.paths.state, rows[0])}")
    return EXIT_OK


def _agreement(title: str, results: list[dict[str, Any]], labels: list[int | None], cuts: tuple[float, ...]) -> None:
    """Each call's label beside its rounded and its calibrated score, then how often each agrees with the labels
    and how much of the set its most common score takes."""
    from daemon.satisfaction import score_of

    calibrated = [score_of(r["expected"], cuts) for r in results]
    print(title)
    print(f"{'file':40} {'label':>7} {'expected':>8} {'rounded':>7} {'calibrated':>10}")
    for r, score in zip(results, calibrated):
        print(f"{r['file'][:40]:40} {r['label']:>7} {r['expected']:>8} {r['score']:>7} {score:>10}")
    for name, scores in (("rounded", [r["score"] for r in results]), ("calibrated", calibrated)):
        agree = sum(score == label for score, label in zip(scores, labels))
        common, count = Counter(scores).most_common(1)[0]
        print(f"  {name}: agrees with the label in {agree}/{len(results)}; most common score {common} "
              f"in {count}/{len(results)}")


def cmd_calibrate(args: argparse.Namespace) -> int:
    from daemon.calibration import fit_thresholds, read_calls, read_labels, satisfaction_fit, write_thresholds
    from daemon.cpus import available_cpus
    from daemon.engine import load_llama
    from daemon.model_store import describe_model

    config = loaded_config(args)
    corpus = Path(args.corpus) if args.corpus else None
    calls = read_labels(Path(args.labels), corpus)
    held_out = read_labels(Path(args.check), corpus) if args.check else []
    engine = load_llama(config, len(available_cpus()))
    progress = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    results = read_calls(config, engine, calls, progress=progress)
    checked = read_calls(config, engine, held_out, progress=progress)
    labels = [call.level for call in calls]
    cuts = fit_thresholds([(r["expected"], label) for r, label in zip(results, labels)])
    _agreement(f"fitted on {args.labels}", results, labels, cuts)
    if held_out:
        _agreement(f"checked on {args.check} (not fitted on)", checked, [call.level for call in held_out], cuts)
    model_sha256 = describe_model(config).sha256
    print(f"thresholds {', '.join(map(str, cuts))}, fitted for {satisfaction_fit(model_sha256, config.enrichment)} "
          "(this model and satisfaction question)")
    if args.write:
        written = write_thresholds(config.paths.state, cuts, len(calls), model_sha256, config.enrichment)
        print(f"thresholds written to {written}")
    return EXIT_OK
