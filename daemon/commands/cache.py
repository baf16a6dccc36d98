"""`enrichd cache stats|clear`: the result cache."""

from __future__ import annotations

import argparse

from daemon.commands.common import EXIT_OK, loaded_config


def cmd_cache(args: argparse.Namespace) -> int:
    from daemon import cache as result_cache
    from daemon.status import read_status

    config = loaded_config(args)
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
