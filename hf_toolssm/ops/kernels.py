"""Which optional compiled kernels may this call use?

Two families, both optional and both decided **per call** (never per process), so that one process can
hold a CPU model and a GPU model side by side:

- the fused CUDA kernels of ``mamba-ssm`` and ``causal-conv1d``: used when the tensor is on CUDA and the
  package imports. Both are source-only on PyPI and fail to import without CUDA, so any exception on import
  means "not available".
- our fused CPU extension (``csrc/selective_scan.cpp``: the selective scan, forward and backward, and the
  one-token mixer step of ``mamba_step.py``), compiled once with ``torch.utils.cpp_extension`` on first use
  and cached by torch. If the compiler is missing or the build fails we fall back to pure PyTorch and say so
  once.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import platform
import signal
import threading
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import torch


@functools.cache
def mamba_ssm_kernels() -> SimpleNamespace | None:
    """The mamba-ssm CUDA ops, or None if the package does not import."""
    try:
        from mamba_ssm.ops.selective_scan_interface import mamba_inner_fn, selective_scan_fn
        from mamba_ssm.ops.triton.selective_state_update import selective_state_update
    except Exception:  # ImportError, missing CUDA libraries, a Triton failure: all mean "not here"
        return None
    return SimpleNamespace(
        selective_scan_fn=selective_scan_fn,
        selective_state_update=selective_state_update,
        mamba_inner_fn=mamba_inner_fn,
    )


@functools.cache
def causal_conv1d_kernels() -> SimpleNamespace | None:
    """The causal-conv1d CUDA ops, or None if the package does not import."""
    try:
        from causal_conv1d import causal_conv1d_fn, causal_conv1d_update
    except Exception:
        return None
    return SimpleNamespace(causal_conv1d_fn=causal_conv1d_fn, causal_conv1d_update=causal_conv1d_update)


def on_cuda(*tensors: torch.Tensor | None) -> bool:
    return all(t is None or t.is_cuda for t in tensors) and any(t is not None for t in tensors)


def use_mamba_ssm(*tensors: torch.Tensor | None) -> SimpleNamespace | None:
    """The mamba-ssm kernels if this call's tensors live on CUDA and the package imports, else None."""
    return mamba_ssm_kernels() if on_cuda(*tensors) else None


def use_causal_conv1d(*tensors: torch.Tensor | None) -> SimpleNamespace | None:
    return causal_conv1d_kernels() if on_cuda(*tensors) else None


def require(kernels: SimpleNamespace | None, caller: str, package: str) -> SimpleNamespace:
    """``kernels``, or a clear error for a caller that names a CUDA path directly (the dispatchers never do
    without them)."""
    if kernels is None:
        raise RuntimeError(
            f"{caller}: needs CUDA tensors and the {package} package (in the project folder, on a machine with "
            "CUDA: MAMBA_FORCE_BUILD=TRUE CAUSAL_CONV1D_FORCE_BUILD=TRUE pip install --no-build-isolation -e "
            "'.[cuda]'); the dispatching functions (selective_scan_fn, causal_conv1d_fn) fall back to the CPU "
            "paths by themselves"
        )
    return kernels


def env_flag(name: str) -> bool:
    """A switch in the environment: on unless unset, empty, ``0``, ``false`` or ``no``."""
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def _cpu_fingerprint() -> str:
    """A short hash of this CPU's instruction sets: a ``-march=native`` build only runs where they all exist,
    so the build cache (shared by every machine that shares a home folder) is keyed on them."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
        flags = next(line for line in cpuinfo if line.startswith(("flags", "Features")))
    except (OSError, StopIteration):  # not Linux: the architecture and processor name are what we have
        flags = f"{platform.machine()} {platform.processor()}"
    return hashlib.sha1(flags.encode()).hexdigest()[:10]


def _extension_source() -> str:
    """The C++ source: ``csrc/selective_scan.cpp`` in the package. A Hub checkpoint's remote code has no
    ``csrc`` folder (transformers copies only Python modules into its module cache), so there
    ``export_remote_code`` ships the source as the module ``selective_scan_source``."""
    beside = Path(__file__).with_name("csrc") / "selective_scan.cpp"
    if beside.is_file():
        return beside.read_text()
    from .selective_scan_source import SOURCE

    return SOURCE


def _build_directory(name: str) -> Path | None:
    """Where ``load_inline`` builds ``name`` (torch's extension cache), or None if that cannot be told."""
    try:
        from torch.utils.cpp_extension import _get_build_directory  # private, but where load_inline looks

        return Path(_get_build_directory(name, verbose=False))
    except Exception:
        return None


def _built_before(name: str) -> bool:
    """Whether torch's extension cache holds a build of ``name`` (else ``load_inline`` compiles it)."""
    directory = _build_directory(name)
    return directory is None or any(directory.glob(f"{name}*.so"))  # cannot tell: assume built, say nothing


#: A build lock older than this is a killed build's: a build of the extension takes about a minute
STALE_BUILD_LOCK_S = 600


def _clear_stale_build_lock(name: str) -> None:
    """torch marks a build in progress with a ``lock`` file, removed in a ``finally``: a process killed by a
    signal other than SIGINT (``kill``, ``timeout``, the end of a session) leaves it, and every later load waits
    for it forever, silently. Say so, and delete a lock old enough to be a killed build's."""
    directory = _build_directory(name)
    lock = directory / "lock" if directory is not None else None
    try:
        age = time.time() - lock.stat().st_mtime
    except (AttributeError, OSError):
        return  # no lock
    log = logging.getLogger(__name__)
    if age > STALE_BUILD_LOCK_S:
        log.warning("hf_toolssm: removing a build lock left %.0f min ago by a killed build: %s", age / 60, lock)
        lock.unlink(missing_ok=True)
    else:
        log.warning("hf_toolssm: waiting for another process's build of the CPU kernel (lock %s, %.0f s old); if no "
                    "build runs, delete that file", lock, age)


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """During a build, SIGTERM raises KeyboardInterrupt as Ctrl-C does, so torch's ``finally`` removes its build
    lock (the main thread only: Python runs signal handlers there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(number, frame):
        raise KeyboardInterrupt(f"signal {number} during the kernel build")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


@functools.cache
def cpu_scan_extension():
    """Compile (first time) and load the fused CPU extension (scan and mixer step); None if that is impossible.

    Set ``HF_TOOLSSM_NO_CPP=1`` to force the pure-PyTorch fallback.
    """
    if env_flag("HF_TOOLSSM_NO_CPP"):
        return None
    name = f"hf_toolssm_selective_scan_{_cpu_fingerprint()}"
    if not _built_before(name):  # else the first forward seems to hang
        logging.getLogger(__name__).warning(
            "hf_toolssm: compiling the fused CPU scan kernel, once on this machine (about a minute)...")
    _clear_stale_build_lock(name)
    try:
        from torch.utils.cpp_extension import load_inline

        with _sigterm_as_interrupt():
            return load_inline(
                name=name, cpp_sources=[_extension_source()],
                extra_cflags=["-O3", "-ffast-math", "-march=native"], extra_ldflags=["-lmvec"], verbose=False,
            )
    except Exception as error:  # no compiler, no ninja, a build error: fall back, loudly once
        warnings.warn(
            f"hf_toolssm: could not build the CPU scan extension ({type(error).__name__}: {error}); "
            "falling back to the slower pure-PyTorch chunked scan. Install a C++ compiler and `ninja` to fix.",
            stacklevel=2,
        )
        return None
