"""`enrichd status`: what the running daemon is doing, rendered from its status file."""

from __future__ import annotations

import argparse
import json
import time

from daemon.commands.common import EXIT_FAILED, EXIT_OK
from daemon.config import load_config


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
