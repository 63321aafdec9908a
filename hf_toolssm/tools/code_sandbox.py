"""The code sandbox: a private directory of source files the model reads, edits and runs (paper §2.4).

The paper's coding agents work through mini-SWE-agent's bash. A character-level model needs a smaller,
exactly specified surface, so this tool has six commands, one ``[code]`` command token with a plain-text
argument (``docs/protocol.md`` §5)::

    [code] ls [/cmd]                     the file names, one per line, sorted (directories end in "/";
                                         at most 200, then "... and N more")
    [code] cat FILE [/cmd]               the file with numbered lines, "N:text", as cat -n would number them
    [code] cat FILE FILE ... [/cmd]      several files, each after a "==> FILE <==" line
    [code] cat * [/cmd]                  every file cat can show (links, directories, oversized files skipped)
    [code] replace FILE N TEXT [/cmd]    line N of FILE becomes TEXT (everything after the third space, so
                                         leading spaces are kept; a "\\n" in TEXT makes several lines)
    [code] open FILE [/cmd]              FILE becomes the open file, shown as cat shows it
    [code] open FILE:N [/cmd]            the same with line N marked "N>text" (a traceback frame as printed)
    [code] edit N TEXT [/cmd]            line N of the open file becomes TEXT (as replace)
    [code] run [/cmd]                    python main.py: its output, then a status line

``open`` and ``edit`` are SWE-agent's editor interface: an agent that opens the file a traceback names
and edits it never has to write a file name it read long ago, and the mark shows the line the frame
points at beside the text. Every observation is ``[OBS] text [/OBS]``, one token per character;
``replace`` and ``edit`` answer ``[OBS][/OBS]``. A mistake (unknown command, bad file name, line out of
range, no such file, ``edit`` with no open file) answers ``[OBS][ERR]message[/OBS]`` and changes
nothing; the tool never raises. The ``run`` observation is the program's output (stdout
and stderr interleaved; an uncaught exception as the compact traceback of
:mod:`~hf_toolssm.tools.sandbox_process`), then the status line::

    exit 0 hash 1f0c3a9e        exited with status 0; the hash is the first 8 hex digits of the sha256 of
                                everything it printed
    timeout hash e3b0c442       killed at the time limit
    signal 9 hash e3b0c442      killed by a signal

Output longer than ``max_output_chars`` keeps its last ``max_output_chars`` characters after a line
``... (N characters cut)`` (the end of a failing program's output is the informative part); the hash
covers all of it. Characters the tokenizer does not have (anything but ``"\\n"`` and printable ASCII) are
shown as ``?``.

**Files.** A sandbox is built either with fixed ``files`` (a name -> text mapping) or with a ``checkout``
callable that maps the first line of the prompt (e.g. ``repo 12-3829103``) to the files. The second form
is what makes per-instance codebases work with one shared environment factory (``task.make_environment``
in evaluation and generation): the tool reads the repository name from memory at its first command, as
an agent harness checks out the repository the task names. File names are flat (no directories):
letters, digits, ``_ . -``, not starting with ``.`` or ``-``, at most 64 characters.

**State.** Each instance owns one private temporary directory, created at the first command after
:meth:`reset` and removed at the next :meth:`reset`, :meth:`close`, garbage collection or interpreter
exit (``weakref.finalize``). File commands only ever open a plain regular file directly inside it: names
are validated, opened relative to the directory with ``O_NOFOLLOW``, and anything that is not a regular
file whose every link is in the directory (a symlink, a hard link to an outside file, a FIFO, a directory the
program made) is refused. ``run`` executes ``python main.py`` confined (``docs/sandbox.md``); a run that
leaves more than 16 MiB or 1,000 entries in the directory has it put back as it was before the run.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import secrets
import shutil
import stat
import subprocess
import tempfile
import time
import weakref
from collections.abc import Callable, Iterable, Mapping

from .base import OBS_CLOSE, OBS_OPEN, Memory, Tool, error_observation
from .sandbox_process import Confinement, Limits, ProcessResult, detect_confinement, run_script

CODE = "[code]"

#: the program ``run`` executes
ENTRY_POINT = "main.py"

COMMANDS = ("ls", "cat", "replace", "open", "edit", "run")

_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}", re.ASCII)

#: what a program may leave in its directory; a run that leaves more has the directory put back as it was before
MAX_WORKSPACE_BYTES = 16 * 2**20
MAX_WORKSPACE_ENTRIES = 1000
#: the most names an ``ls`` observation lists
MAX_LS_NAMES = 200
#: a sandbox's temporary directory is ``PREFIX + pid + "_" + random``: the pid finds those a killed process left
WORKSPACE_PREFIX = "hf_toolssm_code_"
_PRINTABLE = re.compile(r"[^\n\x20-\x7e]")

#: a callable that maps the prompt's first line to the codebase's files (raise ``ValueError`` if unknown)
Checkout = Callable[[str], Mapping[str, str]]


def output_hash(output: bytes) -> str:
    """The 8 hex digits the ``run`` status line shows for a program that printed ``output``."""
    return hashlib.sha256(output).hexdigest()[:8]


def status_line(output: bytes, returncode: int | None) -> str:
    """``exit N hash H``, ``timeout hash H`` or ``signal N hash H`` (see the module docstring)."""
    if returncode is None:
        status = "timeout"
    elif returncode < 0:
        status = f"signal {-returncode}"
    else:
        status = f"exit {returncode}"
    return f"{status} hash {output_hash(output)}"


def printable(text: str) -> str:
    """``text`` with every character outside the tokenizer's alphabet (``"\\n"``, ASCII 32..126) as ``?``."""
    return _PRINTABLE.sub("?", text)


def run_observation_text(output: bytes, returncode: int | None, max_output_chars: int = 4000) -> str:
    """The text of a ``run`` observation: the (tail of the) output, then the status line."""
    text = printable(output.decode("utf-8", errors="replace"))
    if len(text) > max_output_chars:
        text = f"... ({len(text) - max_output_chars} characters cut)\n" + text[-max_output_chars:]
    if text and not text.endswith("\n"):
        text += "\n"
    return text + status_line(output, returncode)


def numbered(text: str, mark: int | None = None) -> str:
    """A file as ``cat`` shows it: ``N:line`` for every line, joined by newlines (no final newline); line
    ``mark`` (``open FILE:N``) as ``N>line``."""
    return "\n".join(
        f"{number}{'>' if number == mark else ':'}{line}" for number, line in enumerate(_lines(text), 1)
    )


def _lines(text: str) -> list[str]:
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # the newline that ends the last line does not start another
    return lines


def cat_text(files: Mapping[str, str] | Iterable[tuple[str, str]]) -> str:
    """What ``cat`` shows for several files (``cat *`` or ``cat A B``): each file's name line, then its
    numbered lines, in the given order."""
    shown = []
    for name, text in files.items() if isinstance(files, Mapping) else files:
        shown += [f"==> {name} <==", numbered(text)] if text else [f"==> {name} <=="]
    return "\n".join(shown)


class SandboxError(Exception):
    """A command the tool refuses; its message becomes ``[OBS][ERR]message[/OBS]``."""


def remove_tree(path: str) -> None:
    """Delete ``path`` and everything in it, however deep: a program can nest directories past Python's recursion
    limit in a fraction of a second, and ``shutil.rmtree`` recurses once per level before Python 3.12, so those
    go to ``rm -rf``, which walks any depth. Never raises."""
    try:
        shutil.rmtree(path)
        return
    except FileNotFoundError:
        return
    except (OSError, RecursionError):
        pass
    with contextlib.suppress(OSError):
        subprocess.run(["rm", "-rf", "--one-file-system", "--", path], check=False, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@functools.cache
def remove_orphaned_workspaces(older_than_s: float = 3600.0) -> None:
    """Delete the directories of sandboxes whose process is gone (killed before its finalizers ran) and that were
    last changed over ``older_than_s`` ago: a live sandbox's directory is remade at each reset, so it is young, and
    the age guards against another PID namespace's live process with the same pid. Once per process."""
    now = time.time()
    with contextlib.suppress(OSError), os.scandir(tempfile.gettempdir()) as listing:
        for entry in listing:
            pid = entry.name[len(WORKSPACE_PREFIX):].partition("_")[0]
            if not (entry.name.startswith(WORKSPACE_PREFIX) and pid.isdigit()) or int(pid) == os.getpid():
                continue
            with contextlib.suppress(OSError):
                info = entry.stat(follow_symlinks=False)
                if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or now - info.st_mtime < older_than_s:
                    continue
                try:
                    os.kill(int(pid), 0)
                    continue  # alive (or another user's)
                except ProcessLookupError:
                    remove_tree(entry.path)
                except PermissionError:
                    continue


def _usage(top: str, max_entries: int, max_bytes: int) -> tuple[int, int] | None:
    """(entries, bytes) under ``top``, walked without recursion and without following links; None as soon as
    either passes its maximum, or for a tree too deep to walk by path (over the budget: fail closed)."""
    entries = size = 0
    pending = [top]
    while pending:
        try:
            with os.scandir(pending.pop()) as listing:
                for entry in listing:
                    info = entry.stat(follow_symlinks=False)
                    entries, size = entries + 1, size + info.st_size
                    if entries > max_entries or size > max_bytes:
                        return None
                    if stat.S_ISDIR(info.st_mode):
                        pending.append(entry.path)
        except OSError:  # a path past PATH_MAX, or a directory the program locked
            return None
    return entries, size


class _Workspace:
    """One private directory: ``base`` (ours, traversable only) holds ``work_SECRET`` (the program's). Every
    program runs as the same user, so the secret name is what keeps one sandbox's program from reading another's
    files: the ``0711`` base lets it enter a directory it can name, not list one."""

    def __init__(self, files: Mapping[str, str], confinement: Confinement, max_file_bytes: int):
        remove_orphaned_workspaces()
        self.confinement = confinement
        self.max_file_bytes = max_file_bytes
        self.base = tempfile.mkdtemp(prefix=f"{WORKSPACE_PREFIX}{os.getpid()}_")
        self._finalizer = weakref.finalize(self, remove_tree, self.base)
        self.path = os.path.join(self.base, f"work_{secrets.token_hex(8)}")
        self._fill(files)

    def _fill(self, files: Mapping[str, str]) -> None:
        os.mkdir(self.path, 0o755)
        if self.confinement.user:  # the program's user may enter base and write in work, nothing else
            os.chmod(self.base, 0o711)
            os.chown(self.path, *self.confinement.user)
        for name, text in files.items():
            check_file_name(name)
            self.write(name, text)

    def within_budget(self) -> bool:
        return _usage(self.path, MAX_WORKSPACE_ENTRIES, MAX_WORKSPACE_BYTES) is not None

    def restore(self, files: Mapping[str, str]) -> None:
        """Put the directory back to exactly ``files``."""
        remove_tree(self.path)
        self._fill(files)

    def close(self) -> None:
        self._finalizer()

    # Every access is relative to the work directory and refuses anything but a plain regular file.
    def names(self) -> list[str]:
        """What ``ls`` lists: directories (with a "/") and regular files, whose names are valid file names."""
        names = []
        for entry in sorted(os.scandir(self.path), key=lambda entry: entry.name):
            if not _FILE_NAME.fullmatch(entry.name):  # "a\nb.py" would read as two entries
                continue
            if entry.is_dir(follow_symlinks=False):
                names.append(entry.name + "/")
            elif entry.is_file(follow_symlinks=False):
                names.append(entry.name)
        return names

    def files(self) -> list[str]:
        """The names ``cat *`` shows: regular files with a valid name."""
        return [name for name in self.names() if not name.endswith("/")]

    def read(self, name: str) -> str:
        check_file_name(name)
        path = os.path.join(self.path, name)
        try:
            descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise SandboxError(f"no such file {name}") from None
        except OSError:
            raise SandboxError(f"not a regular file {name}") from None
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode) or (info.st_nlink != 1 and not self._links_all_inside(info)):
            os.close(descriptor)
            raise SandboxError(f"not a regular file {name}")
        with os.fdopen(descriptor, "rb") as file:
            data = file.read(self.max_file_bytes + 1)
        if len(data) > self.max_file_bytes:
            raise SandboxError(f"file too large {name}")
        return data.decode("utf-8", errors="replace")

    def _links_all_inside(self, info: os.stat_result) -> bool:
        """Whether every hard link of this file is an entry of the directory (the program linked one of its own
        files, ``os.link("main.py", "backup.py")``), not a link to a file outside it."""
        inside = 0
        with os.scandir(self.path) as listing:
            for entry in listing:
                with contextlib.suppress(OSError):
                    found = entry.stat(follow_symlinks=False)
                    inside += (found.st_dev, found.st_ino) == (info.st_dev, info.st_ino)
        return inside == info.st_nlink

    def write(self, name: str, text: str) -> None:
        """Replace ``name`` by a new file (a new inode: a link the program planted is replaced, not followed)."""
        try:
            data = text.encode()
        except UnicodeEncodeError:  # a lone surrogate: only the Python API can pass one, the tokenizer cannot
            raise SandboxError(f"text for {name} is not valid unicode") from None
        if len(data) > self.max_file_bytes:
            raise SandboxError(f"file too large {name}")
        descriptor, temporary = tempfile.mkstemp(prefix=".replace_", dir=self.path)  # O_EXCL, a fresh name
        try:
            with os.fdopen(descriptor, "wb") as file:
                file.write(data)
                os.fchmod(file.fileno(), 0o644)
                if self.confinement.user:
                    os.fchown(file.fileno(), *self.confinement.user)
            os.replace(temporary, os.path.join(self.path, name))
        except BaseException:
            if os.path.lexists(temporary):
                os.unlink(temporary)
            raise


def _line_number(text: str, lines: int) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 9:  # "²".isdigit(), but int("²") fails
        raise SandboxError(f"bad line number {text[:16]}")
    if not 1 <= int(text) <= lines:
        raise SandboxError(f"line {int(text)} out of range 1..{lines}")
    return int(text)


def check_file_name(name: str) -> None:
    if not _FILE_NAME.fullmatch(name):
        raise SandboxError(f"bad file name {name[:64]}")


class CodeSandbox(Tool):
    """The ``[code]`` command: ``ls``, ``cat``, ``replace``, ``open``, ``edit`` and ``run`` on a private copy
    of a codebase.

    Args:
        files: the codebase, file name -> text; used when ``checkout`` is not given (default: empty).
        checkout: maps the prompt's first line to the codebase (see the module docstring).
        time_limit, memory_mb, max_processes: limits of one ``run`` (:class:`~.sandbox_process.Limits`).
        max_output_chars: output characters a ``run`` observation shows (its tail).
        max_file_bytes: the largest file ``cat`` and ``replace`` handle.
        python: the interpreter for ``run`` (default: see :func:`~.sandbox_process.detect_confinement`).
    """

    name = "code"

    def __init__(
        self,
        files: Mapping[str, str] | None = None,
        checkout: Checkout | None = None,
        *,
        time_limit: float = 2.0,
        memory_mb: int = 256,
        max_processes: int = 32,
        max_output_chars: int = 4000,
        max_file_bytes: int = 64 * 1024,
        python: str | None = None,
    ):
        if files is not None and checkout is not None:
            raise ValueError("CodeSandbox takes files or checkout, not both")
        for name in files or {}:
            check_file_name(name)
        if max_output_chars < 1 or max_file_bytes < 1:
            raise ValueError("max_output_chars and max_file_bytes must be positive")
        self.initial_files = dict(files or {})
        self.checkout = checkout
        self.limits = Limits(time_limit=time_limit, memory_mb=memory_mb, max_processes=max_processes)
        self.max_output_chars = max_output_chars
        self.max_file_bytes = max_file_bytes
        self.python = python
        self._workspace: _Workspace | None = None
        self._open_file: str | None = None  # what ``edit`` edits: the last file ``open`` showed

    # --- the Tool interface ---------------------------------------------------------------------------
    def command_tokens(self) -> list[str]:
        return [CODE]

    def argument_commands(self) -> set[str]:
        return {CODE}

    def reset(self) -> None:
        self.close()

    def blocks(self, command: str, argument: list[str]) -> bool:
        return command == CODE and "".join(argument) == "run"  # a program; the other commands are file edits

    def run(self, command: str, argument: list[str], memory: Memory) -> list[str]:
        try:
            if command != CODE:
                raise SandboxError(f"unknown command {command}")
            if any(len(token) != 1 for token in argument):
                raise SandboxError("argument must be plain characters")
            text = self._execute("".join(argument), memory)
        except SandboxError as error:
            return error_observation(str(error))
        except OSError as error:  # the machine, not the model: a full disk, no temporary directory
            return error_observation(f"sandbox error: {error.strerror or type(error).__name__}")
        return [OBS_OPEN, *printable(text), OBS_CLOSE]

    # --- commands -------------------------------------------------------------------------------------
    def _execute(self, text: str, memory: Memory) -> str:
        word, _, rest = text.partition(" ")
        if not word:
            raise SandboxError("empty command" if not text else "command must not start with a space")
        if word not in COMMANDS:
            raise SandboxError(f"unknown command {word[:32]}; commands: {', '.join(COMMANDS)}")
        workspace = self.workspace(memory)
        if word == "ls":
            if rest:
                raise SandboxError("usage: ls")
            names = workspace.names()
            more = [f"... and {len(names) - MAX_LS_NAMES} more"] if len(names) > MAX_LS_NAMES else []
            return "\n".join(names[:MAX_LS_NAMES] + more)
        if word == "cat":
            return self._cat(workspace, rest)
        if word == "replace":
            parts = rest.split(" ", 2)
            if len(parts) < 3:
                raise SandboxError("usage: replace FILE LINE TEXT")
            return self._replace(workspace, *parts)
        if word == "open":
            return self._open(workspace, rest)
        if word == "edit":
            line, space, new_text = rest.partition(" ")
            if not space:
                raise SandboxError("usage: edit LINE TEXT")
            if self._open_file is None:
                raise SandboxError("no open file: open FILE first")
            return self._replace(workspace, self._open_file, line, new_text)
        if rest:
            raise SandboxError("usage: run")
        before = self.files()
        result = run_script(workspace.path, ENTRY_POINT, self.limits, workspace.confinement)
        text = run_observation_text(result.output, result.returncode, self.max_output_chars)
        if not workspace.within_budget():  # disk is the one resource the process limits do not bound across runs
            workspace.restore(before)
            text += (f"\n[the run left over {MAX_WORKSPACE_BYTES // 2**20} MiB or {MAX_WORKSPACE_ENTRIES:,} entries: "
                     "the files are back as before it]")
        return text

    def _cat(self, workspace: _Workspace, rest: str) -> str:
        names = rest.split(" ") if rest else []
        if not names or "" in names:
            raise SandboxError("usage: cat FILE... or cat *")
        if names == ["*"]:  # every file that reads as a codebase file (what files() returns), the rest skipped
            return cat_text(self.files().items())
        if len(names) == 1:
            return numbered(workspace.read(names[0]))
        return cat_text([(name, workspace.read(name)) for name in names])

    def _open(self, workspace: _Workspace, rest: str) -> str:
        name, colon, line = rest.partition(":")  # a file name has no ":"
        if not name:
            raise SandboxError("usage: open FILE or open FILE:LINE")
        check_file_name(name)
        text = workspace.read(name)
        mark = _line_number(line, len(_lines(text))) if colon else None
        self._open_file = name
        return numbered(text, mark)

    def _replace(self, workspace: _Workspace, name: str, line: str, new_text: str) -> str:
        check_file_name(name)
        text = workspace.read(name)
        lines = _lines(text) or [""]  # an empty file has a line 1 to write
        lines[_line_number(line, len(lines)) - 1] = new_text
        workspace.write(name, "\n".join(lines) + ("\n" if text.endswith("\n") else ""))
        return ""

    # --- the directory --------------------------------------------------------------------------------
    def workspace(self, memory: Memory | None = None) -> _Workspace:
        """This sequence's directory, created (and the codebase checked out) on first use."""
        if self._workspace is None:
            if self.checkout is not None:
                first_line = "".join(memory.lines()[0]) if memory is not None else ""
                try:
                    files = dict(self.checkout(first_line))
                except ValueError:
                    raise SandboxError("no codebase: the prompt names no repository") from None
            else:
                files = self.initial_files
            self._workspace = _Workspace(files, self.confinement(), self.max_file_bytes)
        return self._workspace

    def confinement(self) -> Confinement:
        """How ``run`` confines programs on this machine (probed once per process)."""
        return detect_confinement(self.python)

    def files(self) -> dict[str, str]:
        """The codebase as it stands: every regular file of the directory (the initial files before the
        first command). What a checker runs after a decode."""
        if self._workspace is None:
            return dict(self.initial_files)
        files = {}
        for name in self._workspace.files():
            # a link or an oversized file the program made: not part of the codebase
            with contextlib.suppress(SandboxError):
                files[name] = self._workspace.read(name)
        return files

    def close(self) -> None:
        """Remove the directory now (a later command starts over from the initial codebase)."""
        self._open_file = None
        if self._workspace is not None:
            self._workspace.close()
            self._workspace = None

    def __repr__(self) -> str:
        if self.checkout is not None:
            source = f"checkout={getattr(self.checkout, '__name__', type(self.checkout).__name__)}"
        else:
            source = f"files={len(self.initial_files)}"
        return (
            f"CodeSandbox({source}, time_limit={self.limits.time_limit}, memory_mb={self.limits.memory_mb})"
        )


def run_files(
    files: Mapping[str, str], *, time_limit: float = 2.0, python: str | None = None
) -> ProcessResult:
    """Run ``python main.py`` over ``files`` in a throw-away sandbox: what a checker does."""
    sandbox = CodeSandbox(files, time_limit=time_limit, python=python)
    try:
        workspace = sandbox.workspace()
        return run_script(workspace.path, ENTRY_POINT, sandbox.limits, workspace.confinement)
    finally:
        sandbox.close()
