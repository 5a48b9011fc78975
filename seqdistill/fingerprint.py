"""Fingerprints: what a stage's output was made from, so `seqdistill run` reuses it instead of redoing it.

A stage records, beside its output (generate's and eval's manifest, filter's report, train's training
report), `fingerprint`: the settings that shape the result (its config section without the keys that only
change how it runs: workers, concurrency, retries, budgets, output paths), the identity of each input file
(size, mtime and content hash: an input rewritten with the same bytes is unchanged), the identity of a local
model's weights, and seqdistill's version. `run` compares it with the recipe's and says why it redoes a
stage: "settings changed (epochs 2 -> 3)", "input kept.jsonl changed", "no finished output".

Limits: a hub model id is identified by its name (a new revision behind the same name is not seen); the
weights of a local model by name, size and mtime (`models.model_identity`), not their bytes; code changes
within one seqdistill version are not seen.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from seqdistill import __version__
from seqdistill.models import model_identity

# keys that change how a stage runs, not what it produces (or that are recorded as input identities)
OPERATIONAL = {
    "output", "input", "workers", "concurrency", "timeout", "max_retries", "backoff_base", "backoff_max",
    "adaptive_concurrency", "requests_per_minute", "tokens_per_minute", "server_cooldown", "max_requests",
    "max_output_tokens", "max_cost", "price_input_per_m", "price_output_per_m", "pilot_prompts",
    "allow_mixed_output", "shutdown_timeout", "http_client", "api_key_env", "base_url", "batch_size",
    "tensor_parallel_size", "logging_steps", "save_steps", "gradient_checkpointing",
}  # fmt: skip
# keys whose value is a file: recorded by identity (content), not by path
FILE_KEYS = {"input", "prompts.source", "prompts.template", "prompts.teacher_template", "prompts.teacher_examples"}
CHUNK = 1 << 20


def file_identity(path: str | Path) -> dict[str, Any] | None:
    """{size, mtime_ns, sha256} of a file; None when it does not exist (a hub name, a dataset dir)."""
    path = Path(path)
    if not path.is_file():
        return None
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": _sha256(path)}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}: the dotted keys `--set` takes and messages name."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@dataclass
class Fingerprint:
    """A stage's settings, its inputs' identities and the version that made an output."""

    settings: dict[str, Any]
    inputs: dict[str, dict[str, Any] | None]
    version: str = __version__

    def to_dict(self) -> dict[str, Any]:
        return {"settings": self.settings, "inputs": self.inputs, "version": self.version, "digest": self.digest}

    @property
    def digest(self) -> str:
        body = json.dumps([self.settings, self.inputs_key(), self.version], sort_keys=True, default=str)
        return hashlib.sha256(body.encode()).hexdigest()[:16]

    def inputs_key(self) -> dict[str, str | None]:
        return {k: (v or {}).get("sha256") for k, v in self.inputs.items()}

    def changes(self, recorded: dict[str, Any] | None, paths: dict[str, str] | None = None) -> list[str]:
        """Why an output recorded with `recorded` is not this one: [] when it is (nothing to redo).

        `paths`: the current path of each input, so an input with the same size and mtime is not re-hashed.
        """
        if not isinstance(recorded, dict) or "settings" not in recorded:
            return ["no fingerprint recorded (an older seqdistill, or an unfinished stage)"]
        found = []
        if recorded.get("version") != self.version:
            found.append(f"seqdistill version {recorded.get('version')} -> {self.version}")
        old, new = flatten(recorded.get("settings") or {}), flatten(self.settings)
        diffs = [f"{k} {_show(old.get(k))} -> {_show(new.get(k))}" for k in sorted(old.keys() | new.keys())
                 if old.get(k) != new.get(k)]  # fmt: skip
        if diffs:
            found.append(f"settings changed ({', '.join(diffs[:3])}{', …' if len(diffs) > 3 else ''})")
        for key, ident in self.inputs.items():
            before = (recorded.get("inputs") or {}).get(key)
            if (before or {}).get("sha256") != (ident or {}).get("sha256"):
                name = Path((paths or {}).get(key, key)).name
                found.append(f"input {name} changed" if before and ident else f"input {name} is new")
        return found


def _show(value: Any) -> str:
    text = "unset" if value is None else json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= 40 else text[:39] + "…"


def of_config(cfg: BaseModel, models: tuple[str, ...] = ("model",)) -> Fingerprint:
    """The fingerprint of a stage config: its result-shaping settings, its input files and local models."""
    data = flatten(cfg.model_dump(mode="json"))
    inputs: dict[str, dict[str, Any] | None] = {}
    for key in FILE_KEYS & data.keys():
        value = data[key]
        if isinstance(value, str) and Path(value).is_file():
            inputs[key] = file_identity(value)
            data.pop(key)  # the file by its content: a copy elsewhere is the same input
    if data.get("backend") == "auto":  # what auto picks on this machine: a run with it equals one naming it
        from seqdistill.backends import resolve_backend

        data["backend"] = resolve_backend("auto")
    for key in models:
        if isinstance(data.get(key), str):
            data[key] = model_identity(data[key])  # a retrained local model is another model
    settings = {k: v for k, v in data.items() if k.split(".")[-1] not in OPERATIONAL or k in FILE_KEYS}
    return Fingerprint(settings=_nest(settings), inputs=inputs)


def recorded_config(cfg: BaseModel) -> dict[str, Any]:
    """The keys of a stage config that differ from their defaults, as JSON: what `run --print-recipe` writes back.

    Secrets are never config values (API keys are read from the env var `api_key_env` names).
    """
    return cfg.model_dump(mode="json", exclude_defaults=True)


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return out


def input_paths(cfg: BaseModel) -> dict[str, str]:
    """The current path of each file-valued key of `cfg` (for messages naming an input)."""
    data = flatten(cfg.model_dump(mode="json"))
    return {k: data[k] for k in FILE_KEYS & data.keys() if isinstance(data[k], str)}


@dataclass
class Decision:
    """Whether `run` reuses a stage's output, and why (for the log line)."""

    reuse: bool
    why: str


def decide(cfg: BaseModel, recorded: dict[str, Any] | None, forced: bool = False, complete: bool = True) -> Decision:
    """Reuse the output `recorded` describes (a manifest or report, None when there is none) for `cfg`?"""
    if forced:
        return Decision(False, "forced (--force)")
    if recorded is None:
        return Decision(False, "no finished output")
    changes = of_config(cfg).changes(recorded.get("fingerprint"), input_paths(cfg))
    if changes:
        return Decision(False, "; ".join(changes))
    if not complete:
        return Decision(False, "unfinished")
    return Decision(True, "unchanged")
