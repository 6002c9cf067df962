"""A stand-in for `vllm serve`, for the tests of mmbench's vLLM lifecycle (tests/unit/test_vllm_server.py).

Run through mmbench's launcher exactly as the real one is; FAKE_VLLM says how it behaves:
`serve` (answers /health 200 and a /metrics text), `never-ready` (answers /health 503 forever),
`exit` (fails before it listens, with an error on stderr). It starts one child process, as vLLM
starts its engine core, and writes every pid it owns to FAKE_VLLM_PIDS. Standard library only.
"""

from __future__ import annotations

import http.server
import os
import subprocess
import sys

METRICS = """# HELP vllm:mm_cache_queries_total Multi-modal cache queries.
# TYPE vllm:mm_cache_queries_total counter
vllm:mm_cache_queries_total{engine="0",model_name="m"} 12.0
# HELP vllm:mm_cache_hits_total Multi-modal cache hits.
# TYPE vllm:mm_cache_hits_total counter
vllm:mm_cache_hits_total{engine="0",model_name="m"} 5.0
"""


def main() -> None:
    args = sys.argv[1:]
    mode = os.environ.get("FAKE_VLLM", "serve")
    if mode == "exit":
        print("ValueError: the fake vLLM refuses to serve this model", file=sys.stderr)
        sys.exit(1)
    port = int(args[args.index("--port") + 1])
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    with open(os.environ["FAKE_VLLM_PIDS"], "w") as f:
        f.write(f"{os.getpid()} {child.pid}\n")
    health = 200 if mode == "serve" else 503

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = (health, b"") if self.path == "/health" else (200, METRICS.encode())
            self.send_response(status)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
