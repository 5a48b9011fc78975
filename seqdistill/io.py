"""The one IO layer: JSONL / Parquet / `datasets` reading, append-safe sample writing, atomic finalize.

Only this module knows file formats. Errors in user files become `DataError` naming file, line and field.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from seqdistill.errors import DataError
from seqdistill.records import Sample

log = logging.getLogger(__name__)
# mkstemp creates 0600 files; finished outputs get the usual mode (read once: os.umask can only be read by setting it)
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def describe_validation_error(err: ValidationError) -> str:
    """First pydantic error as 'field.path: message' (one line, the field the user must fix)."""
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "record"
    return f"{loc}: {first['msg']}"


def _require_file(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a file")
    if not os.access(path, os.R_OK):
        raise DataError(f"{path}: not readable (check its permissions)")


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line; a bad line is a DataError with file:line."""
    path = Path(path)
    _require_file(path)
    with path.open("r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path} line {lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path} line {lineno}: expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj


def read_samples(path: str | Path) -> Iterator[Sample]:
    """Yield validated samples; the first invalid line stops with 'FILE line N: field: problem'."""
    for lineno, obj in iter_jsonl(path):
        try:
            yield Sample.model_validate(obj)
        except ValidationError as e:
            raise DataError(f"{path} line {lineno}: {describe_validation_error(e)}") from None


def repair_tail(path: str | Path) -> int:
    """Cut a partial last line left by a crash mid-write; return the number of bytes removed.

    Only an unterminated last line is removed: every complete line was written whole and fsync'd.
    """
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return 0
    with path.open("rb+") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - 1))
        if f.read(1) == b"\n":
            return 0
        # scan back to the last newline
        pos = size - 1
        chunk = 4096
        while pos > 0:
            start = max(0, pos - chunk)
            f.seek(start)
            buf = f.read(pos - start)
            idx = buf.rfind(b"\n")
            if idx >= 0:
                pos = start + idx + 1
                break
            pos = start
        f.truncate(pos)
        f.flush()
        os.fsync(f.fileno())
    removed = size - pos
    log.warning("%s: removed a partial last line (%d bytes) left by an interrupted run", path, removed)
    return removed


class SampleWriter:
    """Append samples to a JSONL file: each line reaches the OS at once, fsync is group-committed.

    A line is written and flushed the moment its sample arrives, so a killed process (kill -9, Ctrl-C)
    loses nothing already received. fsync, which only matters for a power loss, runs at most every
    `fsync_interval` seconds (and on close): one fsync per sample would cap throughput at the disk's
    sync rate. A crash mid-write leaves at most one torn last line, which `repair_tail` removes.
    """

    def __init__(self, path: str | Path, fsync_interval: float = 0.05):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        repair_tail(self.path)
        self._f = self.path.open("a", encoding="utf-8")
        self._fsync_interval = fsync_interval
        self._last_sync = time.monotonic()
        self.written = 0

    def write(self, sample: Sample) -> None:
        self._f.write(sample.to_json() + "\n")
        self._f.flush()
        self.written += 1
        if time.monotonic() - self._last_sync >= self._fsync_interval:
            self.sync()

    def sync(self) -> None:
        os.fsync(self._f.fileno())
        self._last_sync = time.monotonic()

    def close(self) -> None:
        if not self._f.closed:
            self._f.flush()
            self.sync()
            self._f.close()

    def __enter__(self) -> SampleWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _temp_beside(path: Path) -> tuple[int, str]:
    """A temporary file in `path`'s directory (created if needed) with the mode `path` has or would get."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    # keep a replaced file's mode; a new file gets 0666 & ~umask like open() would give it
    os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_UMASK)
    return fd, tmp


class AtomicWriter:
    """Write lines to a temporary file beside `path`; it replaces `path` only when the block succeeds.

    Readers see the old file or the complete new one, never a half-written file.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        fd, self._tmp = _temp_beside(self.path)
        self._f = os.fdopen(fd, "w", encoding="utf-8")
        self.count = 0

    def write(self, line: str) -> None:
        self._f.write(line + "\n")
        self.count += 1

    def __enter__(self) -> AtomicWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self._f.flush()
                os.fsync(self._f.fileno())
            self._f.close()
            if exc_type is None:
                os.replace(self._tmp, self.path)
        finally:
            Path(self._tmp).unlink(missing_ok=True)


def write_atomic(path: str | Path, lines: Iterable[str]) -> int:
    """Write all `lines` to `path` atomically; return how many were written."""
    with AtomicWriter(path) as w:
        for line in lines:
            w.write(line)
    return w.count


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write a binary file (a figure) atomically: readers see the old file or the whole new one."""
    path = Path(path)
    fd, tmp = _temp_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_json(path: str | Path, obj: Any) -> None:
    """Write one JSON document atomically (reports, manifests)."""
    write_atomic(path, [json.dumps(obj, indent=2, ensure_ascii=False, default=str)])


def read_table(source: str, split: str = "train", subset: str | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """Rows of a prompt source as (location, row): JSONL, Parquet, a saved `datasets` dir, or a hub name.

    `location` is 'file line N' / 'file row N' so errors can point at the row.
    """
    path = Path(source)
    if path.suffix in (".jsonl", ".json"):
        for lineno, obj in iter_jsonl(path):
            yield f"{path} line {lineno}", obj
        return
    if path.suffix == ".parquet":
        _require_file(path)
        try:
            ds = _datasets().load_dataset("parquet", data_files=str(path), split="train")
        except Exception as e:  # pyarrow raises ArrowInvalid etc. on a corrupt or non-Parquet file
            raise DataError(f"{path}: cannot read Parquet ({type(e).__name__}: {_first_line(e)})") from None
    elif path.is_dir():
        ds = _load_saved(path, split)
    elif path.suffix or "/" not in source or source.startswith((".", "/")):
        raise DataError(
            f"{source}: no such file (expected .jsonl, .parquet, a saved dataset dir or a hub dataset name)"
        )
    else:
        ds = _load_hub(source, split, subset)
    for i, row in enumerate(ds):
        yield f"{source} row {i}", row


def _datasets():
    import datasets

    datasets.disable_progress_bars()
    return datasets


def _first_line(e: Exception) -> str:
    return (str(e).splitlines() or [""])[0][:200]


def _load_saved(path: Path, split: str):
    try:
        ds = _datasets().load_from_disk(str(path))
    except FileNotFoundError:  # a directory that is not a saved Dataset / DatasetDict
        raise DataError(f"{path}: not a saved dataset dir (expected one written by save_to_disk)") from None
    if isinstance(ds, _datasets().DatasetDict):
        if split not in ds:
            raise DataError(f"{path}: no split {split!r} (has: {', '.join(ds)})")
        ds = ds[split]
    return ds


def _load_hub(name: str, split: str, subset: str | None):
    try:
        return _datasets().load_dataset(name, subset, split=split)
    except Exception as e:  # the hub raises many types: offline, missing repo, missing split
        raise DataError(
            f"{name}: cannot load hub dataset ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
        ) from None
