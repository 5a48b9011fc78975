"""Run a Python script inside a bubblewrap (`bwrap`) sandbox, with limits, and kill everything it started.

What the script sees (``run_python``):
- New PID, mount, IPC, UTS, network and cgroup namespaces; a new user namespace where the kernel lets an
  unprivileged user make one (no user namespaces below it). No network: only the namespace's own loopback.
- A read-only view of ``/usr`` (and ``/bin``, ``/lib*``) and of the Python installation that runs it;
  nothing else of the host: no ``/home``, ``/root``, ``/etc``, no working directory, no host ``/proc``.
  A private writable ``/tmp`` (the working directory) and ``/dev/shm``, each a small tmpfs.
- An empty environment (``PATH``, ``LANG``, ``PYTHONHASHSEED`` only), no terminal (``--new-session``), stdin
  empty once the script has read its input.
- Limits (``Limits``): CPU seconds, address space, processes (threads count), file size (its stdout and
  stderr included: a program that prints gigabytes gets "File too large"), open files, wall-clock time.
  The run ends when the script exits, or at the wall-clock limit; then the PID namespace's init dies and
  the kernel kills every process the script left behind (forked children, double-forked daemons). If
  the checking process itself dies, bwrap and the sandbox die with it (``--die-with-parent``).

Two ways to start it, chosen once per process by a probe (``mode()``):
- ``userns``: bwrap runs unprivileged and makes a user namespace. As root, bwrap is started as an unused
  uid (``UID_BASE`` + this process id) so that the process limit counts only the sandbox's processes
  (the kernel does not apply ``RLIMIT_NPROC`` to root); this needs the Python installation to be readable
  by any user.
- ``root``: when that fails as root (e.g. Python under ``/root``, mode 700), bwrap runs privileged without a
  user namespace, with only CAP_SETUID/CAP_SETGID, and the script's first lines switch to the unused uid:
  from then on it holds no capabilities, and ``no_new_privs`` is set.

Limits: the memory limit is per process (``RLIMIT_AS``): a program may use up to ``processes`` times
``memory_bytes`` in all; put the whole run under a memory cgroup for a hard total. CPU time is per
process too; the wall-clock limit bounds the whole tree. The script can read everything the sandboxed
Python can read (its own installation, ``/usr``). Not covered: kernel exploits, side channels, and the
sandboxed program lying about its own results (see ``checks/code.py`` for how the code check copes).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import site
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

BWRAP_ENV = "SEQDISTILL_BWRAP"  # path of the bwrap binary (default: `bwrap` on PATH); tests point it elsewhere
INSTALL_HINT = "install bubblewrap (`apt-get install bubblewrap`, `dnf install bubblewrap`)"
UID_BASE = 1_000_000  # sandboxes run as UID_BASE + the checker's pid: a uid no account and no other sandbox uses
PYTHON_ENV = "SEQDISTILL_SANDBOX_PYTHON"  # the interpreter to run in the sandbox (default: this one)
PYTHON: str | None = None  # overrides both (tests)


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sandboxed run (defaults sized for a short test program)."""

    cpu_seconds: int = 3  # per process; the kernel stops it at this many CPU seconds (SIGXCPU, SIGKILL 1 s later)
    wall_seconds: float = 4.0  # for the whole run, startup included; then every process is killed
    memory_bytes: int = 1 << 30  # address space per process (Python raises MemoryError)
    processes: int = 16  # processes and threads of the sandbox (a fork fails beyond it)
    file_bytes: int = 8 << 20  # largest file the program may write, its stdout and stderr included
    tmp_bytes: int = 64 << 20  # size of the private /tmp, and of /dev/shm
    open_files: int = 256
    output_bytes: int = 4096  # kept of stdout and of stderr in the result (the rest is counted, not kept)


@dataclass(frozen=True)
class SandboxResult:
    """What one sandboxed run did. ``report`` is what the script wrote to its report fd (see ``run_python``)."""

    outcome: Literal["exited", "killed", "timeout", "not_started"]
    exit_status: int | None  # the script's exit code; for "killed", the signal number
    limit: Literal["wall time", "cpu time"] | None  # the limit that ended the run, when the host can tell
    stdout: str  # the first Limits.output_bytes, decoded with replacement
    stderr: str
    report: bytes  # the first Limits.output_bytes of the report fd
    stdout_bytes: int = 0  # how much was written in all
    stderr_bytes: int = 0
    detail: str = field(default="", repr=False)  # bwrap's own message when the sandbox did not start


class SandboxUnavailable(Exception):
    """No working sandbox here; the message says why (a missing binary, namespaces refused)."""


# The script's first lines, run inside the sandbox before anything else: drop to the unused uid (root
# mode), set the limits, and make the venv's site-packages importable without running `site` (its .pth
# files cost ~75 ms per start here). Imports count at this rate: on our loaded 2-core machine `import json`
# added ~45 ms per start and `traceback` ~30 ms more, so the sandbox side uses neither.
_BOOT = r"""
import os as _o, resource as _r, sys as _s
_c = eval(_s.argv.pop(1), {"__builtins__": {}})  # our own literal (a dict of ints and strings): no json import
if _c["uid"] is not None:
    _o.setgroups([]); _o.setgid(_c["uid"]); _o.setuid(_c["uid"])
    if _o.getuid() == 0 or _o.geteuid() == 0:
        _o._exit(125)
if _c["netns"]:
    try:
        import ctypes as _t
        _t.CDLL(None, use_errno=True).unshare(0x40000000)  # CLONE_NEWNET, where allowed (no sandbox mode)
    except Exception:
        pass
for _n, _soft, _hard in _c["rlimits"]:
    _r.setrlimit(getattr(_r, _n), (_soft, _hard))
_s.path.extend(_c["path"])
del _o, _r, _s, _c
"""


# A seccomp filter (classic BPF, loaded by bwrap right before the script starts): no new user namespaces
# (unshare / clone with CLONE_NEWUSER fail with EPERM; clone3, whose flags BPF cannot read, fails with ENOSYS
# so that glibc falls back to clone), and no x32 system calls. userns mode also has --disable-userns; in
# root mode this filter is what stops the program from making one. Other architectures: no filter.
_SECCOMP_ARCH = {"x86_64": (0xC000003E, 56, 272, 435), "aarch64": (0xC00000B7, 220, 97, 435)}  # clone, unshare, clone3


def _seccomp_filter() -> bytes | None:
    import platform
    import struct

    arch = _SECCOMP_ARCH.get(platform.machine())
    if arch is None:
        return None
    audit_arch, clone, unshare, clone3 = arch
    allow, eperm, enosys = 0x7FFF0000, 0x00050000 | 1, 0x00050000 | 38
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    program = [  # (code, jump if true, jump if false, k); a jump skips that many instructions
        (ld, 0, 0, 4),  # 0: arch
        (jeq, 0, 5, audit_arch),  # 1: another ABI -> 7 (allow)
        (ld, 0, 0, 0),  # 2: syscall number
        (jge, 7, 0, 0x40000000),  # 3: x32 -> 11 (EPERM)
        (jeq, 7, 0, clone3),  # 4: -> 12 (ENOSYS)
        (jeq, 2, 0, unshare),  # 5: -> 8 (flags)
        (jeq, 1, 0, clone),  # 6: -> 8 (flags)
        (ret, 0, 0, allow),  # 7
        (ld, 0, 0, 16),  # 8: low 32 bits of the first argument (the flags)
        (jset, 1, 0, 0x10000000),  # 9: CLONE_NEWUSER -> 11 (EPERM)
        (ret, 0, 0, allow),  # 10
        (ret, 0, 0, eperm),  # 11
        (ret, 0, 0, enosys),  # 12
    ]
    return b"".join(struct.pack("=HBBI", *insn) for insn in program)


def bwrap_path() -> str | None:
    """The bwrap binary to use: ``$SEQDISTILL_BWRAP`` if set, else ``bwrap`` on PATH; None when missing."""
    configured = os.environ.get(BWRAP_ENV)
    if configured:
        return configured if os.path.isfile(configured) and os.access(configured, os.X_OK) else None
    return shutil.which("bwrap")


def python_executable() -> str:
    """The interpreter the sandbox runs: ``PYTHON``, ``$SEQDISTILL_SANDBOX_PYTHON``, else this one."""
    return PYTHON or os.environ.get(PYTHON_ENV) or sys.executable


def _python_roots(python: str) -> list[str]:
    """Directories to bind read-only so that ``python`` runs: its installation and, for a venv, the venv."""
    candidates = {os.path.dirname(os.path.dirname(os.path.realpath(python))), os.path.dirname(os.path.dirname(python))}
    if os.path.realpath(python) == os.path.realpath(sys.executable):
        candidates |= {sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix}
    roots: list[str] = []
    for path in sorted({os.path.realpath(p) for p in candidates} | candidates, key=len):
        if os.path.isdir(path) and path != "/" and not any(_under(path, r) for r in [*roots, "/usr"]):
            roots.append(path)
    return roots


def _parents(path: str) -> list[str]:
    """'/a/b/c' -> ['/a', '/a/b']."""
    parts = path.strip("/").split("/")[:-1]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


@lru_cache(maxsize=8)
def _site_dirs(python: str) -> list[str]:
    """The site-packages of the running venv, when the sandbox runs the same interpreter (else none)."""
    if os.path.realpath(python) != os.path.realpath(sys.executable):
        return []
    return [p for p in site.getsitepackages() if os.path.isdir(p)]


def _world_readable(path: str) -> bool:
    """Whether any user can reach ``path`` (every directory on the way is o+x, the path itself o+r)."""
    parts = os.path.realpath(path).split("/")
    for i in range(2, len(parts) + 1):
        st = os.stat("/".join(parts[:i]) or "/")
        if not st.st_mode & 0o001:
            return False
    return bool(os.stat(path).st_mode & 0o004)


@dataclass(frozen=True)
class _Mode:
    name: Literal["userns", "root"]
    bwrap: str
    python: str

    def uid(self) -> int | None:
        return UID_BASE + os.getpid() if os.geteuid() == 0 else None

    def argv(self, tmp_bytes: int, status_fd: int, seccomp_fd: int | None) -> list[str]:
        """bwrap's command line, up to ``--``."""
        process = ["--die-with-parent", "--new-session", "--json-status-fd", str(status_fd)]
        if self.name == "userns":
            # The script is the namespace's init: when it exits, the kernel kills what it left. In root mode
            # bwrap's own init (root) stays pid 1 instead: the script's uid switch would make the kernel refuse
            # bwrap's parent-death SIGKILL (bwrap holds no CAP_KILL), whereas root's init still gets it.
            process.append("--as-pid-1")
        if seccomp_fd is not None:
            process += ["--seccomp", str(seccomp_fd)]
        return [*self._setup(tmp_bytes), *process, "--"]

    @lru_cache(maxsize=4)  # noqa: B019 (a few frozen modes per process: nothing to leak)
    def _setup(self, tmp_bytes: int) -> tuple[str, ...]:
        """bwrap, the namespaces, the mounts and the environment: the same for every run."""
        if self.name == "userns":
            isolation = ["--unshare-all", "--unshare-user", "--disable-userns"]
        else:  # privileged bwrap: no user namespace; the boot lines drop to an unused uid
            isolation = ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
            isolation += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        mounts = ["--ro-bind", "/usr", "/usr"]
        for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
            if os.path.islink(top):
                mounts += ["--symlink", os.readlink(top), top]
            elif os.path.isdir(top):
                mounts += ["--ro-bind", top, top]
        size = str(tmp_bytes)
        mounts += ["--proc", "/proc", "--dev", "/dev"]
        mounts += ["--perms", "1777", "--size", size, "--tmpfs", "/tmp"]
        mounts += ["--perms", "1777", "--size", size, "--tmpfs", "/dev/shm"]
        # the interpreter after the tmpfs mounts, so that a venv under /tmp (a CI clone) is bound on top of the
        # private /tmp rather than hidden by it
        made: set[str] = {"/tmp", "/dev", "/dev/shm"}
        for root in _python_roots(self.python):
            for parent in _parents(root):  # created 0755: bwrap's own default does not let the dropped uid through
                if parent not in made and not os.path.islink(parent):
                    mounts += ["--perms", "0755", "--dir", parent]
                    made.add(parent)
            mounts += ["--ro-bind", root, root]
        mounts += ["--remount-ro", "/dev", "--remount-ro", "/"]  # only /tmp and /dev/shm (sized) are writable
        env = ["--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "LANG", "C.UTF-8"]
        env += ["--setenv", "PYTHONHASHSEED", "0", "--chdir", "/tmp"]
        return (self.bwrap, *isolation, *mounts, *env)


def _probe_script() -> str:
    return "import os, sys\nos.write(int(sys.argv[1]), b'ok ' + str(os.getuid()).encode())\n"


@lru_cache(maxsize=8)
def _probe(configured: str | None, bwrap: str | None, python: str, euid: int) -> _Mode | str:
    """Try the sandbox modes in order; the first that runs a script returns, else the failure in words."""
    if bwrap is None:
        return f"no bwrap binary at {configured}" if configured else "no `bwrap` on PATH"
    if not (os.path.isfile(python) and os.access(python, os.X_OK)):
        return f"no Python interpreter at {python} (${PYTHON_ENV})"
    names: list[Literal["userns", "root"]] = ["userns"]
    if euid == 0:
        readable = all(_world_readable(p) for p in [python, *_python_roots(python)])
        names = ["userns", "root"] if readable else ["root"]
    problems = []
    for name in names:
        mode = _Mode(name, bwrap, python)
        try:
            result = _run(mode, _probe_script(), b"", Limits(wall_seconds=10.0))
        except OSError as e:
            problems.append(f"{name}: {e.strerror or e}")
            continue
        if result.report.startswith(b"ok ") and result.report != b"ok 0":
            return mode
        problems.append(f"{name}: {result.detail or result.stderr.strip() or f'exit status {result.exit_status}'}")
    return "; ".join(p.splitlines()[0][:200] for p in problems)


def mode() -> _Mode:
    """The working sandbox mode (probed once per process, bwrap path and interpreter); else SandboxUnavailable."""
    found = _probe(os.environ.get(BWRAP_ENV), bwrap_path(), python_executable(), os.geteuid())
    if isinstance(found, str):
        raise SandboxUnavailable(found)
    return found


def available() -> str | None:
    """None when the sandbox works here, else why not (one line)."""
    try:
        mode()
    except SandboxUnavailable as e:
        return str(e)
    return None


def run_python(script: str, stdin: bytes = b"", limits: Limits | None = None) -> SandboxResult:
    """Run ``script`` (Python source) in the sandbox; raises SandboxUnavailable when there is none.

    The script gets ``stdin`` on fd 0 (then it may close it: nothing else can read it), and the number of
    a report fd in ``sys.argv[1]``: what it writes there comes back as ``SandboxResult.report``. The
    host never trusts the exit status for anything but the message.
    """
    return _run(mode(), script, stdin, limits or Limits())


def run_python_unsandboxed(script: str, stdin: bytes = b"", limits: Limits | None = None) -> SandboxResult:
    """``run_python`` without bubblewrap: a plain subprocess with the CPU, memory, file and wall limits.

    For hosts without a sandbox, when the user said so (``unsafe_code_check``). The script runs as this user,
    sees the host's files and may keep running children that leave its process group (a double fork).
    """
    return _run(None, script, stdin, limits or Limits())


@dataclass
class _Files:
    """The run's in-memory files: stdin, stdout, stderr, the report fd, bwrap's status fd, the seccomp filter.

    memfds rather than pipes: nothing to drain while the program runs, and RLIMIT_FSIZE caps what it writes.
    """

    stdin: int = -1
    stdout: int = -1
    stderr: int = -1
    report: int = -1
    status: int = -1
    seccomp: int | None = None

    @classmethod
    def make(cls, stdin: bytes, seccomp: bytes | None) -> _Files:
        files = cls()
        try:
            for name in ("stdin", "stdout", "stderr", "report", "status"):
                setattr(files, name, os.memfd_create(name))
            if seccomp is not None:
                files.seccomp = os.memfd_create("seccomp")
                os.write(files.seccomp, seccomp)
                os.lseek(files.seccomp, 0, os.SEEK_SET)
            os.write(files.stdin, stdin)
            os.lseek(files.stdin, 0, os.SEEK_SET)
        except BaseException:
            files.close()
            raise
        return files

    def close(self) -> None:
        for fd in (self.stdin, self.stdout, self.stderr, self.report, self.status, self.seccomp):
            if fd is not None and fd >= 0:
                os.close(fd)

    def status_lines(self) -> dict:
        """bwrap's --json-status-fd: one JSON object per line (child-pid first, exit-code at the end)."""
        merged: dict = {}
        for line in os.pread(self.status, 4096, 0).decode("utf-8", "replace").splitlines():
            try:
                merged |= json.loads(line)
            except ValueError:
                continue
        return merged


def _run(mode: _Mode | None, script: str, stdin: bytes, limits: Limits) -> SandboxResult:
    files = _Files.make(stdin, _seccomp_filter() if mode else None)
    tmp = None if mode else _tmpdir()
    try:
        python = mode.python if mode else sys.executable
        boot = {
            "uid": mode.uid() if mode and mode.name == "root" else None,
            "netns": mode is None,
            "rlimits": _rlimits(limits, sandboxed=mode is not None),
            "path": _site_dirs(python),
        }
        argv = [python, "-I", "-S", "-c", _BOOT + script, repr(boot), str(files.report)]
        popen_kw: dict = {"env": {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}}
        if mode is None:
            popen_kw |= {"cwd": tmp, "start_new_session": True}
        else:
            argv = mode.argv(limits.tmp_bytes, files.status, files.seccomp) + argv
            if mode.name == "userns" and os.geteuid() == 0:
                popen_kw |= {"user": mode.uid(), "group": mode.uid(), "extra_groups": []}
        return _supervise(argv, popen_kw, files, limits, sandboxed=mode is not None)
    finally:
        files.close()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def _rlimits(limits: Limits, sandboxed: bool) -> list[tuple[str, int, int]]:
    """(name, soft, hard). At the CPU soft limit the kernel sends SIGXCPU (which ends the script, and tells
    us why even where its CPU time is not accounted to us), at the hard limit SIGKILL (a namespace's init
    ignores SIGXCPU)."""
    rl = [
        ("RLIMIT_CPU", limits.cpu_seconds, limits.cpu_seconds + 1),
        ("RLIMIT_AS", limits.memory_bytes, limits.memory_bytes),
        ("RLIMIT_FSIZE", limits.file_bytes, limits.file_bytes),
        ("RLIMIT_CORE", 0, 0),
    ]
    if sandboxed:  # outside a sandbox both count every process / file of this user, not only the program's
        rl += [("RLIMIT_NPROC", limits.processes, limits.processes)]
        rl += [("RLIMIT_NOFILE", limits.open_files, limits.open_files)]
    return rl


def _tmpdir() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="seqdistill-code-")


def _supervise(argv: list[str], popen_kw: dict, files: _Files, limits: Limits, sandboxed: bool) -> SandboxResult:
    """Start ``argv``, wait up to the wall-clock limit, kill the whole tree, collect the result."""
    import subprocess

    keep = tuple(fd for fd in (files.report, files.status, files.seccomp) if fd is not None)
    usage_before = _children_cpu()
    proc = subprocess.Popen(
        argv, stdin=files.stdin, stdout=files.stdout, stderr=files.stderr, pass_fds=keep, **popen_kw
    )
    timed_out = False
    try:
        timed_out = not _wait(proc, limits.wall_seconds)
    finally:
        if proc.returncode is None:  # the wall-clock limit, or an exception (a check timeout) while waiting
            _kill_tree(proc, files, sandboxed)
    cpu = _children_cpu() - usage_before
    status = files.status_lines()
    started = not sandboxed or "child-pid" in status
    code = status.get("exit-code", proc.returncode) if sandboxed else proc.returncode
    if not started:
        outcome, exit_status = "not_started", code
    elif timed_out:
        outcome, exit_status = "timeout", None
    elif code < 0 or (sandboxed and code > 128):  # bwrap reports a child killed by signal N as 128 + N
        outcome, exit_status = "killed", -code if code < 0 else code - 128
    else:
        outcome, exit_status = "exited", code
    limit = "wall time" if timed_out else None
    if outcome == "killed" and (
        exit_status == signal.SIGXCPU or (exit_status == signal.SIGKILL and cpu >= limits.cpu_seconds * 0.9)
    ):
        limit = "cpu time"
    stderr = _read(files.stderr, limits.output_bytes)
    return SandboxResult(
        outcome=outcome,
        exit_status=exit_status,
        limit=limit,
        stdout=_read(files.stdout, limits.output_bytes),
        stderr=stderr,
        report=os.pread(files.report, limits.output_bytes, 0),
        stdout_bytes=os.fstat(files.stdout).st_size,
        stderr_bytes=os.fstat(files.stderr).st_size,
        detail=stderr.strip() if outcome == "not_started" else "",
    )


def _wait(proc, seconds: float) -> bool:
    """Wait for ``proc`` (a pidfd: no polling loop); False when ``seconds`` passed first."""
    pidfd = os.pidfd_open(proc.pid)
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        if not poller.poll(max(int(seconds * 1000), 1)):
            return False
    finally:
        os.close(pidfd)
    proc.wait()
    return True


def _kill_tree(proc, files: _Files, sandboxed: bool) -> None:
    """SIGKILL the sandbox's init (so the kernel kills every process in its PID namespace) and bwrap."""
    if sandboxed:
        child = files.status_lines().get("child-pid")
        if child:
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass
    else:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    proc.kill()
    proc.wait()


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _read(fd: int, limit: int) -> str:
    return os.pread(fd, limit, 0).decode("utf-8", "replace")
