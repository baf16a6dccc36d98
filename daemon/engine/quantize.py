"""`enrichd model quantize`: a lighter copy of a GGUF, written by llama.cpp's own quantiser.

The default model is already quantised (Q4_K_M): making Q4_0 or Q3_K of it requantises quantised
weights, which loses more than quantising from f16 would. The input is never written to; the copy
appears under its final name only once it has loaded and answered.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from loguru import logger

from daemon.engine.llama import LlamaEngine
from daemon.engine.runtime import LlamaSettings, file_types, quantize_file
from daemon.errors import ModelError


@dataclass(frozen=True)
class Quantized:
    path: Path
    kind: str
    size: int
    seconds: float
    answer: str


def quantize(source: Path, target: Path, kind: str, threads: int) -> Quantized:
    """Write `target` as `kind`; it is checked by loading it and asking it one question before it is renamed in."""
    types, kind = file_types(), kind.upper()
    if kind not in types:
        raise ModelError(f"unknown quantisation type {kind!r}; this llama.cpp writes {', '.join(sorted(types))}")
    if not source.is_file():
        raise ModelError(f"{source}: not found, nothing to quantise")
    if target.exists() or target.resolve() == source.resolve():
        raise ModelError(f"{target} already exists: choose another output (no file is ever overwritten)")
    tmp = target.with_name(f".{target.name}.tmp")
    started = time.perf_counter()
    try:
        code = quantize_file(source, tmp, types[kind], threads)
        if code != 0 or not tmp.is_file():
            raise ModelError(f"llama.cpp could not quantise {source} to {kind} (code {code}; llama.cpp's log above "
                             f"says why, e.g. IQ types need an importance matrix)")
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        engine = LlamaEngine(tmp, LlamaSettings(n_ctx=512, n_threads=threads))
        try:
            answer = engine.chat("Answer in one word.", "What colour is the sky on a clear day?", max_tokens=8,
                                 temperature=0.0).text.strip()
        finally:
            engine.close()
        if not answer:
            raise ModelError(f"the {kind} copy of {source} loads but answers nothing: not kept")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    seconds, size = time.perf_counter() - started, target.stat().st_size
    logger.info("quantised {} to {} as {} in {:.0f} s ({:,} bytes)", source.name, kind, target, seconds, size)
    return Quantized(target, kind, size, seconds, answer)
