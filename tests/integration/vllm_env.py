"""Which python runs vLLM for the opt-in integration tests (SEQDISTILL_VLLM_PYTHON; `make test-vllm` sets it).

Decided at import, i.e. at collection, so a plain `pytest` run skips before any fixture starts anything.
"""

from __future__ import annotations

import os
import subprocess

ENV_VAR = "SEQDISTILL_VLLM_PYTHON"


def _vllm_python() -> tuple[str | None, str]:
    """(the python to run the server with, or None; why not)."""
    python = os.environ.get(ENV_VAR)
    if not python:
        return None, f"needs a real vLLM server: run `make test-vllm` (or set {ENV_VAR} to a python with vllm)"
    try:
        found = subprocess.run(
            [python, "-c", "import importlib.util, sys; sys.exit(importlib.util.find_spec('vllm') is None)"],
            capture_output=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"{ENV_VAR}={python} cannot run ({e}): run `make test-vllm` to build .venv-vllm"
    if found.returncode != 0:
        return None, f"{ENV_VAR}={python} cannot import vllm: run `make test-vllm` to build .venv-vllm"
    return python, ""


VLLM_PYTHON, SKIP_REASON = _vllm_python()
