"""Run one Python script from a sandbox directory as a confined, time- and size-limited process.

This is the process half of :class:`~hf_toolssm.tools.code_sandbox.CodeSandbox` (its ``run`` command); the
tool half (files, commands, observations) never starts a process itself. ``docs/sandbox.md`` is the
security model; in short, from the strongest confinement the machine allows down to none:

* **namespaces** (``unshare --net --pid --ipc --mount --mount-proc --fork --kill-child``, needs root):
  the program has no network (a fresh network namespace has only a loopback device, and it is down), sees
  only its own processes, and every process it starts dies with it (the script is PID 1 of its namespace);
* **read-only file system**: inside its mount namespace every mount but the sandbox directory is
  remounted read-only and ``nosuid``, so a write anywhere else fails with ``EROFS``;
* **an unprivileged user** (``nobody``): the program cannot read root-only files, and ``RLIMIT_NPROC``
  (which Linux does not enforce for root) bounds its processes;
* **a cgroup of its own** (``pids`` and ``memory``, cgroup v1 or v2, needs root): the run's processes
  together stay under ``max_processes`` and ``memory_mb``, whatever other runs do at the same time, and
  whatever a run leaves behind is killed at its end;
* **resource limits**, always: address space (``RLIMIT_AS``), CPU seconds, size of every file it writes
  (``RLIMIT_FSIZE``; its output goes to a file, so this caps the output too), open files, no core dumps;
  a wall-clock time limit after which its whole process group is killed.

The first use probes which of these work here (:func:`detect_confinement`) by running a one-line script
under each level, strongest first, and keeps the first that runs it correctly.

The program runs under a small runner (``RUNNER``, stdlib only, passed with ``python -I -S -B -u -c``:
isolated mode, no ``site``, no ``.pyc`` files, unbuffered so stdout and stderr interleave in order). The
runner applies the limits, confines itself, drops privileges, then runs the script as ``__main__``; an
uncaught exception is printed as a compact traceback that lists only the frames inside the sandbox
directory, by relative path, and never the source lines (a frame repeated more than three times in a
row, runaway recursion, is shortened to ``[Previous line repeated N more times]`` as Python does)::

    Traceback (most recent call last):
      main.py:9
      main.py:6
      foo.py:2
    NameError: name 'v10' is not defined

Python's own traceback would show the sandbox's absolute temporary path and, from 3.11 on, carets and
"Did you mean" hints that differ between versions; this form is the same on every machine and version, so
the reference traces can predict it exactly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import grp
import os
import pwd
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# Executed with ``python -I -S -B -u -c RUNNER confine uid gid memory cpu fsize nofile nproc cgroups script``
# (cgroups: the ``cgroup.procs`` files of the run's cgroups, joined by ":", or "-" for none; a limit of -1 keeps
# the caller's).
# Everything up to the privilege drop runs as the caller (root when confining); any failure there exits
# with CONFINEMENT_FAILED before the script runs (fail closed).
RUNNER = r"""
import os, sys, resource

def _confine(read_only, uid, gid, limits, cgroups):
    for procs in cgroups:  # first, while /sys is writable and we are root: every process we start inherits it
        with open(procs, "w") as joining:
            joining.write("0")  # "0": the writing process
    for which, value in limits:
        if value >= 0:  # -1: keep the caller's
            resource.setrlimit(which, (value, value))
    here = os.getcwd()
    if read_only:
        import ctypes  # not re (with enum, 7 ms of every run's start-up): mountinfo's escapes are decoded by hand
        libc = ctypes.CDLL(None, use_errno=True)
        MS_RDONLY, MS_NOSUID, MS_REMOUNT, MS_BIND, MS_REC = 1, 2, 32, 4096, 16384
        def mount(source, target, flags):
            if libc.mount(source, target.encode(), None, flags, None) != 0:
                error = ctypes.get_errno()
                raise OSError(error, os.strerror(error), target)
        mount(here.encode(), here, MS_BIND | MS_REC)  # the sandbox stays writable: its own mount
        os.chdir(here)  # into that mount, not the directory underneath it
        with open("/proc/self/mountinfo") as mounts:
            targets = [line.split()[4] for line in mounts]
        for target in targets:
            # mountinfo writes a space, tab, newline or backslash in a path as a backslash and 3 octal digits
            first, *escaped = target.split("\\")
            target = first + "".join(chr(int(part[:3], 8)) + part[3:] for part in escaped)
            if target != here:
                mount(None, target, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID)
    if uid >= 0:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
        if (os.getuid(), os.geteuid(), os.getgid(), os.getegid()) != (uid, uid, gid, gid):
            raise OSError("could not drop privileges")
    return here

def _report(error, here):
    import itertools
    frames, frame = [], error.__traceback__
    while frame is not None:
        path = frame.tb_frame.f_code.co_filename
        if path.startswith(here + os.sep):
            frames.append("  %s:%d" % (path[len(here) + 1:], frame.tb_lineno))
        frame = frame.tb_next
    lines = ["Traceback (most recent call last):"]
    for line, run in itertools.groupby(frames):  # runaway recursion, shortened as Python does
        count = len(list(run))
        lines += [line] * min(count, 3)
        if count > 3:
            lines.append("  [Previous line repeated %d more times]" % (count - 3))
    try:
        message = str(error)
    except BaseException:  # an exception class whose __str__ raises: its name alone
        message = ""
    if isinstance(error, SyntaxError):
        path = error.filename or ""
        if path.startswith(here + os.sep):
            lines.append("  %s:%s" % (path[len(here) + 1:], error.lineno))
        message = error.msg
    kind = type(error)
    name = kind.__qualname__ if kind.__module__ == "builtins" else kind.__module__ + "." + kind.__qualname__
    lines.append(name + ": " + message if message else name)
    os.write(2, ("\n".join(lines) + "\n").encode("utf-8", "replace"))

def _main():
    confine, uid, gid, memory, cpu, fsize, nofile, nproc = (int(value) for value in sys.argv[1:9])
    cgroups = [] if sys.argv[9] == "-" else sys.argv[9].split(":")
    script = sys.argv[10]
    limits = [
        (resource.RLIMIT_AS, memory), (resource.RLIMIT_CPU, cpu), (resource.RLIMIT_FSIZE, fsize),
        (resource.RLIMIT_NOFILE, nofile), (resource.RLIMIT_NPROC, nproc), (resource.RLIMIT_CORE, 0),
    ]
    try:
        here = _confine(confine, uid, gid, limits, cgroups)
    except BaseException as error:
        os.write(2, ("sandbox: could not confine the program: %r\n" % (error,)).encode())
        os._exit(125)
    sys.argv = [script]
    sys.path.insert(0, here)
    path = os.path.join(here, script)
    try:
        # what runpy.run_path(path, run_name="__main__") does for a source file, without importing runpy (with
        # pkgutil and typing, 13 ms of a run's 23 ms start-up)
        with open(path, "rb") as source:
            code = compile(source.read(), path, "exec")
        main = type(sys)("__main__")
        main.__file__ = path
        sys.modules["__main__"] = main
        exec(code, main.__dict__)
    except SystemExit:
        raise
    except BaseException as error:
        try:
            _report(error, here)
        except BaseException:
            pass
        sys.exit(1)

_main()
"""

#: the runner's exit status when confinement failed (the script did not run)
CONFINEMENT_FAILED = 125

#: the environment the program sees: nothing from ours
CLEAN_ENVIRONMENT = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": "/nonexistent"}

UNSHARE_OPTIONS = ("--net", "--pid", "--ipc", "--mount", "--mount-proc", "--fork", "--kill-child")


@dataclass(frozen=True)
class Limits:
    """What one run may use. Per process except the time limit and the process count."""

    #: wall-clock seconds before the whole process group is killed (CPU time is capped at this + 1 s)
    time_limit: float = 2.0
    #: address space of each process, in MiB (``RLIMIT_AS``), and with a cgroup per run (:class:`Confinement`)
    #: the memory of all the run's processes together
    memory_mb: int = 256
    #: processes of the run (its cgroup's ``pids.max``) or, without a cgroup, of the unprivileged user
    #: (``RLIMIT_NPROC``, shared by every run at the time; not enforced when the program runs as root)
    max_processes: int = 32
    #: bytes of output (stdout and stderr together) kept, and the size cap of any file the program writes
    max_output_bytes: int = 256 * 1024
    max_open_files: int = 64

    def __post_init__(self) -> None:
        if not self.time_limit > 0:
            raise ValueError(f"time_limit must be > 0 seconds, got {self.time_limit!r}")
        for name in ("memory_mb", "max_processes", "max_output_bytes", "max_open_files"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")


@dataclass(frozen=True)
class Confinement:
    """How a program is confined on this machine (see the module docstring and ``docs/sandbox.md``)."""

    #: own network, PID, IPC and mount namespaces: no network, no process outlives the run
    namespaces: bool
    #: every mount but the sandbox directory read-only
    read_only: bool
    #: the uid and gid the program runs as, or ``None`` for the caller's own
    user: tuple[int, int] | None
    #: the interpreter that runs the program
    python: str
    #: where each run gets a cgroup of its own (processes and memory counted per run), or ``None``
    cgroups: CgroupParents | None = None

    def describe(self) -> str:
        parts = ["namespaces (no network, contained processes)" if self.namespaces else "no namespaces"]
        parts.append(
            "read-only file system outside the sandbox" if self.read_only else "writable file system"
        )
        parts.append(f"uid {self.user[0]}" if self.user else f"the caller's uid {os.getuid()}")
        parts.append(f"a cgroup (v{self.cgroups.version}) per run" if self.cgroups else "no cgroup")
        return ", ".join(parts) + f"; {self.python}"


@dataclass(frozen=True)
class CgroupParents:
    """The directories under which each run makes its own cgroup: the ``pids`` and ``memory`` controllers'
    (cgroup v1: two hierarchies), or one directory with both (cgroup v2)."""

    pids: str
    memory: str

    @property
    def version(self) -> int:
        return 2 if self.pids == self.memory else 1


@dataclass(frozen=True)
class ProcessResult:
    #: stdout and stderr as written, interleaved; at most ``max_output_bytes``
    output: bytes
    #: the exit status (negative: killed by that signal); ``None`` when the time limit killed it
    returncode: int | None

    @property
    def timed_out(self) -> bool:
        return self.returncode is None


def run_script(
    directory: str | os.PathLike, script: str, limits: Limits, confinement: Confinement
) -> ProcessResult:
    """Run ``python script`` in ``directory`` under ``confinement`` and ``limits``; never raises for
    anything the script does (an ``OSError`` means the process could not be started at all)."""
    with (
        tempfile.TemporaryFile() as output,  # unlinked: the program only ever holds the descriptor
        _run_cgroup(confinement.cgroups, limits) as cgroup_procs,
    ):
        process = subprocess.Popen(
            _command(script, limits, confinement, cgroup_procs),
            cwd=directory,
            env=CLEAN_ENVIRONMENT,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, killed as a whole
            close_fds=True,
        )
        timed_out = not _wait_unreaped(process.pid, limits.time_limit)
        # read while unshare lives: once it is dead its child is another process's
        namespace_init = _children(process.pid) if confinement.namespaces else []
        # Still unreaped, so the group id cannot have been reused: kill whatever the program left behind
        # (everything, on a timeout; in a PID namespace the kernel already did on a normal exit). unshare goes
        # first: killed after its child, it would print its own complaint into the program's output.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        for pid in namespace_init:  # and the namespace with its init, which left the group if it called setsid()
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        returncode = process.wait()
        output.seek(0)
        data = output.read(limits.max_output_bytes)
    return ProcessResult(data, None if timed_out else returncode)


def _children(pid: int) -> list[int]:
    """The child processes of ``pid``. For unshare: its PID namespace's init, which is the script; killing it
    kills every process of the namespace. The process-group kill alone misses the script once it has left the
    group (``os.setsid()``), and unshare's ``--kill-child`` death signal is void by then: Linux clears it when
    the runner drops its privileges. Without a cgroup to empty, this is what stops a timed-out run. On a
    normal exit the init is gone already and the list is empty."""
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:  # a kernel without CONFIG_PROC_CHILDREN: find the children by their parent
        return [int(entry.name) for entry in Path("/proc").iterdir() if _parent(entry) == pid]


def _parent(proc_entry: Path) -> int | None:
    """The parent pid in ``/proc/PID/stat`` ("pid (comm) state ppid ...", where comm may hold ")"), or None."""
    try:
        return int(proc_entry.joinpath("stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):  # not a process, or it just exited
        return None


def _wait_unreaped(pid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for ``pid`` to exit without reaping it; ``True`` if it exited.

    Woken by the exit itself through a pidfd (Linux 5.3+), which turns readable when the process exits and does
    not reap it; elsewhere :func:`_poll_unreaped`. A coding decode runs a program per ``run`` command, and the
    polling's sleeps overshot each exit by up to 20 ms (``toolssm bench sandbox``)."""
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # no pidfd_open (not Linux, old kernel, seccomp)
        return _poll_unreaped(pid, timeout)
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        return bool(poller.poll(max(timeout, 0.0) * 1000))  # ms; retried on signals with the time left (PEP 475)
    finally:
        os.close(pidfd)


def _poll_unreaped(pid: int, timeout: float) -> bool:
    """:func:`_wait_unreaped` by polling ``waitid(WNOWAIT)`` with sleeps growing to 20 ms (its plain twin)."""
    deadline, pause = time.monotonic() + timeout, 0.001
    while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(pause, left))
        pause = min(pause * 2, 0.02)
    return True


def _command(script: str, limits: Limits, confinement: Confinement, cgroup_procs: list[str]) -> list[str]:
    uid, gid = confinement.user if confinement.user else (-1, -1)
    memory = limits.memory_mb * 2**20
    cpu = int(limits.time_limit) + 1
    # With a cgroup the run's own pids.max counts its processes (RLIMIT_NPROC, kept as the caller's, would count
    # every run of the user together)
    nproc = -1 if cgroup_procs else limits.max_processes
    arguments = [
        str(int(confinement.read_only)), str(uid), str(gid), str(memory), str(cpu),
        str(limits.max_output_bytes), str(limits.max_open_files), str(nproc), ":".join(cgroup_procs) or "-", script,
    ]  # fmt: skip
    python = [confinement.python, "-I", "-S", "-B", "-u", "-c", RUNNER, *arguments]
    return [_unshare(), *UNSHARE_OPTIONS, *python] if confinement.namespaces else python


def _unshare() -> str:
    return shutil.which("unshare", path="/usr/bin:/bin:/usr/sbin:/sbin") or "unshare"


# --- a cgroup per run ------------------------------------------------------------------------------------
CGROUP_ROOT = "/sys/fs/cgroup"


@contextlib.contextmanager
def _run_cgroup(parents: CgroupParents | None, limits: Limits) -> Iterator[list[str]]:
    """A fresh cgroup for one run, limited to ``max_processes`` processes and ``memory_mb`` of memory in all;
    yields the ``cgroup.procs`` files the runner joins (none without ``parents``). At the end whatever the run
    left in it is killed (a daemon, where there is no PID namespace) and the cgroup is removed."""
    if parents is None:
        yield []
        return
    name = f"run_{uuid.uuid4().hex}"
    pids, memory = os.path.join(parents.pids, name), os.path.join(parents.memory, name)
    made = []
    try:
        for directory in dict.fromkeys([pids, memory]):
            os.mkdir(directory, 0o700)
            made.append(directory)
        budget = limits.memory_mb * 2**20
        _write(pids, "pids.max", limits.max_processes)
        if parents.version == 1:
            _write(memory, "memory.limit_in_bytes", budget)
            _write(memory, "memory.memsw.limit_in_bytes", budget, missing_ok=True)  # and no swapping past it
        else:
            _write(memory, "memory.max", budget)
            _write(memory, "memory.swap.max", 0, missing_ok=True)
        yield [os.path.join(directory, "cgroup.procs") for directory in made]
    finally:
        for directory in made:
            _kill_and_remove(directory)


def _write(directory: str, name: str, value: int | str, missing_ok: bool = False) -> None:
    try:
        with open(os.path.join(directory, name), "w") as control:
            control.write(str(value))
    except FileNotFoundError:
        if not missing_ok:
            raise


def _kill_and_remove(directory: str, patience: float = 2.0) -> None:
    """Kill every process left in the cgroup ``directory`` and remove it; a cgroup that will not go in
    ``patience`` seconds (a process stuck in the kernel) is left behind, empty of anything that runs code."""
    deadline = time.monotonic() + patience
    while True:
        with contextlib.suppress(OSError):
            os.rmdir(directory)
            return
        if time.monotonic() > deadline:
            return
        with contextlib.suppress(OSError):
            for pid in Path(directory, "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        time.sleep(0.005)


def _cgroup_parents() -> CgroupParents | None:
    """Where runs can get cgroups of their own on this machine (``CGROUP_ROOT/hf_toolssm``, made here), or
    ``None``: cgroup v2 with the ``pids`` and ``memory`` controllers available to children of the root, or v1
    with both controllers mounted; root only."""
    try:
        if os.path.exists(os.path.join(CGROUP_ROOT, "cgroup.controllers")):  # v2, one hierarchy
            offered = Path(CGROUP_ROOT, "cgroup.subtree_control").read_text().split()
            if not {"pids", "memory"} <= set(offered):
                return None
            parent = os.path.join(CGROUP_ROOT, "hf_toolssm")
            os.makedirs(parent, exist_ok=True)
            _write(parent, "cgroup.subtree_control", "+pids +memory")
            return CgroupParents(parent, parent)
        parents = []
        for controller in ("pids", "memory"):  # v1: a hierarchy per controller
            if not os.path.exists(os.path.join(CGROUP_ROOT, controller, "cgroup.procs")):
                return None
            parents.append(os.path.join(CGROUP_ROOT, controller, "hf_toolssm"))
            os.makedirs(parents[-1], exist_ok=True)
        return CgroupParents(*parents)
    except OSError:
        return None


# --- what this machine allows --------------------------------------------------------------------------
def _world_usable(path: str) -> bool:
    """Whether an unprivileged user can execute ``path`` and traverse every directory above it (an
    interpreter under a root-only home, e.g. pyenv in /root, cannot import its own standard library)."""
    path = os.path.realpath(path)
    try:
        if not os.stat(path).st_mode & stat.S_IXOTH:
            return False
        parent = os.path.dirname(path)
        while True:
            if not os.stat(parent).st_mode & stat.S_IXOTH:
                return False
            if parent == os.path.dirname(parent):
                return True
            parent = os.path.dirname(parent)
    except OSError:
        return False


def _unprivileged_user() -> tuple[int, int] | None:
    try:
        user = pwd.getpwnam("nobody")
    except KeyError:
        return None
    try:
        gid = grp.getgrnam("nogroup").gr_gid
    except KeyError:
        gid = user.pw_gid
    return user.pw_uid, gid


def _candidates(python: str | None) -> list[Confinement]:
    """Confinement levels worth trying, strongest first."""
    own = os.path.realpath(python or sys.executable)
    levels = []
    if os.geteuid() == 0:
        nobody = _unprivileged_user()
        usable = [own] if python else [own, shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")]
        shared = next((path for path in usable if path and _world_usable(path)), None)
        has_unshare = shutil.which("unshare", path="/usr/bin:/bin:/usr/sbin:/sbin") is not None
        if nobody and shared:
            if has_unshare:
                levels.append(Confinement(True, True, nobody, os.path.realpath(shared)))
            levels.append(Confinement(False, False, nobody, os.path.realpath(shared)))
        if has_unshare:
            levels.append(Confinement(True, True, None, own))
        cgroups = _cgroup_parents()
        if cgroups is not None:  # every level with a cgroup per run first, then the same without
            levels = [level for plain in levels for level in (dataclasses.replace(plain, cgroups=cgroups), plain)]
    levels.append(Confinement(False, False, None, own))
    return levels


@functools.cache
def detect_confinement(python: str | None = None) -> Confinement:
    """The strongest confinement that runs a script correctly here (probed once per interpreter).

    ``python`` picks the interpreter; by default the current one, or, when the program is to run as an
    unprivileged user who cannot use the current one, the system's ``python3``.
    """
    candidates = _candidates(python)
    for confinement in candidates[:-1]:
        if _probe(confinement):
            return confinement
    return candidates[-1]


def _probe(confinement: Confinement) -> bool:
    directory = Path(tempfile.mkdtemp(prefix="hf_toolssm_probe_"))
    try:
        work = directory / "work"
        work.mkdir()
        (work / "probe.py").write_text("import json\nprint(json.dumps('ok'))\n")
        if confinement.user:
            os.chmod(directory, 0o711)
            os.chown(work, *confinement.user)
        result = run_script(work, "probe.py", Limits(time_limit=10.0), confinement)
        return result.returncode == 0 and result.output == b'"ok"\n'
    except OSError:
        return False
    finally:
        shutil.rmtree(directory, ignore_errors=True)
