"""export: kept samples as a dataset folder that `datasets.load_dataset(DIR)` loads, with a dataset card.

Formats (docs/export.md):
- parquet: the records as they are, `data/<split>-0000i-of-0000n.parquet` (free-form fields — `usage`,
  `teacher`, `sampling`, `meta` — as `datasets.Json` columns: their keys vary from record to record);
- jsonl: the records as they are, `data/<split>.jsonl`;
- messages: TRL's conversational `messages` (prompt + completion, a reasoning trace rendered as
  <think>…</think> as `train` renders it), with `id` and `reference`, `data/<split>.jsonl`;
- sharegpt: `conversations` of `{from, value}` turns (system / human / gpt / tool), with `id` and `reference`.
`test_size` holds out a seeded share of the prompts as a `test` split: all samples of a prompt land in
the same split, so the splits share no prompt. README.md is the dataset card (the report's provenance,
funnel and limitations, this folder's format and how to load it); its front matter names the splits' files.

The folder is built under a temporary name beside DIR and renamed into place when complete: DIR is the old
folder or the whole new one. An existing non-empty DIR is refused unless `overwrite` is set and it holds an
earlier export's card. `push_to_hub` is checked before any work (HF_HUB_OFFLINE, a token, the endpoint
reachable): without network the command stops with one line and writes nothing.

Not covered: splits other than train/test, per-split shards for Parquet beyond `ROWS_PER_SHARD` rows each,
dataset-card fields that need a human (licence, languages).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
import socket
import typing
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from seqdistill.adapters import read_input
from seqdistill.config import ExportConfig
from seqdistill.errors import BackendError, ConfigError, DataError
from seqdistill.records import Message, Sample
from seqdistill.stages import report
from seqdistill.stages.train import to_example

log = logging.getLogger(__name__)

ROWS_PER_SHARD = 50_000  # rows per Parquet file (one Arrow table in memory at a time)
SPEAKERS = {"system": "system", "user": "human", "assistant": "gpt", "tool": "tool"}  # ShareGPT's names
# mappings whose keys the record does not fix: a struct of the keys they hold in this export, or Json when a key
# holds lists, mappings or mixed types (meta always: its keys vary from record to record)
MAPPINGS = ("usage", "teacher", "sampling")
SCALARS = {"bool": "bool", "int": "int64", "float": "float64", "str": "string"}
EXPORT_MARKER = "<!-- written by seqdistill export -->"  # `--overwrite` replaces only a folder with this card


@dataclass
class ExportResult:
    """What `export` wrote: the folder, its splits with their row counts, its files, and the Hub repo if pushed."""

    to: str
    format: str
    splits: dict[str, int]
    files: list[str] = field(default_factory=list)
    card: str = ""
    pushed: str | None = None


def run(cfg: ExportConfig) -> ExportResult:
    """Export `cfg.input` to `cfg.to` (checked first, with the Hub when pushing), then upload it when asked."""
    if not cfg.input:
        raise ConfigError("export needs the kept samples: seqdistill export KEPT.jsonl --to DIR")
    if not cfg.to:
        raise ConfigError("export needs a folder to write: --to DIR")
    target = Path(cfg.to)
    check_target(target, cfg.overwrite)
    if cfg.push_to_hub:
        hub_preflight(cfg.push_to_hub)  # before any work: an upload that cannot happen writes nothing
    scan = _scan(cfg)
    test = test_prompts(list(scan.prompts), cfg.test_size, cfg.seed)
    splits = {"train": sum(n for pid, n in scan.prompts.items() if pid not in test)}
    if test:
        splits["test"] = sum(scan.prompts[pid] for pid in test)
    tmp = target.with_name(f".{target.name}.export-{os.getpid()}.tmp")
    _remove_stale(target)
    try:
        files = _write(cfg, tmp, test, splits, scan)
        card = card_markdown(cfg, splits, files, scan)
        (tmp / "README.md").write_text(card, encoding="utf-8")
        _replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = ExportResult(str(target), cfg.format, splits, [str(target / f) for f in files], str(target / "README.md"))
    log.info("export: %s -> %s (%s)", cfg.input, target, ", ".join(f"{k} {v}" for k, v in splits.items()))
    if cfg.push_to_hub:
        result.pushed = push(target, cfg.push_to_hub, cfg.private, cfg.format)
    return result


# ---- checks before any work ----------------------------------------------------------------------------------


def check_target(target: Path, overwrite: bool) -> None:
    """`--to` must be a new or empty folder, or (with overwrite) one an earlier export wrote."""
    if target.exists() and not target.is_dir():
        raise ConfigError(f"--to {target}: is a file; give a folder")
    if not target.exists() or not any(target.iterdir()):
        return
    if not overwrite:
        raise ConfigError(f"--to {target}: exists and is not empty; choose another folder (or --overwrite an export)")
    card = target / "README.md"
    if not card.is_file() or EXPORT_MARKER not in card.read_text(encoding="utf-8", errors="replace"):
        raise ConfigError(f"--to {target}: was not written by seqdistill export (no card of ours); not replacing it")


def _offline() -> bool:
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE")
    return flag.strip().upper() in {"1", "ON", "YES", "TRUE"} if flag is not None else bool(constants.HF_HUB_OFFLINE)


def hub_preflight(repo: str, timeout: float = 5.0) -> None:
    """Refuse an upload that cannot happen, before any work: offline mode, no token, the endpoint unreachable."""
    from huggingface_hub import constants, get_token

    where = f"--push-to-hub {repo}"
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
        raise ConfigError(f"{where}: expected a dataset repo id like owner/name")
    if _offline():
        raise ConfigError(
            f"{where}: HF_HUB_OFFLINE is set, so nothing can be uploaded; unset it (nothing was written)"
        )
    endpoint = os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "", port), timeout=timeout).close()
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise ConfigError(
            f"{where}: cannot reach {url.scheme}://{url.hostname}:{port} ({reason}); check the network, or export "
            "without --push-to-hub (nothing was written)"
        ) from None
    if not get_token():
        raise ConfigError(f"{where}: no Hugging Face token; run `hf auth login` or set HF_TOKEN (nothing was written)")


def push(folder: Path, repo: str, private: bool, fmt: str) -> str:
    """Upload the folder to a Hub dataset repo (created if needed); a failure is one line, the folder stays."""
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        api.create_repo(repo, repo_type="dataset", private=private, exist_ok=True)
        api.upload_folder(
            folder_path=str(folder), repo_id=repo, repo_type="dataset", commit_message=f"seqdistill export ({fmt})"
        )
    except Exception as e:  # huggingface_hub raises HTTP, network and validation errors of many types
        first = (str(e).splitlines() or [""])[0][:200]
        raise BackendError(
            f"--push-to-hub {repo}: upload failed ({type(e).__name__}: {first}); {folder} is kept"
        ) from None
    log.info("export: uploaded %s to https://huggingface.co/datasets/%s", folder, repo)
    return repo


# ---- splits --------------------------------------------------------------------------------------------------


@dataclass
class _Scan:
    """A first pass over the input: samples per prompt (first-seen order), the first sample, completion lengths."""

    prompts: dict[str, int] = field(default_factory=dict)
    first: Sample | None = None
    lengths: list[int] = field(default_factory=list)  # words, as the report counts without a tokenizer
    keys: dict[str, dict[str, set[str]]] = field(default_factory=lambda: {m: {} for m in MAPPINGS})

    def add(self, sample: Sample) -> None:
        self.first = self.first or sample
        self.prompts[sample.prompt_id] = self.prompts.get(sample.prompt_id, 0) + 1
        self.lengths.append(len(report.completion_text(sample).split()))
        for name in MAPPINGS:  # the value types each key of the free-form mappings holds
            value = getattr(sample, name)
            items = (value.model_dump() if hasattr(value, "model_dump") else value or {}).items()
            for key, v in items:
                self.keys[name].setdefault(key, set()).add(type(v).__name__)


def _scan(cfg: ExportConfig) -> _Scan:
    """Read the input once for the split and the card; an empty input is refused."""
    scan = _Scan()
    for sample in read_input(cfg.input, cfg.input_format):
        scan.add(sample)
    if scan.first is None:
        raise DataError(f"{cfg.input}: no samples to export")
    return scan


def test_prompts(prompt_ids: list[str], test_size: float | None, seed: int) -> set[str]:
    """The prompts held out: the `test_size` share (at least one, never all) with the lowest seeded hashes.

    >>> sorted(test_prompts([f"p{i}" for i in range(10)], 0.2, seed=0)) == sorted(test_prompts(
    ...     [f"p{i}" for i in reversed(range(10))], 0.2, seed=0))
    True
    """
    if not test_size:
        return set()
    if len(prompt_ids) < 2:
        raise DataError(
            f"test_size {test_size}: a test split needs at least 2 prompts, the input has {len(prompt_ids)}"
        )
    count = min(len(prompt_ids) - 1, max(1, round(test_size * len(prompt_ids))))
    ranked = sorted(prompt_ids, key=lambda pid: hashlib.sha256(f"{seed}:{pid}".encode()).digest())
    return set(ranked[:count])


# ---- writing -------------------------------------------------------------------------------------------------


def _write(cfg: ExportConfig, folder: Path, test: set[str], splits: dict[str, int], scan: _Scan) -> list[str]:
    """Write every split's files under `folder/data`; return the files (relative to `folder`)."""
    (folder / "data").mkdir(parents=True)
    if cfg.format == "parquet":
        return _write_parquet(cfg, folder, test, splits, record_features(scan.keys))
    handles = {name: (folder / "data" / f"{name}.jsonl").open("w", encoding="utf-8") for name in splits}
    try:
        for sample in read_input(cfg.input, cfg.input_format):
            split = "test" if sample.prompt_id in test else "train"
            line = (
                sample.to_json()
                if cfg.format == "jsonl"
                else json.dumps(to_row(sample, cfg.format), ensure_ascii=False)
            )
            handles[split].write(line + "\n")
    finally:
        for f in handles.values():
            f.close()
    return [f"data/{name}.jsonl" for name in splits]


def to_row(sample: Sample, fmt: str) -> dict[str, Any]:
    """One exported row: the record (parquet, jsonl), TRL `messages`, or ShareGPT `conversations`.

    >>> s = Sample(id="s1", prompt_id="p1", sample_index=0, prompt=[Message(role="user", content="2+2?")],
    ...            completion=[Message(role="assistant", content="4")], reference="4")
    >>> to_row(s, "sharegpt")["conversations"]
    [{'from': 'human', 'value': '2+2?'}, {'from': 'gpt', 'value': '4'}]
    """
    if fmt in ("parquet", "jsonl"):
        return sample.model_dump(mode="json")
    example = to_example(sample, "think")  # what the student is trained on
    messages = example["prompt"] + example["completion"]
    if fmt == "messages":
        return {"messages": messages, "id": sample.id, "reference": sample.reference}
    turns = [{"from": SPEAKERS[m["role"]], "value": m["content"]} for m in messages]
    return {"conversations": turns, "id": sample.id, "reference": sample.reference}


def _write_parquet(cfg: ExportConfig, folder: Path, test: set[str], splits: dict[str, int], features) -> list[str]:
    """Parquet shards of at most ROWS_PER_SHARD rows, named `<split>-0000i-of-0000n.parquet` as the Hub names them."""
    import datasets

    datasets.disable_progress_bars()
    shards = {name: max(1, math.ceil(n / ROWS_PER_SHARD)) for name, n in splits.items()}
    files: list[str] = []
    buffers: dict[str, list[dict[str, Any]]] = {name: [] for name in splits}
    written: Counter[str] = Counter()

    def flush(split: str) -> None:
        rel = f"data/{split}-{written[split]:05d}-of-{shards[split]:05d}.parquet"
        datasets.Dataset.from_list(buffers[split], features=features).to_parquet(str(folder / rel))
        files.append(rel)
        written[split] += 1
        buffers[split] = []

    for sample in read_input(cfg.input, cfg.input_format):
        split = "test" if sample.prompt_id in test else "train"
        row = to_row(sample, "parquet")  # every column in every row: `datasets` takes the columns from the first
        buffers[split].append({name: row.get(name) for name in features})
        if len(buffers[split]) == ROWS_PER_SHARD:
            flush(split)
    for name in splits:
        if buffers[name] or not written[name]:
            flush(name)
    return sorted(files)


def record_features(keys: dict[str, dict[str, set[str]]]):
    """The `datasets` features of a record: messages as structs of their fields, `usage` / `teacher` / `sampling`
    as structs of the keys they hold (Json when a key holds lists, mappings or mixed types), `meta` as Json.

    Structs rather than Json where possible: `datasets` decodes Json columns with pandas' ujson, whose floats
    may differ in the last digit (0.7 comes back as 0.7000000000000001).
    """
    from datasets import Features, Json, List, Value

    message = {name: _feature(f.annotation) for name, f in Message.model_fields.items()}
    out: dict[str, Any] = {}
    for name, f in Sample.model_fields.items():
        if name in ("prompt", "completion"):
            out[name] = List(message)
        elif name in MAPPINGS:
            out[name] = _mapping_feature(keys[name])
        elif name == "meta":
            out[name] = Json()
        elif name == "sample_index":
            out[name] = Value("int64")
        else:
            out[name] = _feature(f.annotation)
    return Features(out)


def _mapping_feature(keys: dict[str, set[str]]):
    """A struct of the keys a mapping holds in this export (int and float keys as float64), else Json."""
    from datasets import Json, Value

    fields = {}
    for key, types in keys.items():
        if types - {"NoneType"} - SCALARS.keys():  # a list or a mapping under this key
            return Json()
        kinds = {SCALARS[t] for t in types if t in SCALARS}
        if kinds == {"int64", "float64"}:
            kinds = {"float64"}
        if len(kinds) > 1:
            return Json()
        fields[key] = Value(kinds.pop() if kinds else "string")
    return fields or Json()


def _feature(annotation: Any):
    """Value('string') for a text field (str, a Literal of strings, optional or not); Json for anything else."""
    from datasets import Json, Value

    args = typing.get_args(annotation) if typing.get_origin(annotation) is not typing.Literal else (annotation,)
    parts = args or (annotation,)
    text = all(p is str or p is type(None) or typing.get_origin(p) is typing.Literal for p in parts)
    return Value("string") if text else Json()


def _remove_stale(target: Path) -> None:
    """Temporary folders an export killed mid-way left beside `target` (their process is gone)."""
    for tmp in target.parent.glob(f".{target.name}.export-*.tmp"):
        pid = tmp.name.rsplit("-", 1)[-1].removesuffix(".tmp")
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _replace(tmp: Path, target: Path) -> None:
    """Move the finished folder into place; an earlier export there is replaced whole."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        target.rename(old)
        tmp.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(target)


# ---- the dataset card ----------------------------------------------------------------------------------------


def card_markdown(cfg: ExportConfig, splits: dict[str, int], files: list[str], scan: _Scan) -> str:
    """The card: the report's provenance, funnel and limitations, with this folder's files, format and loading."""
    facts = _facts(cfg)
    kept = report.KeptStats(lengths=scan.lengths, unit="whitespace-separated words", first=scan.first)
    teacher = report.teacher_name(facts, kept)
    title = f"Distilled samples from {teacher}" if teacher != "unknown" else f"Samples from {Path(cfg.input).name}"
    made = report.provenance(facts, kept) if facts.filter or facts.manifest else [f"Source: `{cfg.input}`"]
    counts = ", ".join(f"{name}: {n}" for name, n in splits.items())
    parts = [
        front_matter(sum(splits.values())),
        f"# {title}\n\n**{sum(splits.values())} samples** ({counts}) exported by `seqdistill export` from "
        f"`{cfg.input}` in the `{cfg.format}` format. {_split_note(cfg)} Files: "
        + ", ".join(f"`{f}`" for f in files)
        + ".\n",
        "## How it was made\n\n" + "\n".join(f"- {line}" for line in made) + "\n",
        f"## Filter funnel\n\n{report.funnel_markdown(facts.filter)}\n",
        f"## Format\n\n{format_markdown(cfg.format, scan.first)}\n",
        "## Load it\n\n"
        + report._fence(
            'from datasets import load_dataset\n\nds = load_dataset("path/to/this/folder")  # or the Hub repo id\n'
            + 'print(ds["train"][0])',
            "python",
        )
        + "\n",
        "## Limitations\n\n" + "\n".join(f"- {line}" for line in report.limitations(facts)) + "\n",
    ]
    return "\n".join(parts)


def _split_note(cfg: ExportConfig) -> str:
    if not cfg.test_size:
        return "One split, `train`."
    return (
        f"The `test` split holds {cfg.test_size:g} of the prompts (seed {cfg.seed}), with all their samples: "
        "no prompt is in both splits."
    )


def front_matter(count: int) -> str:
    """YAML front matter (size, task, tags).

    It names no `configs`: the split files follow the Hub's naming (`data/train.jsonl`, `data/test-*.parquet`),
    which `load_dataset(DIR)` detects by itself. With `configs` in a local card, `datasets` 5.2 keys its cache by
    the configs' relative paths and loads a stale copy after the files change, or another folder's files.
    """
    meta = {
        "task_categories": ["text-generation"],
        "size_categories": [report.size_category(count)],
        "tags": ["distillation", "synthetic", "seqdistill"],
    }
    return f"---\n{yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)}---\n{EXPORT_MARKER}\n"


def format_markdown(fmt: str, first: Sample | None) -> str:
    """What a row holds in this format, with the first row as the example (long values elided)."""
    text = {
        "parquet": "The records as seqdistill writes them (TRL's conversational prompt-completion format plus "
        "metadata): `prompt`, `completion`, `reference`, `finish_reason`, `usage`, `teacher`, `sampling`, `meta` "
        "(JSON columns where keys vary) and `id`.",
        "jsonl": "The records as seqdistill writes them, one JSON object per line: `prompt`, `completion`, "
        "`reference`, `finish_reason`, `usage`, `teacher`, `sampling`, `meta` and `id`.",
        "messages": "TRL's conversational `messages` (the prompt's turns, then the completion's; a reasoning "
        "trace as `<think>…</think>` before the answer), with the sample's `id` and `reference`.",
        "sharegpt": "ShareGPT `conversations` of `{from, value}` turns (`system`, `human`, `gpt`, `tool`; a "
        "reasoning trace as `<think>…</think>` before the answer), with the sample's `id` and `reference`.",
    }[fmt]
    if first is None:
        return text
    row = to_row(first, fmt)
    example = json.dumps({k: _elide(v) for k, v in row.items()}, ensure_ascii=False)
    return f"{text} The first row (long values elided):\n\n{report._fence(example, 'json')}"


def _elide(value: Any) -> Any:
    return value if len(json.dumps(value, ensure_ascii=False)) <= 400 else "…"


def _facts(cfg: ExportConfig) -> report.RunFacts:
    """The run's facts for the card: a pipeline run dir around the input if there is one, else its filter report."""
    path = Path(cfg.input)
    run_dir = path.parent
    facts = report.RunFacts(run_dir, {})
    if (run_dir / "summary.json").is_file():
        try:
            facts = report.gather(run_dir)
        except (ConfigError, DataError) as e:
            log.warning("%s: not used for the card (%s)", run_dir / "summary.json", e)
    if facts.filter is None and path.is_file():
        side = path.with_name(path.stem + ".report.json")
        facts.filter = report._read_json(side, report.FilterPart) if side.is_file() else None
    return facts
