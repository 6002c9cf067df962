"""Engine process entry: bind 127.0.0.1, print the port as one JSON line, serve.

With `--port 0` the port is chosen here: an ephemeral one, or, when the engine restarts itself
(`--restart-every N`), a free one below the kernel's ephemeral range, so that the client's own
connections (and a connect to the port while no engine listens, which Linux may turn into a
self-connection) can never hold the port when the next incarnation binds it. With
`--restart-every N` the process exits after answering its N-th request; before exiting it writes
its final stats to `--stats-file` (atomically), which is how its supervisor
(mmbench.world.engine.process) keeps counting across incarnations. With `--standby` it imports
and builds everything, then waits for a line on stdin before it binds: the supervisor keeps the
next incarnation ready that way, so that a restart costs no interpreter start-up (an EOF instead
of the line ends it quietly).

The socket listens before the port is reported, so a connection made right after the handshake
waits in the backlog until the server accepts it: the readiness check needs one request, not a
polling loop.

Started and stopped by mmbench.world.engine.process (as a fresh interpreter, or forked from a fork
server that imported this module: see mmbench.launch); not meant to be run by hand, though
`python -m mmbench.world.engine --help` works.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import random
import socket
import sys
import time
from pathlib import Path

import uvicorn

from mmbench.launch.lifecycle import die_with_parent, set_process_name
from mmbench.world.engine.app import Engine, EngineConfig, create_app

HOST = "127.0.0.1"
BIND_RETRY_S = 10.0  # an explicit port may still be held for a moment by the previous incarnation
LOW_PORT_MIN = 10_000
GRACEFUL_SHUTDOWN_S = 30  # requests in flight when the engine exits get this long to be answered
BACKLOG = 2048  # uvicorn's default
PROCESS_NAME = "mmbench-engine"


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def _socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    return sock


def bind(port: int, stable: bool) -> socket.socket:
    """A socket bound to HOST: on `port`, or (port 0) on a free port, below the ephemeral range
    when `stable` (the port must be bindable again by the next incarnation)."""
    if port == 0 and stable:
        low = _ephemeral_low()
        if low - 1 > LOW_PORT_MIN:
            candidates = random.sample(range(LOW_PORT_MIN, low), k=min(200, low - LOW_PORT_MIN))
            for candidate in candidates:
                sock = _socket()
                try:
                    sock.bind((HOST, candidate))
                    return sock
                except OSError:
                    sock.close()
    deadline = time.monotonic() + (BIND_RETRY_S if port else 0.0)
    while True:
        sock = _socket()
        try:
            sock.bind((HOST, port))
            return sock
        except OSError as exc:
            sock.close()
            if exc.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _write_stats(path: str, engine: Engine) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(engine.stats().encode())
    os.replace(tmp, path)


def _server_config(app: object) -> uvicorn.Config:
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        log_level="warning",
        access_log=False,
        http="httptools",
        lifespan="off",
        timeout_keep_alive=600,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )


def prewarm() -> None:
    """For a fork server (mmbench.launch): build an app and load the server's configuration once
    (uvicorn imports its protocol classes then), so that a forked engine only binds and serves."""
    _server_config(create_app(EngineConfig())).load()


def main(argv: list[str] | None = None) -> None:
    defaults = EngineConfig()
    parser = argparse.ArgumentParser(prog="python -m mmbench.world.engine")
    parser.add_argument("--port", type=int, default=0, help="0: choose one")
    parser.add_argument("--cache-bytes", type=int, default=defaults.cache_bytes)
    parser.add_argument("--max-body-bytes", type=int, default=defaults.max_body_bytes)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--evict-rate", type=float, default=0.0)
    parser.add_argument("--error-rate", type=float, default=0.0)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--restart-every", type=int, default=0, help="exit after N requests (0: never)")
    parser.add_argument("--stats-file", default=None, help="write the final stats here on exit")
    parser.add_argument("--standby", action="store_true", help="bind only after a line on stdin")
    parser.add_argument("--parent-pid", type=int, default=0)
    parser.add_argument("--dtype", default="float32", help="dtype raw media are preprocessed to")
    parser.add_argument(
        "--allowed-local-media-path", default=None, help="file:// media URLs are read only below it"
    )
    args = parser.parse_args(argv)
    set_process_name(PROCESS_NAME)
    die_with_parent(args.parent_pid or None)
    config = EngineConfig(
        cache_bytes=args.cache_bytes,
        max_body_bytes=args.max_body_bytes,
        seed=args.seed,
        evict_rate=args.evict_rate,
        error_rate=args.error_rate,
        delay_ms=args.delay_ms,
        restart_every=args.restart_every,
        allowed_media_dir=args.allowed_local_media_path,
        dtype=args.dtype,
    )
    app = create_app(config)
    engine: Engine = app.state.engine
    server = uvicorn.Server(_server_config(app))

    def quota_reached() -> None:
        server.should_exit = True  # graceful: requests in flight are answered first
        # ...and nothing after them: uvicorn sees should_exit only at its next 0.1 s tick and would
        # serve its keep-alive connections until then, so a fast client could finish its point on
        # this incarnation. Stop accepting and end idle connections now, as its shutdown will.
        for listener in getattr(server, "servers", []):
            listener.close()
        for connection in list(server.server_state.connections):
            connection.shutdown()

    engine.on_quota = quota_reached
    server.config.load()  # imports the protocol classes now, not after the go of --standby
    if args.standby and not sys.stdin.readline():
        return  # the supervisor no longer needs this incarnation
    sock = bind(args.port, stable=config.restart_every > 0)
    sock.listen(BACKLOG)
    port = sock.getsockname()[1]
    sys.stdout.write(json.dumps({"port": port, "pid": os.getpid()}) + "\n")
    sys.stdout.flush()
    # Nothing else goes to the handshake pipe (nobody reads it after the first line).
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    server.run(sockets=[sock])
    if args.stats_file:
        _write_stats(args.stats_file, engine)
    if config.restart_every > 0:
        sys.stderr.flush()
        os._exit(0)  # the next incarnation waits for this port: skip the interpreter's teardown


if __name__ == "__main__":
    main()
    sys.stderr.flush()
    os._exit(0)  # stopped and its stats written: skip the interpreter's teardown
