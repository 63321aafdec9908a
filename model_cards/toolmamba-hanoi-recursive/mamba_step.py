"""One decoding step of the Mamba-1 mixer (one token per row), between in_proj and out_proj.

Glossary: b batch, d channels (d_inner), n state size, r time_step_rank, k conv kernel width.

    mamba_step_ref   the composition of the one-token ops (causal_conv1d_update, x_proj, dt_proj,
                     selective_state_update): what ``ToolMambaMixer._step`` always computed. On CUDA these
                     ops use the causal-conv1d / mamba-ssm kernels; on the CPU they are the references.
    mamba_step_cpu   the same step fused in C++ (``mamba_step`` in csrc/selective_scan.cpp). At decoding
                     sizes a step is ~25 tiny torch ops whose dispatch costs far more than their arithmetic,
                     so doing it in one call is what makes CPU decoding fast.
    mamba_step       dispatches per call (see ``use_fused_step``).

All three take the same arguments and update ``conv_state`` and ``ssm_state`` in place.
Set ``HF_TOOLSSM_NO_FUSED_STEP=1`` before the import to keep the unfused path (``HF_TOOLSSM_NO_CPP=1`` disables
every C++ path); in a running process, set ``FUSED_STEP_ENABLED`` (tests and the benchmark do).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .causal_conv1d import causal_conv1d_update
from .kernels import cpu_scan_extension, env_flag
from .selective_scan import selective_state_update

#: The switch. Read once: a lookup in the environment on every step would cost a visible share of the step.
FUSED_STEP_ENABLED = not env_flag("HF_TOOLSSM_NO_FUSED_STEP")


def mamba_step_ref(
    x, z, conv_state, conv_weight, conv_bias, x_proj_weight, dt_proj_weight, dt_proj_bias, A, D, ssm_state,
    activation="silu", x_proj=None, dt_proj=None,
):
    """One token. x, z: (b, d); conv_state: (b, d, k-1) and ssm_state: (b, d, n), updated in place;
    conv_weight: (d, k); conv_bias: (d) or None; x_proj_weight: (r + 2n, d); dt_proj_weight: (d, r);
    dt_proj_bias, D: (d); A = -exp(A_log): (d, n). Returns the gated output y: (b, d).

    ``x_proj``, ``dt_proj``: optional callables used instead of the plain products with ``x_proj_weight`` and
    ``dt_proj_weight``, for wrapped projections (a PEFT LoRA layer applies its adapter only in its forward);
    ``dt_proj`` adds ``dt_proj_bias`` itself, as an ``nn.Linear`` does.
    """
    n = A.shape[1]
    r = dt_proj_weight.shape[1]
    x = causal_conv1d_update(x, conv_state, conv_weight, conv_bias, activation)  # (b, d)
    x_dbl = x_proj(x) if x_proj is not None else F.linear(x, x_proj_weight)  # (b, r + 2n)
    dt, B, C = torch.split(x_dbl, [r, n, n], dim=-1)  # (b, r), (b, n), (b, n)
    # (b, d); the bias is added (before the softplus) inside the update
    dt = dt_proj(dt) - dt_proj_bias if dt_proj is not None else dt @ dt_proj_weight.T
    return selective_state_update(
        ssm_state, x, dt, A, B, C, D=D.float(), z=z, dt_bias=dt_proj_bias.float(), dt_softplus=True,
    )  # (b, d)


def mamba_step_cpu(
    x, z, conv_state, conv_weight, conv_bias, x_proj_weight, dt_proj_weight, dt_proj_bias, A, D, ssm_state,
    activation="silu",
):
    """The fused C++ step: same arguments and results as ``mamba_step_ref``; CPU float32, no autograd."""
    if activation not in ("silu", "swish"):
        raise ValueError(f"mamba_step_cpu: the fused step applies silu after the conv, not {activation!r}")
    return cpu_scan_extension().mamba_step(
        x, z, conv_state, conv_weight, conv_bias, x_proj_weight, dt_proj_weight, dt_proj_bias, A, D, ssm_state,
    )


def use_fused_step(
    x, z, conv_state, conv_weight, conv_bias, x_proj_weight, dt_proj_weight, dt_proj_bias, A, D, ssm_state,
    activation="silu",
) -> bool:
    """May this call take the fused C++ step?

    Only without autograd (the kernel has no backward, and writes the states through raw pointers), on CPU
    float32 tensors with contiguous states (updated in place), with silu, outside torch.compile (which
    cannot trace the extension), and when the extension built and is not switched off. This runs on every
    step of every layer, hence the plain boolean chain (a generator over the tensors cost as much again).
    """
    f32 = torch.float32
    return (
        FUSED_STEP_ENABLED and not torch.is_grad_enabled() and activation in ("silu", "swish")
        and x.is_cpu and x.dtype == z.dtype == conv_state.dtype == ssm_state.dtype == f32
        and conv_weight.dtype == x_proj_weight.dtype == dt_proj_weight.dtype == dt_proj_bias.dtype == f32
        and A.dtype == D.dtype == f32 and (conv_bias is None or conv_bias.dtype == f32)
        and conv_state.is_contiguous() and ssm_state.is_contiguous()
        and not torch.compiler.is_compiling() and cpu_scan_extension() is not None
    )  # (the other tensors' devices: the kernel checks them, as the reference ops would)


def mamba_step(
    x, z, conv_state, conv_weight, conv_bias, x_proj_weight, dt_proj_weight, dt_proj_bias, A, D, ssm_state,
    activation="silu",
):
    """One token on the best path for this call: the fused C++ step when ``use_fused_step`` allows it,
    else ``mamba_step_ref`` (which itself uses the CUDA kernels on CUDA)."""
    args = (x, z, conv_state, conv_weight, conv_bias, x_proj_weight, dt_proj_weight, dt_proj_bias, A, D, ssm_state)
    path = mamba_step_cpu if use_fused_step(*args, activation=activation) else mamba_step_ref
    return path(*args, activation=activation)
