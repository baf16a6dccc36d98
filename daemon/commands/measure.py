"""Commands that measure: `enrichd bench`, `enrichd tune`, `enrichd calibrate`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from daemon.commands.common import EXIT_CONFIG, EXIT_OK, loaded_config


def cmd_bench(args: argparse.Namespace) -> int:
    from daemon.model_store import model_path
    from daemon.tools.bench import MODES, run_bench
    from daemon.tools.harness import Outputs

    unknown = set(args.modes.split(",")) - set(MODES)
    if unknown:
        print(f"enrichd bench: unknown mode(s) {', '.join(sorted(unknown))}; choose from {', '.join(MODES)}", file=sys.stderr)
        return EXIT_CONFIG
    config = loaded_config(args)
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


def cmd_calibrate(args: argparse.Namespace) -> int:
    from daemon.calibration import fit_thresholds, read_calls, read_labels, write_thresholds
    from daemon.cpus import available_cpus
    from daemon.engine import load_llama
    from daemon.satisfaction import score_of
    from daemon.model_store import describe_model

    config = loaded_config(args)
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
