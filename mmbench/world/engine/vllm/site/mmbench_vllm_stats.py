"""An ASGI middleware mmbench adds to a vLLM API server (`--middleware mmbench_vllm_stats.Counter`):
what the server received, counted on its side.

vLLM's /metrics counts requests and multimodal cache queries but no request bytes, and with
`--api-server-count N` each API server process answers part of the requests. So every process
counts, for POST /inference/v1/generate, the requests, the body bytes its ASGI server handed it, and
the answers by status, and after each answer writes its totals to `<MMBENCH_VLLM_STATS_DIR>/<pid>.json`
(atomically: a temp file, then a rename); mmbench sums the files. This runs inside vLLM's interpreter:
the standard library only.
"""

from __future__ import annotations

import json
import os
from typing import Any

GENERATE_PATH = "/inference/v1/generate"


class Counter:
    def __init__(self, app: Any) -> None:
        self.app = app
        self.directory = os.environ.get("MMBENCH_VLLM_STATS_DIR")
        self.totals: dict[str, Any] = {"requests": 0, "bytes_received": 0, "status_counts": {}}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "http" or scope.get("path") != GENERATE_PATH or self.directory is None:
            await self.app(scope, receive, send)
            return
        received = 0
        status = 0

        async def counting_receive() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            if message.get("type") == "http.request":
                received += len(message.get("body", b""))
            return message

        async def status_send(message: dict[str, Any]) -> None:
            nonlocal status
            if message.get("type") == "http.response.start":
                status = int(message.get("status", 0))
            await send(message)

        try:
            await self.app(scope, counting_receive, status_send)
        finally:
            self._count(received, status)

    def _count(self, received: int, status: int) -> None:
        t = self.totals
        t["requests"] += 1
        t["bytes_received"] += received
        key = str(status or "none")
        t["status_counts"][key] = t["status_counts"].get(key, 0) + 1
        path = os.path.join(self.directory, f"{os.getpid()}.json")
        tmp = path + ".tmp"
        try:
            with open(tmp, "w") as f:
                json.dump(t, f)
            os.replace(tmp, path)
        except OSError:
            pass  # the directory is gone (mmbench stopped): nothing to report to
