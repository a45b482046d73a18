"""The long crash test of the queue (``make chaos``): counts must come out exactly once.

1. Starts a private nats-server and a private PostgreSQL cluster (temporary directories, free
   loopback ports): the shared services are never touched.
2. Ingests the demo stream (``--messages`` posts, ``--posts-per-message``) with ``happyhashtags
   ingest``, killing and restarting nats-server under it once.
3. Runs two ``happyhashtags process`` chains at once on that stream, sessions on and off (two
   consumers, two databases), each killed with SIGKILL at random moments ``--kills`` times and
   restarted; PostgreSQL is restarted under them every ``--pg-every`` kills.
4. Compares each database's ``hashtag_counts`` cell for cell with an uninterrupted count of the
   same posts, and exits 1 on any difference.

    python scripts/chaos.py                            # 1,000,000 messages, 20 kills per chain
    python scripts/chaos.py --messages 200000 --kills 5 --seed 7

Needs nats-server and the PostgreSQL 15 server binaries (run as root, it uses ``runuser -u
postgres`` for them).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from happyhashtags.cli import counter_from_settings
from happyhashtags.config import load_settings
from happyhashtags.formats.x import decode_x
from happyhashtags.model import Post
from happyhashtags.sources.demo import generate_messages
from happyhashtags.storage import Store
from happyhashtags.timeutil import from_epoch

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"
STREAM = "CHAOS"


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port}")


class Nats:
    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.store = root / "nats"
        self.url = f"nats://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [
            NATS_SERVER,
            "-js",
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-sd",
            str(self.store),
        ]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


class Postgres:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="hh-chaos-pg-"))
        self.port = free_port()
        self.lock = threading.Lock()
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            shutil.chown(self.dir, "postgres")

    def _run(self, *args: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if self.as_postgres else []
        subprocess.run(
            [*prefix, *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def init(self) -> None:
        self._run(
            str(PG_BIN / "initdb"), "-D", str(self.dir / "data"), "-A", "trust", "-U", "postgres"
        )
        self.start()

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
        self._run(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(self.dir / "data"),
            "-o",
            options,
            "-l",
            str(self.dir / "log"),
            "-w",
            "start",
        )

    def stop(self, mode: str = "immediate") -> None:
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.dir / "data"), "-m", mode, "-w", "stop")

    def restart(self) -> None:
        with self.lock:
            self.stop()
            time.sleep(1.0)
            self.start()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        with Store(url=self.url(name)) as store:
            store.migrate()
        return self.url(name)

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def cli(*args: str, env: dict[str, str] | None = None, **kwargs: object) -> subprocess.Popen[bytes]:
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("HAPPYHASHTAGS_", "POSTGRES_"))
    }
    clean.update(env or {})
    command = [sys.executable, "-m", "happyhashtags", *args]
    proc: subprocess.Popen[bytes] = subprocess.Popen(command, env=clean, **kwargs)  # type: ignore[call-overload]
    return proc


@dataclass
class Chain:
    name: str
    session_gap: str
    database: str
    kills: int = 0
    positions: list[int] = field(default_factory=list)
    failure: str | None = None


def position(database: str, consumer: str) -> int:
    try:
        with Store(url=database) as store:
            checkpoint = store.read_position(consumer)
    except Exception:
        return -1
    return checkpoint.position if checkpoint else 0


def run_chain(
    chain: Chain,
    queue: str,
    end: int,
    kills: int,
    rng: random.Random,
    pg: Postgres,
    pg_every: int,
    log_dir: Path,
) -> None:
    args = [
        "process",
        "-q",
        queue,
        "--database",
        chain.database,
        "--consumer",
        chain.name,
        "--session-gap",
        chain.session_gap,
        "--flush-posts",
        "20000",
        "--snapshot-every",
        "5s",
    ]
    for attempt in range(kills):
        with (log_dir / f"{chain.name}-{attempt}.log").open("wb") as log:
            proc = cli(*args, stdout=log, stderr=log)
            # Killed at a random point of the stream still ahead, whatever the speed: after a
            # fixed 2-8 s, a process that drains the stream in seconds was killed at its end.
            # Each kill lands in its equal part of what is left for the kills still to come.
            reached = max(chain.positions[-1], 0) if chain.positions else 0
            target = reached + rng.randint(0, max(end - reached, 0) // (kills - attempt))
            deadline = time.monotonic() + 60.0
            while proc.poll() is None and time.monotonic() < deadline:
                if position(chain.database, chain.name) >= target:
                    break
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.05))  # anywhere between two commits
            if pg_every and attempt % pg_every == pg_every - 1:
                say(f"{chain.name}: restarting PostgreSQL under it")
                pg.restart()
                time.sleep(rng.uniform(0.5, 3.0))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        chain.kills += 1
        chain.positions.append(position(chain.database, chain.name))
        say(f"{chain.name}: kill {chain.kills}/{kills} at message {chain.positions[-1]:,}")
    with (log_dir / f"{chain.name}-final.log").open("wb") as log:
        proc = cli(*args, "--idle-exit", "3s", stdout=log, stderr=log)
        if proc.wait() != 0:
            chain.failure = f"the final run exited {proc.returncode} (see {log.name})"


def reference(
    messages: int, seed: int, session_gap: str
) -> dict[tuple[datetime, str], tuple[int, int]]:
    counter = counter_from_settings(load_settings({"session_gap": session_gap}))
    for line in generate_messages(messages, seed=seed):
        post = decode_x(line, time.time())
        if isinstance(post, Post):
            counter.add(post)
    return {(from_epoch(b), tag): (t, h) for (b, tag), (t, h) in counter.drain().items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000, help="demo posts to ingest")
    parser.add_argument("--posts-per-message", type=int, default=2)
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs per process chain")
    parser.add_argument(
        "--pg-every", type=int, default=7, help="restart PostgreSQL every N kills (0: never)"
    )
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--keep", action="store_true", help="keep the temporary directories")
    options = parser.parse_args()
    rng = random.Random(options.seed)
    say(f"seed {options.seed}, {options.messages:,} messages, {options.kills} kills per chain")

    root = Path(tempfile.mkdtemp(prefix="hh-chaos-"))
    nats, pg = Nats(root), Postgres()
    try:
        nats.start()
        pg.init()
        queue = f"{nats.url}/{STREAM}"

        say("ingesting, with nats-server killed and restarted once under ingest")
        env = {
            "HAPPYHASHTAGS_DEMO_COUNT": str(options.messages),
            "HAPPYHASHTAGS_DEMO_SEED": str(options.seed),
        }
        with (root / "ingest.log").open("wb") as log:
            ingest = cli(
                "ingest",
                "-s",
                "demo",
                "-q",
                queue,
                "--spool-dir",
                str(root / "spool"),
                "--posts-per-message",
                str(options.posts_per_message),
                env=env,
                stdout=log,
                stderr=log,
            )
            time.sleep(rng.uniform(1.0, 4.0))
            nats.kill()
            time.sleep(2.0)
            nats.start()
            if ingest.wait() != 0:
                say(f"ingest failed: see {root / 'ingest.log'}")
                return 1
        ingest_log = (root / "ingest.log").read_bytes()
        stored = re.search(rb"JetStream stored ([\d,]+) messages", ingest_log)
        if stored is None:
            say(f"ingest did not say how many messages it stored: see {root / 'ingest.log'}")
            return 1
        messages = int(stored.group(1).replace(b",", b""))
        say(f"ingested {options.messages:,} posts in {messages:,} messages")

        chains = [
            Chain("chaos-sessions", "30m", pg.create("chaos_sessions")),
            Chain("chaos-nosessions", "0", pg.create("chaos_nosessions")),
        ]
        threads = [
            threading.Thread(
                target=run_chain,
                args=(
                    c,
                    queue,
                    messages,
                    options.kills,
                    random.Random(rng.random()),
                    pg,
                    options.pg_every if i == 0 else 0,
                    root,
                ),
            )
            for i, c in enumerate(chains)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        ok = True
        for chain in chains:
            if chain.failure:
                say(f"{chain.name}: {chain.failure}")
                ok = False
                continue
            with Store(url=chain.database) as store:
                got = store.counts()
            expected = reference(options.messages, options.seed, chain.session_gap)
            final = position(chain.database, chain.name)
            if got == expected and final == messages:
                say(
                    f"{chain.name}: OK, {len(got):,} cells equal after {chain.kills} kills "
                    f"(at {', '.join(f'{p:,}' for p in chain.positions)})"
                )
            else:
                differing = [
                    k for k in expected.keys() | got.keys() if got.get(k) != expected.get(k)
                ]
                say(
                    f"{chain.name}: MISMATCH in {len(differing):,} cells (position {final:,}); "
                    f"e.g. {sorted(differing, key=str)[:3]}"
                )
                ok = False
        return 0 if ok else 1
    finally:
        nats.kill()
        pg.remove()
        if options.keep:
            say(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
