"""The one IO layer: JSONL / Parquet / `datasets` reading, append-safe sample writing, atomic finalize.

Only this module knows file formats. Errors in user files become `DataError` naming file, line and field;
I/O errors (a full disk, a read-only directory) become `DataError` naming the path and the errno's meaning.
It also owns the rules that keep outputs whole: one writer per output (`exclusive_lock`), outputs that are
regular files (`check_output`), and temporary files that never outlive their writer (`_temp_beside`).
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from seqdistill.errors import DataError, SeqdistillError
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


# The longest line read: a 128k-token completion with top-20 logprobs is ~60 MB; a longer "line" is a
# file that is not JSONL (a binary, a JSON document on one line), which would otherwise be read whole into memory.
MAX_LINE_BYTES = 256 * 2**20


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line; a bad line is a DataError with file:line.

    Bad lines: invalid JSON, not an object, not UTF-8 (a binary or UTF-16 file), or longer than `MAX_LINE_BYTES`.
    A UTF-8 byte-order mark at the start of the file is skipped.
    """
    path = Path(path)
    _require_file(path)
    try:
        with path.open("rb") as f:
            lineno = 0
            while raw := f.readline(MAX_LINE_BYTES + 1):
                lineno += 1
                if len(raw) > MAX_LINE_BYTES:
                    raise DataError(
                        f"{path} line {lineno}: longer than {_size(MAX_LINE_BYTES)} without a line break "
                        "(is it a JSONL file, one JSON object per line?)"
                    )
                if obj := _parse_line(path, lineno, raw):
                    yield lineno, obj
    except OSError as e:
        raise os_error(e, path, "read") from None


def _size(n: int) -> str:
    return f"{n / 2**20:g} MiB" if n >= 2**20 else f"{n} bytes"


def _parse_line(path: Path, lineno: int, raw: bytes) -> dict[str, Any] | None:
    if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path} line {lineno}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
            "is it a binary or compressed file? save it as UTF-8 JSONL"
        ) from None
    if not line.strip():
        return None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"{path} line {lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path} line {lineno}: expected a JSON object, got {type(obj).__name__}")
    return obj


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
    try:
        return _repair_tail(path)
    except OSError as e:
        raise os_error(e, path, "repair the end of") from None


def _repair_tail(path: Path) -> int:
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


# errno -> what the user can do about it (the message always names the path and os.strerror's meaning)
_FIXES = {
    errno.ENOSPC: "free some space or write elsewhere",
    errno.EDQUOT: "free some space or write elsewhere",
    errno.EROFS: "write to a writable directory",
    errno.EACCES: "check its permissions, or write elsewhere",
    errno.EPERM: "check its permissions, or write elsewhere",
    errno.EISDIR: "give a file name, not a directory",
    errno.ENOTDIR: "a part of the path is a file, not a directory",
    errno.EEXIST: "a file is in the way of a directory on the path",
    errno.EMFILE: "too many open files: raise `ulimit -n`, or lower --concurrency / --workers",
    errno.ENFILE: "too many open files system-wide: lower --concurrency / --workers",
}


def os_error(e: OSError, path: str | Path | None, action: str) -> DataError:
    """An OSError as one line naming the path, what was being done, the errno's meaning and the fix.

    >>> str(os_error(OSError(28, "No space left on device"), "runs/x.jsonl", "write"))
    'cannot write runs/x.jsonl: No space left on device (free some space or write elsewhere)'
    """
    where = e.filename if path is None else path
    reason = os.strerror(e.errno) if e.errno else str(e)
    fix = _FIXES.get(e.errno or 0)
    target = f"cannot {action} {where}" if where is not None else f"cannot {action} a file"
    return DataError(f"{target}: {reason}" + (f" ({fix})" if fix else ""))


def check_output(path: str | Path, flag: str = "--output") -> None:
    """Refuse an output path seqdistill cannot write safely, before any work, with one line naming it.

    Refused: a directory, a character or block device (`/dev/null`), a FIFO, a socket (or a symlink to
    one): outputs are replaced atomically or appended to, and neither works on those, nor should a
    device ever be replaced by a regular file. Also refused: a parent that cannot be created (a part of
    the path is a file) and a directory or file we may not write (read-only file system, permissions).
    Nothing is created or changed here. Not covered: a disk that fills up later (the writes say so).
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode  # follows symlinks: what a write would reach
    except (FileNotFoundError, NotADirectoryError):  # the latter: a file in the way, named below
        mode = None
    except OSError as e:
        raise os_error(e, path, f"use {flag}") from None
    if mode is not None and stat.S_ISDIR(mode):
        fix = f"give a file name, e.g. {path / 'out.jsonl'}" if flag.startswith("--") else "move it away"
        raise DataError(f"{flag} {path} is a directory: {fix}")
    if mode is not None and not stat.S_ISREG(mode):
        kind = _KINDS.get(stat.S_IFMT(mode), "special file")
        raise DataError(
            f"{flag} {path} is a {kind}, not a regular file: seqdistill writes its outputs to regular files "
            "(replaced whole or appended to); choose a file path"
        )
    if mode is not None and not os.access(path, os.W_OK):
        raise DataError(f"{flag} {path}: cannot write it ({_why_not_writable(path)})")
    _check_directory(Path(os.path.realpath(path)).parent, flag, path)


def check_output_dir(path: str | Path, flag: str = "--output") -> None:
    """Refuse a directory output (a trained model) that is a file or cannot be created or written, up front."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DataError(f"{flag} {path} is a file: this output is a directory; choose another {flag}")
    _check_directory(path, flag, path)


_KINDS = {
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
    stat.S_IFIFO: "FIFO (named pipe)",
    stat.S_IFSOCK: "socket",
}


def _check_directory(directory: Path, flag: str, path: Path) -> None:
    """The directory an output goes to exists and is writable, or its nearest existing ancestor is."""
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise DataError(f"{flag} {path}: cannot create its directory: {existing} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise DataError(f"{flag} {path}: cannot write in {existing} ({_why_not_writable(existing)})")


def _why_not_writable(path: Path) -> str:
    try:
        read_only = bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    return os.strerror(errno.EROFS if read_only else errno.EACCES)


# ---- one writer per output ----------------------------------------------------------------------------------

_held: dict[str, list[int]] = {}  # lock path -> [fd, depth]: this process's locks (re-entrant)
_held_guard = threading.Lock()


def lock_path(path: str | Path) -> Path:
    """The lock file of an output: `.NAME.lock` beside the file a write would reach (symlinks resolved)."""
    real = Path(os.path.realpath(path))
    return real.with_name(f".{real.name}.lock")


@contextmanager
def exclusive_lock(path: str | Path, hint: str = "choose another --output") -> Iterator[None]:
    """Hold an exclusive OS lock on output `path` for the block; another process gets one line naming our PID.

    `fcntl.flock` on `.NAME.lock` beside the output, holding the owner's PID: the OS drops the lock when
    the process dies, so a kill -9 never leaves a stale lock. Re-entrant within a process (eval locks
    its output, then runs generate on it). The lock file is removed on release; a process that opened it
    just before (and so locked a file no longer at that path) sees the inode change and tries again.
    Limits: filesystems without flock (some network mounts) run unlocked, with a warning; a child process
    forked while the lock is held keeps it until it exits.
    """
    lock = lock_path(path)
    key = str(lock)
    with _held_guard:
        if key in _held:
            _held[key][1] += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield
        finally:
            with _held_guard:
                _held[key][1] -= 1
        return
    fd = _acquire(lock, path, hint)
    with _held_guard:
        _held[key] = [fd, 1]
    try:
        yield
    finally:
        with _held_guard:
            del _held[key]
        if fd >= 0:
            Path(lock).unlink(missing_ok=True)  # while still locked: nobody else holds this inode
            os.close(fd)


def _acquire(lock: Path, path: str | Path, hint: str) -> int:
    """Open and flock `lock` (non-blocking); raise a DataError naming the holder's PID when it is taken."""
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise os_error(e, lock.parent, "create the directory") from None
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise os_error(e, lock, "create the lock file") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            who = f"another seqdistill (pid {holder})" if holder else "another seqdistill process"
            raise DataError(f"{who} is writing {path}: wait for it or {hint}") from None
        except OSError as e:
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                os.close(fd)
                raise os_error(e, lock, "lock") from None
            log.warning("%s: this filesystem has no file locks; nothing stops a second writer", lock)
            os.close(fd)
            return -1
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # the previous holder removed it between our open and our lock: lock the new file
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return fd


def _holder(fd: int) -> int | None:
    """The PID written in a lock file (the holder writes it just after locking: wait a moment for it)."""
    for _ in range(20):
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        if text.isdigit():
            return int(text)
        time.sleep(0.01)
    return None


# ---- appending samples ----------------------------------------------------------------------------------------


class SampleWriter:
    """Append samples to a JSONL file: each line reaches the OS at once, fsync is group-committed.

    A line is written the moment its sample arrives, so a killed process (kill -9, Ctrl-C) loses nothing
    already received. fsync, which only matters for a power loss, runs at most every `fsync_interval`
    seconds (and on close): one fsync per sample would cap throughput at the disk's sync rate. A crash
    mid-write leaves at most one torn last line, which `repair_tail` removes. A write that fails (disk
    full, I/O error) is cut back to the last whole line at once and raised as a DataError naming the file.
    """

    def __init__(self, path: str | Path, fsync_interval: float = 0.05):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            repair_tail(self.path)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as e:
            raise os_error(e, self.path, "open for writing") from None
        self._size = os.fstat(self._fd).st_size  # the end of the last whole line: where a failed write is cut
        self._fsync_interval = fsync_interval
        self._last_sync = time.monotonic()
        self.written = 0

    def write(self, sample: Sample) -> None:
        data = (sample.to_json() + "\n").encode("utf-8")
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as e:
            self._cut_back()
            raise os_error(e, self.path, "write") from None
        self._size += len(data)
        self.written += 1
        if time.monotonic() - self._last_sync >= self._fsync_interval:
            self.sync()

    def _cut_back(self) -> None:
        """Remove the part of a line a failed write left (truncating needs no free space)."""
        try:
            os.ftruncate(self._fd, self._size)
        except OSError:  # the torn line stays; the next run's repair_tail removes it
            log.warning("%s: could not remove a partial last line; the next run will", self.path)

    def sync(self) -> None:
        try:
            os.fsync(self._fd)
        except OSError as e:
            raise os_error(e, self.path, "write") from None
        self._last_sync = time.monotonic()

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            try:
                os.fsync(fd)
            except OSError as e:
                raise os_error(e, self.path, "write") from None
            finally:
                os.close(fd)

    def __enter__(self) -> SampleWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        try:  # already failing: the first error is the one to report
            self.close()
        except SeqdistillError:
            pass


# ---- temporary files and atomic replacement -------------------------------------------------------------------
# A temporary file is named `.NAME.HOST-PID.XXXXXXXX.tmp` and is removed on every exit path that runs Python
# (success, error, signal). One left by a kill -9 is removed by the next writer of the same output when
# its creator is gone: same host, and no process with that PID has been running since before the file was
# last written (PID reuse is caught by the start time). Removing it is safe: only its creator ever renames
# it into place, and a dead process renames nothing. A temp file of another host is left alone.


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.{socket.gethostname()}-{os.getpid()}."


def _temp_pattern(path: Path) -> re.Pattern[str]:
    return re.compile(rf"\.{re.escape(path.name)}\.(?P<host>.+)-(?P<pid>\d+)\.[^.]+\.tmp")


def remove_stale_temps(path: str | Path) -> list[Path]:
    """Remove the temporary files of `path` left by dead writers on this host; return what was removed."""
    path = Path(path)
    pattern, host = _temp_pattern(path), socket.gethostname()
    removed = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for entry in entries:
        m = pattern.fullmatch(entry.name)
        if not m or m["host"] != host:
            continue
        try:
            written = entry.stat(follow_symlinks=False).st_mtime
        except FileNotFoundError:
            continue
        if _alive_since(int(m["pid"]), written):
            continue
        try:
            os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            continue
    if removed:
        log.info("%s: removed %d temporary file(s) left by a killed run", path.parent, len(removed))
    return removed


def _alive_since(pid: int, mtime: float) -> bool:
    """Whether process `pid` exists and was already running at `mtime` (so the file may be its own)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    started = _start_time(pid)
    return started is None or started <= mtime + 2.0  # /proc times are coarse: 2 s of slack


def _start_time(pid: int) -> float | None:
    """A process's start time (epoch seconds) from /proc, or None where /proc cannot tell."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(
            float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime")
        )
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _temp_beside(path: Path) -> tuple[int, str]:
    """A temporary file in `path`'s directory (created if needed) with the mode `path` has or would get."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path), suffix=".tmp")
    except OSError as e:
        raise os_error(e, path, "write") from None
    # keep a replaced file's mode; a new file gets 0666 & ~umask like open() would give it
    os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_UMASK)
    return fd, tmp


def _real(path: str | Path) -> Path:
    """Where a write to `path` lands: through symlinks (replacing the link itself would break it)."""
    return Path(os.path.realpath(path))


class AtomicWriter:
    """Write lines to a temporary file beside `path`; it replaces `path` only when the block succeeds.

    Readers see the old file or the complete new one, never a half-written file. The temporary file is
    removed on every exit path (see `remove_stale_temps` for a kill -9). Through a symlink, the target
    is replaced. I/O errors are DataErrors naming `path`.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._target = _real(path)
        fd, self._tmp = _temp_beside(self._target)
        self._f = os.fdopen(fd, "w", encoding="utf-8")
        self.count = 0

    def write(self, line: str) -> None:
        try:
            self._f.write(line + "\n")
        except OSError as e:
            raise os_error(e, self.path, "write") from None
        self.count += 1

    def __enter__(self) -> AtomicWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self._f.flush()
                os.fsync(self._f.fileno())
                self._f.close()
                os.replace(self._tmp, self._target)
        except OSError as e:
            raise os_error(e, self.path, "write") from None
        finally:
            try:
                self._f.close()  # after an error this flushes into the temp file, which goes anyway
            except OSError:
                pass
            Path(self._tmp).unlink(missing_ok=True)


def write_atomic(path: str | Path, lines: Iterable[str]) -> int:
    """Write all `lines` to `path` atomically; return how many were written."""
    with AtomicWriter(path) as w:
        for line in lines:
            w.write(line)
    return w.count


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write a binary file (a figure) atomically: readers see the old file or the whole new one."""
    target = _real(path)
    fd, tmp = _temp_beside(target)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except OSError as e:
        raise os_error(e, path, "write") from None
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
