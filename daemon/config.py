"""Configuration: YAML into typed dataclasses, every key validated, unknown keys refused."""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from daemon.errors import ConfigError
from daemon.formats.limits import InputLimits
from daemon.formats.registry import EXTENSIONS
from daemon.secrets import yaml_problem

CONFIG_ENV = "ENRICHD_CONFIG"
PATHS_ENV_PREFIX = "ENRICHD_PATHS_"


def _field(default: Any, minimum: float | None = None, maximum: float | None = None) -> Any:
    """A field with bounds the validator checks; mutable defaults are copied per instance."""
    bounds = {"min": minimum, "max": maximum}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=bounds)
    return field(default=default, metadata=bounds)


@dataclass
class PathsConfig:
    inbox: Path = Path("var/inbox")
    processing: Path = Path("var/processing")
    outbox: Path = Path("var/outbox")
    failed: Path = Path("var/failed")
    archive: Path = Path("var/archive")
    state: Path = Path("var/state")


@dataclass
class QueueConfig:
    settle_seconds: float = _field(2.0, 0)
    rescan_seconds: float = _field(30.0, 0.1)
    polling: bool = False
    recursive: bool = False
    on_success: Literal["archive", "delete"] = "archive"
    max_attempts: int = _field(3, 1)
    backoff_seconds: float = _field(5.0, 0)
    extensions: list[str] = _field(list(EXTENSIONS))  # every registered format's (formats/__init__.py)
    ignore: list[str] = _field([])
    max_bytes: int = _field(InputLimits.max_bytes, 1)
    max_segments: int = _field(InputLimits.max_segments, 1)
    max_segment_chars: int = _field(InputLimits.max_segment_chars, 1)
    max_seconds: float = _field(InputLimits.max_seconds, 1)
    max_depth: int = _field(16, 1, 1000)

    @property
    def limits(self) -> InputLimits:
        return InputLimits(self.max_bytes, self.max_segments, self.max_segment_chars, self.max_seconds)


@dataclass
class WorkersConfig:
    backend: Literal["local", "celery"] = "local"
    count: int | Literal["auto"] = _field("auto", 1)
    threads: int | Literal["auto"] = _field("auto", 1)
    job_timeout_seconds: float = _field(3600.0, 1)
    load_timeout_seconds: float = _field(600.0, 1)
    max_jobs_per_worker: int = _field(0, 0)
    drain_seconds: float = _field(60.0, 0)
    heartbeat_seconds: float = _field(5.0, 0.1)
    lend_cpus: bool = True


@dataclass
class CeleryConfig:
    broker_url: str = "redis://127.0.0.1:6379/0"
    result_backend: str | None = None
    credentials_file: Path | None = None
    # for rediss:// URLs: the CA that signed the broker's certificate (None: the system's), and this host's own
    # certificate and key where the broker asks clients for one (tls-auth-clients yes)
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    queue: str = "enrichd"
    visibility_timeout_seconds: float = _field(7200.0, 1)
    republish_seconds: float = _field(300.0, 1)


@dataclass
class ModelConfig:
    path: Path | None = None
    models_dir: Path | None = None
    n_ctx: int = _field(4096, 256)
    n_batch: int = _field(512, 8)
    flash_attn: bool = True
    use_mmap: bool = True
    lookup_tokens: int = _field(24, 0, 64)


@dataclass
class CorrectionConfig:
    enabled: bool = True
    mode: Literal["score", "rewrite", "both"] = "score"
    model: Path | None = None
    score_tokens: int = _field(4, 0, 256)
    prune_nats: float | None = _field(4.0, 0)
    chunk_tokens: int = _field(256, 1)
    score_batch: bool = True
    confusion_files: list[str] = _field([])
    margins: dict[str, float] = _field({}, 0)
    first_token_margin: float | None = 0.0
    batch_tokens: int = _field(400, 16)
    min_similarity: float = _field(0.6, 0, 1)
    min_length_ratio: float = _field(0.5, 0)
    max_length_ratio: float = _field(1.6, 1)
    skip_confidence: float | None = _field(None, 0, 1)
    surprise_threshold: float | None = _field(None, 0)
    temperature: float = _field(0.0, 0, 2)

    @property
    def scorer_path(self) -> Path | None:
        """The scorer's own model, when scoring runs and one is configured."""
        return self.model if self.enabled and self.mode != "rewrite" else None


@dataclass
class TaskSettings:
    temperature: float = _field(0.3, 0, 2)
    max_tokens: int = _field(128, 1)


@dataclass
class MetadataConfig:
    enabled: bool = True
    summary_max_words: int = _field(80, 10)
    repeat_penalty: float = _field(1.1, 1, 2)
    transcript_first: bool = True
    title: TaskSettings = field(default_factory=lambda: TaskSettings(0.3, 32))
    summary: TaskSettings = field(default_factory=lambda: TaskSettings(0.0, 220))
    satisfaction: TaskSettings = field(default_factory=lambda: TaskSettings(0.0, 64))
    bullets: TaskSettings = field(default_factory=lambda: TaskSettings(0.0, 220))


@dataclass
class EnrichmentConfig:
    language: Literal["auto", "fr", "en"] = "auto"
    correction: CorrectionConfig = field(default_factory=CorrectionConfig)
    metadata: MetadataConfig = field(default_factory=MetadataConfig)
    prompts: dict[str, str] = _field({})


@dataclass
class CacheConfig:
    enabled: bool = True
    max_entries: int = _field(200_000, 1)
    max_mb: float = _field(512.0, 1)
    ttl_days: float | None = _field(None, 0)
    evict_seconds: float = _field(300.0, 1)


@dataclass
class OutputConfig:
    markdown: bool = False


@dataclass
class MetricsConfig:
    enabled: bool = True
    file: Path | None = None
    listen: str | None = None


@dataclass
class LoggingConfig:
    level: Literal["TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR"] = "INFO"
    json: bool = False
    file: Path | None = None
    rotation: str = "50 MB"
    retention: str = "14 days"
    throughput_seconds: float = _field(60.0, 1)


@dataclass
class Config:
    paths: PathsConfig = field(default_factory=PathsConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    workers: WorkersConfig = field(default_factory=WorkersConfig)
    celery: CeleryConfig = field(default_factory=CeleryConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    enrichment: EnrichmentConfig = field(default_factory=EnrichmentConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    source: Path | None = field(default=None, metadata={"internal": True})

    @property
    def models_dir(self) -> Path:
        return self.model.models_dir or self.paths.state / "models"


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " or ".join(repr(v) for v in typing.get_args(tp))
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        return " or ".join(_type_name(t) for t in typing.get_args(tp))
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, key: str, meta: dict[str, Any], problems: list[str]) -> Any:
    """Coerce one YAML value to the declared type, or record why it cannot be."""
    origin = typing.get_origin(tp)
    if isinstance(tp, types.UnionType) or origin is typing.Union:
        for option in typing.get_args(tp):
            attempt: list[str] = []
            result = _convert(value, option, key, meta, attempt)
            if not attempt:
                return result
        problems.append(f"{key}: got {value!r}, expected {_type_name(tp)}")
        return None
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        problems.append(f"{key}: got {value!r}, expected {_type_name(tp)}")
        return None
    if tp is type(None):
        if value is None:
            return None
        problems.append(f"{key}: expected null")
        return None
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            problems.append(f"{key}: expected a mapping, got {value!r}")
            return tp()
        return _build(tp, value, key, problems)
    if origin is list:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            problems.append(f"{key}: expected a list of strings, got {value!r}")
            return []
        return list(value)
    if origin is dict:
        value_type = typing.get_args(tp)[1]
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            problems.append(f"{key}: expected a mapping of {_type_name(value_type)}, got {value!r}")
            return {}
        return {k: _convert(v, value_type, f"{key}.{k}", meta, problems) for k, v in value.items()}
    if tp is Path:
        if not isinstance(value, str) or not value:
            problems.append(f"{key}: expected a path, got {value!r}")
            return None
        return Path(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        problems.append(f"{key}: expected true or false, got {value!r}")
        return None
    if tp in (int, float):
        ok = isinstance(value, int) and not isinstance(value, bool) or (tp is float and isinstance(value, float))
        if not ok:
            problems.append(f"{key}: got {value!r}, expected {_type_name(tp)}")
            return None
        low, high = meta.get("min"), meta.get("max")
        if low is not None and value < low or high is not None and value > high:
            allowed = f">= {low}" if high is None else f"between {low} and {high}"
            problems.append(f"{key}: got {value!r}, expected a number {allowed}")
        return tp(value)
    if tp is str:
        if isinstance(value, str):
            return value
        problems.append(f"{key}: expected a string, got {value!r}")
        return None
    raise TypeError(f"unsupported config type {tp!r} for {key}")


def _build(cls: type, data: dict[str, Any], prefix: str, problems: list[str]) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    for unknown in sorted(set(data) - set(fields)):
        problems.append(f"{prefix}{'.' if prefix else ''}{unknown}: unknown key (allowed: {', '.join(fields)})")
    values = {}
    for name, f in fields.items():
        if name in data:
            key = f"{prefix}.{name}" if prefix else name
            values[name] = _convert(data[name], hints[name], key, dict(f.metadata), problems)
    return cls(**values)


def _resolve(path: Path | None, base: Path) -> Path | None:
    return None if path is None else (path if path.is_absolute() else base / path)


def parse_config(data: Any, source: str = "<config>", base: Path | None = None) -> Config:
    """Validate a loaded YAML document. `base` anchors relative paths (the config file's folder)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, [f"top level: expected a mapping, got {type(data).__name__}"])
    data = dict(data)
    if data.get("workers") == "auto":
        data["workers"] = {"count": "auto", "threads": "auto"}
    problems: list[str] = []
    config: Config = _build(Config, data, "", problems)
    if problems:
        raise ConfigError(source, problems)
    for name in (f.name for f in dataclasses.fields(PathsConfig)):
        override = os.environ.get(PATHS_ENV_PREFIX + name.upper())
        if override:
            setattr(config.paths, name, Path(override))
    base = base or Path.cwd()
    for name in (f.name for f in dataclasses.fields(PathsConfig)):
        setattr(config.paths, name, _resolve(getattr(config.paths, name), base))
    config.model.path = _resolve(config.model.path, base)
    config.model.models_dir = _resolve(config.model.models_dir, base)
    config.enrichment.correction.model = _resolve(config.enrichment.correction.model, base)
    config.logging.file = _resolve(config.logging.file, base)
    config.metrics.file = _resolve(config.metrics.file, base)
    for key in ("credentials_file", "tls_ca_file", "tls_cert_file", "tls_key_file"):
        setattr(config.celery, key, _resolve(getattr(config.celery, key), base))
    return config


def config_path(explicit: str | os.PathLike[str] | None) -> Path | None:
    chosen = explicit or os.environ.get(CONFIG_ENV)
    return Path(chosen) if chosen else None


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Load the config named on the command line, else $ENRICHD_CONFIG, else built-in defaults."""
    chosen = config_path(path)
    if chosen is None:
        return parse_config({}, "<defaults>")
    try:
        text = chosen.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(chosen), [f"cannot read: {exc.strerror}"]) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(str(chosen), [yaml_problem(exc)]) from None
    config = parse_config(data, str(chosen), chosen.resolve().parent)
    config.source = chosen
    return config


def config_to_dict(config: Config) -> dict[str, Any]:
    """Plain data, for printing (`check-config`) and for writing a configuration file (`enrichd bench`)."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, list):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(config)
