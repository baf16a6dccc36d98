"""No password printed anywhere: check-config, a broken credentials or config file, a failed connection."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.config import parse_config
from daemon.errors import ConfigError
from daemon.secrets import read_credentials, redacted, scrubbed

ROOT = Path(__file__).resolve().parent.parent
SECRET = "s3cr@t:pa/ss"
KEY = {"ENRICHD_CELERY_SIGNING_KEY": "k" * 40}


@pytest.mark.parametrize("url, shown", [
    ("redis://:hunter2@10.0.0.10:6379/0", "redis://:***@10.0.0.10:6379/0"),
    ("rediss://enrichd:hunter2@broker:6380/1", "rediss://enrichd:***@broker:6380/1"),
    ("redis://user:p@ss@word@broker:6379/0", "redis://user:***@broker:6379/0"),
    ("redis://hunter2@broker/0", "redis://***@broker/0"),
    ("redis://broker:6379/0?password=hunter2&db=1", "redis://broker:6379/0?password=***&db=1"),
    ("redis+socket:///run/redis.sock?password=hunter2", "redis+socket:///run/redis.sock?password=***"),
    ("redis://broker:6379/0", "redis://broker:6379/0"),
])
def test_redacted_masks_every_form_of_password(url, shown):
    assert redacted(url) == shown


def test_scrubbed_masks_the_secret_where_a_library_quotes_it():
    urls = ["redis://:hunter2@broker:6379/0", "redis://broker/1?password=other"]
    assert scrubbed("Error connecting to redis://:hunter2@broker (other)", urls) == \
        "Error connecting to redis://:***@broker (***)"


def enrichd(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daemon", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **KEY, **(env or {})})


def test_check_config_prints_no_password(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(f"workers: {{backend: celery}}\ncelery:\n  broker_url: 'redis://:{SECRET}@10.0.0.10:6379/0'\n"
                      f"  result_backend: 'redis://10.0.0.10:6379/1?password={SECRET}'\n")
    result = enrichd("check-config", str(config))
    assert result.returncode == 0, result.stderr
    assert "redis://:***@10.0.0.10:6379/0" in result.stdout
    assert "password=***" in result.stdout
    assert SECRET not in result.stdout + result.stderr


def credentials(tmp_path: Path, text: str, mode: int) -> Path:
    path = tmp_path / "broker.yaml"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_credentials_readable_by_others_are_refused(tmp_path):
    path = credentials(tmp_path, f"broker_url: redis://:{SECRET}@host:6379/0\n", 0o640)
    with pytest.raises(ConfigError) as raised:
        read_credentials(path)
    assert "mode 0640" in str(raised.value) and "chmod 0600" in str(raised.value)
    assert SECRET not in str(raised.value)
    path.chmod(0o600)
    assert read_credentials(path)["broker_url"] == f"redis://:{SECRET}@host:6379/0"


def test_credentials_of_another_owner_are_refused(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("changing a file's owner needs root")
    path = credentials(tmp_path, "broker_url: redis://:x@host/0\n", 0o600)
    os.chown(path, 65534, 65534)
    with pytest.raises(ConfigError, match="owned by uid 65534"):
        read_credentials(path)


@pytest.mark.parametrize("broken, problem", [("config", "invalid YAML at line"),
                                             ("credentials", "celery.credentials_file: invalid YAML at line")])
def test_a_yaml_error_is_placed_but_never_quoted(tmp_path, broken, problem):
    """The config file or the credentials file, broken on the line after the password."""
    line = f"broker_url: redis://:{SECRET}@host:6379/0\n"
    path = credentials(tmp_path, line + ("  : [\n" if broken == "credentials" else ""), 0o600)
    config = tmp_path / "config.yaml"
    config.write_text(f"workers: {{backend: celery}}\ncelery: {{credentials_file: {path}}}\n"
                      + (f"{line}  bad: [unclosed\n" if broken == "config" else ""))
    result = enrichd("check-config", str(config))
    assert result.returncode == 2 and problem in result.stderr
    assert SECRET not in result.stdout + result.stderr


def test_the_signing_key_is_required_and_is_not_the_broker_password(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(f"workers: {{backend: celery}}\ncelery: {{broker_url: 'redis://:{'p' * 40}@host:6379/0'}}\n")
    missing = enrichd("check-config", str(config), env={"ENRICHD_CELERY_SIGNING_KEY": ""})
    assert missing.returncode == 2 and "celery.signing_key: missing" in missing.stderr
    same = enrichd("check-config", str(config), env={"ENRICHD_CELERY_SIGNING_KEY": "p" * 40})
    assert same.returncode == 2 and "is the broker's password" in same.stderr and "p" * 40 not in same.stderr


def test_a_failed_connection_prints_no_password(tmp_path, monkeypatch):
    """The supervisor's pool against a broker that is not there: its error names the broker, redacted."""
    import socket

    from daemon.errors import PoolUnavailable
    from daemon.messages import Job
    from daemon.model_store import ModelInfo
    from daemon.remote.pool import CeleryPool

    monkeypatch.setenv(*next(iter(KEY.items())))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = parse_config({"workers": {"backend": "celery"},
                           "celery": {"broker_url": f"redis://:{SECRET}@127.0.0.1:{port}/0"}}, base=tmp_path)
    pool = CeleryPool(config, ModelInfo("model", "model.gguf", "0" * 64), "v1")
    with pytest.raises(PoolUnavailable) as raised:
        pool.submit(0, Job("call.txt", 1, sha256="0" * 64), b"bonjour\n")
    assert f"redis://:***@127.0.0.1:{port}/0" in str(raised.value)
    assert SECRET not in str(raised.value)
