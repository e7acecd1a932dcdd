"""systemd's side of sd_notify for tests: what the daemon tells NOTIFY_SOCKET."""

from __future__ import annotations

import socket


class FakeSystemd:
    """The receiving end of NOTIFY_SOCKET: a bound AF_UNIX datagram socket."""

    def __init__(self, address: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.setblocking(False)

    def messages(self) -> list[dict[str, str]]:
        out = []
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return out
            out.append(dict(line.split("=", 1) for line in data.decode().splitlines()))

    def close(self) -> None:
        self.sock.close()
