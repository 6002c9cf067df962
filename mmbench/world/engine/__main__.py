"""Engine process entry: bind 127.0.0.1 on an ephemeral port, print it as one JSON line, serve.

Started and stopped by mmbench.world.engine.process; not meant to be run by hand, though
`python -m mmbench.world.engine --help` works.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys

import uvicorn

from mmbench.lifecycle import die_with_parent
from mmbench.world.engine.app import EngineConfig, create_app


def main(argv: list[str] | None = None) -> None:
    defaults = EngineConfig()
    parser = argparse.ArgumentParser(prog="python -m mmbench.world.engine")
    parser.add_argument("--cache-bytes", type=int, default=defaults.cache_bytes)
    parser.add_argument("--max-body-bytes", type=int, default=defaults.max_body_bytes)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--parent-pid", type=int, default=0)
    args = parser.parse_args(argv)
    die_with_parent(args.parent_pid or None)
    config = EngineConfig(
        cache_bytes=args.cache_bytes,
        max_body_bytes=args.max_body_bytes,
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
