"""A real etcd cluster on loopback for the ownership tests and bench.cluster.

Members listen on free ports of 127.0.0.1 with data dirs under a temporary
directory; they are started as child processes and stopped by their PIDs
(``stop``). ``ETCD`` is the binary, None when etcd is not installed (tests skip
with that reason; ``make test`` installs Debian's ``etcd-server`` where it can).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Final, final

ETCD: Final = shutil.which("etcd")
MISSING: Final = "etcd is not on PATH (Debian: apt-get install etcd-server; `make test` does it as root)"


def cluster_section(
    endpoints: list[str],
    *,
    name: str,
    ttl: float,
    grace: float,
    margin: float = 0.5,
    owner_id: str | None = None,
) -> str:
    """A daemon's ``[cluster]`` table on these etcd members, as the tests and benches run them
    (requests to etcd time out after 0.5 s)."""
    owner = "" if owner_id is None else f'owner_id = "{owner_id}"\n'
    return f"""
[cluster]
backend = "etcd"
name = "{name}"
{owner}[cluster.etcd]
endpoints = {json.dumps(endpoints)}
ttl = {ttl}
margin = {margin}
grace = {grace}
request_timeout = 0.5
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@final
class EtcdCluster:
    """``size`` etcd members on loopback. ``start()`` returns once they have elected a leader."""

    def __init__(self, root: Path, size: int = 3, *, heartbeat_ms: int = 50, election_ms: int = 500) -> None:
        if ETCD is None:
            raise RuntimeError(MISSING)
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.names = [f"m{i}" for i in range(size)]
        self.client_ports = [free_port() for _ in range(size)]
        self.peer_ports = [free_port() for _ in range(size)]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * size
        self._timing = ["--heartbeat-interval", str(heartbeat_ms), "--election-timeout", str(election_ms)]

    @property
    def endpoints(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.client_ports]

    def _command(self, i: int) -> list[str]:
        assert ETCD is not None
        cluster = ",".join(
            f"{name}=http://127.0.0.1:{port}" for name, port in zip(self.names, self.peer_ports, strict=True)
        )
        return [
            ETCD,
            "--name", self.names[i],
            "--data-dir", str(self.root / self.names[i]),
            "--listen-client-urls", self.endpoints[i],
            "--advertise-client-urls", self.endpoints[i],
            "--listen-peer-urls", f"http://127.0.0.1:{self.peer_ports[i]}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.peer_ports[i]}",
            "--initial-cluster", cluster,
            "--initial-cluster-state", "new",
            "--initial-cluster-token", f"wadispatch-test-{os.getpid()}-{self.peer_ports[0]}",
            "--log-level", "error",
            *self._timing,
        ]  # fmt: skip

    def start(self, timeout: float = 20.0, attempts: int = 3) -> None:
        """Start every member; on ports another process took meanwhile (free_port is only a guess
        while other suites run), again on fresh ports and data dirs."""
        for attempt in range(attempts):
            for i in range(len(self.names)):
                self.start_member(i)
            try:
                self.wait_healthy(timeout)
                return
            except RuntimeError:
                self.stop()
                if attempt == attempts - 1:
                    raise
                self.client_ports = [free_port() for _ in self.names]
                self.peer_ports = [free_port() for _ in self.names]
                self.root = self.root.with_name(f"{self.root.name}-{attempt + 1}")
                self.root.mkdir(parents=True, exist_ok=True)

    def start_member(self, i: int) -> None:
        log = (self.root / f"{self.names[i]}.log").open("ab")
        self.procs[i] = subprocess.Popen(self._command(i), stdout=log, stderr=log)
        log.close()

    def stop_member(self, i: int, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[i]
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)
            proc.wait(timeout=10)
        self.procs[i] = None

    def stop(self) -> None:
        for i in range(len(self.names)):
            self.stop_member(i)

    def status(self, i: int, timeout: float = 1.0) -> dict[str, object] | None:
        """The member's /v3/maintenance/status answer (None: it does not answer)."""
        req = urllib.request.Request(self.endpoints[i] + "/v3/maintenance/status", data=b"{}", method="POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                answer: dict[str, object] = json.loads(resp.read())
                return answer
        except (OSError, urllib.error.URLError, ValueError):
            return None

    def leader(self) -> int | None:
        """The index of the member that is leader now, if the running members agree on one."""
        for i, proc in enumerate(self.procs):
            if proc is None:
                continue
            status = self.status(i)
            if status is None or status.get("leader") in (None, "0"):
                continue
            for j in range(len(self.names)):
                other = self.status(j) if self.procs[j] is not None else None
                header = other.get("header") if other else None
                if isinstance(header, dict) and header.get("member_id") == status["leader"]:
                    return j
        return None

    def wait_healthy(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.leader() is not None:
                return
            if any(proc is not None and proc.poll() is not None for proc in self.procs):
                break  # a member exited: its port was taken, most likely
            time.sleep(0.1)
        logs = " | ".join((self.root / f"{n}.log").read_text()[-500:] for n in self.names)
        raise RuntimeError(f"etcd cluster not healthy after {timeout:g} s: {logs}")


@contextlib.contextmanager
def running_etcd(root: Path) -> Iterator[EtcdCluster]:
    """A 3-member cluster under ``root``, healthy, stopped on exit."""
    cluster = EtcdCluster(root)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
