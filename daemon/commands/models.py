"""`enrichd model install|path|verify|extras|quantize`: the model files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from daemon.commands.common import EXIT_CONFIG, EXIT_OK, loaded_config
from daemon.config import Config


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

    config = loaded_config(args)
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
