"""Engine process entry: bind 127.0.0.1 on an ephemeral port, print it as one JSON line, serve.

Started and stopped by mmbench.world.engine.process; not meant to be run by hand, though
`python -m mmbench.world.engine --help` works.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import socket
import sys

import uvicorn

from mmbench.world.engine.app import EngineConfig, create_app

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Linux: get SIGTERM when the process that started us dies, so no engine is orphaned."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mmbench.world.engine")
    parser.add_argument("--cache-bytes", type=int, default=EngineConfig.cache_bytes)
    parser.add_argument("--max-body-bytes", type=int, default=EngineConfig.max_body_bytes)
    parser.add_argument("--codec", default=EngineConfig.codec)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--parent-pid", type=int, default=0)
    args = parser.parse_args(argv)
    _die_with_parent()
    if args.parent_pid and os.getppid() != args.parent_pid:
        sys.exit(1)  # the parent died before prctl took effect
    config = EngineConfig(
        cache_bytes=args.cache_bytes,
        max_body_bytes=args.max_body_bytes,
        codec=args.codec,
        seed=args.seed,
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config),
            log_level="warning",
            access_log=False,
            http="httptools",
            lifespan="off",
            timeout_keep_alive=600,
        )
    )
    sys.stdout.write(json.dumps({"port": port, "pid": os.getpid()}) + "\n")
    sys.stdout.flush()
    # Nothing else goes to the handshake pipe (nobody reads it after the first line).
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
