"""Helpers for the queue tests: streams on the shared NATS (deleted afterwards), a private
nats-server that a test may stop and restart, a throwaway PostgreSQL cluster that a test may stop
and restart (the shared one on :5432 is never touched), and a way to run the CLI.

The fixtures over these generators are in tests/queue/conftest.py.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services import IN_CI, NATS_URL, require_service

__all__ = [
    "NATS_URL",
    "Background",
    "NatsServer",
    "PgCluster",
    "cli_env",
    "delete_stream",
    "free_port",
    "happyhashtags",
    "nats_server_fixture",
    "pg_cluster_fixture",
    "require_service",
    "run_cli",
    "stream_fixture",
    "wait_for_port",
]

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"
PG_BIN = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def _missing(what: str) -> None:
    if IN_CI:
        pytest.fail(f"{what} is missing: CI must install it", pytrace=False)
    pytest.skip(f"{what} is missing")


async def _delete_stream(url: str, name: str) -> None:
    import nats

    from happyhashtags.queue.state import delete_stream

    nc = await nats.connect(url, connect_timeout=2, allow_reconnect=False)
    try:
        await delete_stream(nc.jetstream(), name)
    finally:
        await nc.close()


def delete_stream(url: str, name: str) -> None:
    """Delete a stream and its snapshot bucket, if they exist."""
    asyncio.run(_delete_stream(url, name))


def stream_fixture(nats_url: str, unique_name: str) -> Iterator[str]:
    """A stream name on the shared NATS, deleted (with its snapshots) after the test."""
    try:
        yield unique_name
    finally:
        delete_stream(nats_url, unique_name)


class NatsServer:
    """A private nats-server with JetStream on a free loopback port and its own store."""

    def __init__(self, store: Path) -> None:
        self.port = free_port()
        self.store = store
        self.url = f"nats://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert self.process is None
        self.process = subprocess.Popen(
            [NATS_SERVER, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.store)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None:
            self.process.send_signal(sig)
            self.process.wait(10)
            self.process = None


def nats_server_fixture(tmp_path: Path) -> Iterator[NatsServer]:
    """A private nats-server, not yet started (tests start, stop and restart it)."""
    if not Path(NATS_SERVER).exists():
        _missing("nats-server")
    server = NatsServer(tmp_path / "jetstream")
    try:
        yield server
    finally:
        server.stop(signal.SIGKILL)


class PgCluster:
    """A throwaway PostgreSQL cluster owned by the postgres user, on a free loopback port."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="hh-pg-"))
        shutil.chown(self.dir, "postgres")
        self.data = self.dir / "data"
        self.port = free_port()
        self.running = False

    def _pg(self, *args: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )

    def init(self) -> None:
        self._pg(
            str(PG_BIN / "initdb"),
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._pg(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.dir / "log"),
            "-w",
            "start",
        )
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        if self.running:
            self._pg(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")
            self.running = False

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def remove(self) -> None:
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


def pg_cluster_fixture() -> Iterator[PgCluster]:
    """A private PostgreSQL cluster for the whole module (initdb once), started."""
    if not (PG_BIN / "initdb").exists() or shutil.which("runuser") is None:
        _missing("PostgreSQL 15 server binaries")
    cluster = PgCluster()
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for a CLI subprocess: no HAPPYHASHTAGS_* or POSTGRES_* from outside."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HAPPYHASHTAGS_", "POSTGRES_"))}
    env["COLUMNS"] = "200"
    env.update(extra)
    return env


def happyhashtags(
    *args: str, env: dict[str, str] | None = None, **kwargs: object
) -> subprocess.Popen[bytes]:
    """Start ``python -m happyhashtags ARGS`` (stdout and stderr piped)."""
    return subprocess.Popen(
        [sys.executable, "-m", "happyhashtags", *args],
        env=env or cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kwargs,  # type: ignore[arg-type]
    )


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120.0, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m happyhashtags ARGS`` to completion."""
    result = subprocess.run(
        [sys.executable, "-m", "happyhashtags", *args],
        env=env or cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"happyhashtags {' '.join(args)} exited {result.returncode}:\n{result.stderr}"
        )
    return result


class Background:
    """A CLI subprocess whose output is collected by threads, so a test can wait for a line."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        import threading

        self.proc = happyhashtags(*args, env=env)
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._threads = [
            threading.Thread(
                target=self._collect, args=(self.proc.stdout, self.stdout), daemon=True
            ),
            threading.Thread(
                target=self._collect, args=(self.proc.stderr, self.stderr), daemon=True
            ),
        ]
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _collect(stream: object, into: list[str]) -> None:
        for raw in iter(stream.readline, b""):  # type: ignore[attr-defined]
            into.append(raw.decode(errors="replace"))

    @property
    def err(self) -> str:
        return "".join(self.stderr)

    @property
    def out(self) -> str:
        return "".join(self.stdout)

    def wait_for(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.err and text not in self.out:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{text!r} did not appear; stderr:\n{self.err}")
            time.sleep(0.02)

    def finish(self, timeout: float = 60.0) -> int:
        code = self.proc.wait(timeout)
        for thread in self._threads:
            thread.join(5)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.finish()
