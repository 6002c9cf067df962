"""`mmbench engine`: the embedded engine served on its own, for `--engine-url` (or any client).

Unlike the per-point engine (mmbench.world.engine.__main__), it lives until it is told to stop
(Ctrl-C or SIGTERM: uvicorn's own handlers, which answer the requests in flight first), keeps its
cache and counters across every client and point that uses it, and may bind another address than
127.0.0.1 when asked (the caller warns about that).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable

import uvicorn

from mmbench.errors import MmbenchError
from mmbench.world.engine.__main__ import BACKLOG, _server_config
from mmbench.world.engine.app import EngineConfig, create_app


def is_loopback(host: str) -> bool:
    """Whether every address `host` resolves to is a loopback one (a name that does not resolve is not)."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return False
    return all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: a free one); a one-line error where it cannot."""
    try:
        family = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)[0][0]
        return socket.create_server((host, port), family=family, backlog=BACKLOG)
    except OSError as exc:
        raise MmbenchError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(config: EngineConfig, host: str, port: int, on_listening: Callable[[str], None]) -> None:
    """Serve the engine on host:port until SIGINT or SIGTERM; `on_listening` gets its URL once the
    socket listens (a request made then waits in the backlog until the server accepts it)."""
    sock = listen(host, port)
    server = uvicorn.Server(_server_config(create_app(config)))
    server.config.load()
    on_listening(url_of(sock))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
