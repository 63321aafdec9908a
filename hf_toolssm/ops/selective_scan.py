"""The Mamba-1 selective scan: a reference, a fast CPU path, the CUDA kernel, and the one-token update.

Glossary (as in mamba-minimal)
    b   batch size                       l   sequence length
    d   channels (Mamba's d_inner)       n   SSM state size (d_state)

The recurrence, per channel d and state index n, with Δ = softplus(delta + delta_bias):

    h[t] = exp(Δ[t] A) * h[t-1] + Δ[t] u[t] B[t]        (h[-1] = initial_state, zero by default)
    y[t] = <h[t], C[t]> + D u[t],   then   y[t] *= silu(z[t])

Argument shapes follow ``mamba_ssm.ops.selective_scan_interface.selective_scan_fn``:
``u, delta, z: (b, d, l)``, ``A: (d, n)``, ``B, C: (b, n, l)``, ``D, delta_bias: (d,)``, and the state
``(b, d, n)``. Unlike mamba-ssm every path here also takes an ``initial_state``, so a multi-token forward
can continue from a cache.

Paths, all with the same signature and tested equal (outputs and gradients):
    selective_scan_ref   a plain loop over time: the definition, readable, slow.
    selective_scan_cpu   a fused C++ loop over time with a hand-written backward (csrc/selective_scan.cpp),
                         or, without a compiler or under torch.compile, vectorised discretisation + a
                         chunked parallel scan in pure PyTorch.
    selective_scan_cuda  mamba-ssm's fused kernel; it has no initial state, so we add the initial state's
                         contribution exactly (the recurrence is linear in h[-1]).
    selective_scan_fn    dispatches per call: CUDA kernel if the tensors are on CUDA and mamba-ssm
                         imports, else the CPU path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .kernels import cpu_scan_extension, require, use_mamba_ssm

# --------------------------------------------------------------------------------------------------
# The diagonal linear recurrence h[t] = a[t] * h[t-1] + b[t] over (b, l, m) tensors, m = d * n.
# --------------------------------------------------------------------------------------------------


def linear_scan_ref(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """Reference: every state of ``h[t] = a[t] h[t-1] + b[t]``. a, b: (b, l, m); h0: (b, m) -> (b, l, m)."""
    states = []
    h = h0
    for a_t, b_t in zip(a.unbind(1), b.unbind(1), strict=True):  # (b, m) each
        h = a_t * h + b_t
        states.append(h)
    return torch.stack(states, dim=1)


def linear_scan_chunked(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """Pure-PyTorch fallback: a Hillis-Steele parallel scan inside chunks, a loop over chunks.

    Only products of ``a`` appear (no division by cumulative products), so it is as stable as the loop.
    Autograd differentiates it; torch.compile traces it.
    """
    outputs = []
    h = h0  # (b, m)
    for start in range(0, a.shape[1], chunk):
        a_c, b_c = a[:, start : start + chunk], b[:, start : start + chunk]  # (b, t, m)
        offset = 1
        while offset < a_c.shape[1]:
            # After this round, position i combines positions (i - 2*offset, i].
            b_c = torch.cat([b_c[:, :offset], a_c[:, offset:] * b_c[:, :-offset] + b_c[:, offset:]], dim=1)
            a_c = torch.cat([a_c[:, :offset], a_c[:, offset:] * a_c[:, :-offset]], dim=1)
            offset *= 2
        states = a_c * h[:, None] + b_c  # (b, t, m): apply the carried-in state to every position
        outputs.append(states)
        h = states[:, -1]
    return torch.cat(outputs, dim=1)


def linear_scan(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """``h[t] = a[t] h[t-1] + b[t]`` without a Python loop per step (the chunked parallel scan)."""
    if a.shape[1] == 0:
        return a.new_empty(a.shape)
    return linear_scan_chunked(a, b, h0)


class _SelectiveScanCpp(torch.autograd.Function):
    """The fused C++ scan (csrc/selective_scan.cpp): y = <h, C> and the last state, forward and backward."""

    @staticmethod
    def forward(ctx, u, delta, A, B_t, C_t, h0):
        y, last = cpu_scan_extension().forward(u, delta, A, B_t, C_t, h0)  # (b, d, l), (b, d, n)
        ctx.save_for_backward(u, delta, A, B_t, C_t, h0)
        return y, last

    @staticmethod
    def backward(ctx, dy, dlast):
        if torch.is_grad_enabled() and any(g is not None and g.requires_grad for g in (dy, dlast)):
            # create_graph=True: the C++ gradients carry no graph, so a second derivative would silently miss
            # this path (once_differentiable's guard is not reached when no graph links it to the inputs).
            raise RuntimeError(
                "selective_scan: the fused C++ CPU scan has no double backward (create_graph=True); set "
                "HF_TOOLSSM_NO_CPP=1 to use the differentiable pure-PyTorch scan"
            )
        u, delta, A, B_t, C_t, h0 = ctx.saved_tensors
        dy = torch.zeros_like(u) if dy is None else dy.float().contiguous()
        dlast = torch.zeros_like(h0) if dlast is None else dlast.float().contiguous()
        return tuple(cpu_scan_extension().backward(u, delta, A, B_t, C_t, h0, dy, dlast))


def _use_cpu_extension(u: torch.Tensor) -> bool:
    return u.is_cpu and not torch.compiler.is_compiling() and cpu_scan_extension() is not None


def _shaped_for_cpp(u, delta, A, B, C, h0):
    """The C++ loop reads raw memory and trusts its shapes: broadcast every argument to the shape it assumes
    (as the reference's broadcasting would), or raise naming the shapes. Returns contiguous float32 tensors
    ``u, delta (b, d, l), A (d, n), B, C transposed to (b, l, n), h0 (b, d, n)``."""
    batch, d, length = u.shape
    n = A.shape[-1]
    try:
        delta, A = delta.expand(batch, d, length), A.expand(d, n)
        B, C, h0 = B.expand(batch, n, length), C.expand(batch, n, length), h0.expand(batch, d, n)
    except RuntimeError:
        raise ValueError(
            "selective_scan: expected u and delta (b, d, l), A (d, n), B and C (b, n, l), initial_state (b, d, n); "
            f"got u {tuple(u.shape)}, delta {tuple(delta.shape)}, A {tuple(A.shape)}, B {tuple(B.shape)}, "
            f"C {tuple(C.shape)}, initial_state {tuple(h0.shape)}"
        ) from None
    return (
        u.float().contiguous(), delta.contiguous(), A.float().contiguous(),
        B.float().transpose(1, 2).contiguous(), C.float().transpose(1, 2).contiguous(), h0.contiguous(),
    )


# --------------------------------------------------------------------------------------------------
# The selective scan
# --------------------------------------------------------------------------------------------------


def _compute_dtype(u: torch.Tensor) -> torch.dtype:
    """float32 for half, bfloat16 and float32 inputs (as mamba-ssm), float64 for float64 inputs.

    Everything used to go through ``.float()``, which silently *downcast* float64: the float64 reference was
    only float32-accurate and ``gradcheck`` failed on it.
    """
    return torch.float64 if u.dtype == torch.float64 else torch.float32


def _discretize_delta(delta, delta_bias, delta_softplus, dtype=torch.float32):
    delta = delta.to(dtype)  # (b, d, l)
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype)[None, :, None]
    if delta_softplus:
        delta = F.softplus(delta)
    return delta


def _initial_state(u, A, initial_state, dtype=torch.float32):
    if initial_state is None:
        return u.new_zeros(u.shape[0], u.shape[1], A.shape[1], dtype=dtype)  # (b, d, n)
    return initial_state.to(dtype)


def _finish(y, u, D, z, out_dtype):
    dtype = y.dtype  # the compute dtype
    if D is not None:
        y = y + u.to(dtype) * D.to(dtype)[None, :, None]  # (b, d, l)
    if z is not None:
        y = y * F.silu(z.to(dtype))
    return y.to(out_dtype)


def selective_scan_ref(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
    initial_state=None, return_last_state=False,
):
    """The definition: a loop over time. Returns y (b, d, l), and the last state (b, d, n) if asked."""
    dtype = _compute_dtype(u)
    delta = _discretize_delta(delta, delta_bias, delta_softplus, dtype)  # (b, d, l)
    h = _initial_state(u, A, initial_state, dtype)  # (b, d, n)
    A, B, C, u_f = A.to(dtype), B.to(dtype), C.to(dtype), u.to(dtype)
    ys = []
    for t in range(u.shape[2]):
        dA = torch.exp(delta[:, :, t, None] * A)  # (b, d, n)
        dBu = delta[:, :, t, None] * u_f[:, :, t, None] * B[:, None, :, t]  # (b, d, n)
        h = dA * h + dBu  # (b, d, n)
        ys.append((h * C[:, None, :, t]).sum(-1))  # (b, d)
    y = torch.stack(ys, dim=2) if ys else u_f.new_zeros(u.shape)  # (b, d, l)
    out = _finish(y, u, D, z, u.dtype)
    return (out, h) if return_last_state else out


def selective_scan_cpu(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
    initial_state=None, return_last_state=False,
):
    """The fused C++ scan (no (b, l, d, n) tensors), or a vectorised chunked scan in pure PyTorch."""
    batch, d, length = u.shape
    n = A.shape[1]
    dtype = _compute_dtype(u)
    delta = _discretize_delta(delta, delta_bias, delta_softplus, dtype)  # (b, d, l)
    h0 = _initial_state(u, A, initial_state, dtype)  # (b, d, n)
    if dtype == torch.float32 and _use_cpu_extension(u):  # the C++ kernel is float32 only
        y, last = _SelectiveScanCpp.apply(*_shaped_for_cpp(u, delta, A, B, C, h0))
    else:
        delta_t = delta.transpose(1, 2)  # (b, l, d)
        dA = torch.exp(delta_t[..., None] * A.to(dtype))  # (b, l, d, n)
        dBu = (delta_t * u.to(dtype).transpose(1, 2))[..., None] * B.to(dtype).transpose(1, 2)[:, :, None, :]
        h = linear_scan(dA.reshape(batch, length, d * n), dBu.reshape(batch, length, d * n), h0.reshape(batch, d * n))
        h = h.view(batch, length, d, n)  # (b, l, d, n)
        y = torch.matmul(h, C.to(dtype).transpose(1, 2)[..., None]).squeeze(-1).transpose(1, 2)  # (b, d, l)
        last = h[:, -1] if length > 0 else h0  # (b, d, n)
    out = _finish(y, u, D, z, u.dtype)
    return (out, last) if return_last_state else out


def selective_scan_cuda(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
    initial_state=None, return_last_state=False,
):
    """mamba-ssm's fused kernel, plus the exact contribution of an initial state.

    The recurrence is linear in h[-1]: with S[t] = cumsum(Δ)[t], the initial state adds
    ``<exp(A S[t]) * h[-1], C[t]>`` to y[t] and ``exp(A S[-1]) * h[-1]`` to the last state. The kernel
    applies the gate inside, so we run it ungated when there is an initial state and gate afterwards.
    """
    kernels = require(use_mamba_ssm(u), "selective_scan_cuda", "mamba-ssm")
    if initial_state is None:
        return kernels.selective_scan_fn(
            u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus,
            return_last_state=return_last_state,
        )
    y, last = kernels.selective_scan_fn(
        u, delta, A, B, C, D=D, z=None, delta_bias=delta_bias, delta_softplus=delta_softplus,
        return_last_state=True,
    )
    cum_delta = _discretize_delta(delta, delta_bias, delta_softplus).cumsum(dim=2)  # (b, d, l)
    decay = torch.exp(cum_delta[..., None] * A.float()[:, None, :])  # (b, d, l, n)
    h0 = initial_state.float()  # (b, d, n)
    y = y.float() + torch.einsum("bdln,bdn,bnl->bdl", decay, h0, C.float())  # (b, d, l)
    last = last.float() + decay[:, :, -1] * h0  # (b, d, n)
    if z is not None:
        y = y * F.silu(z.float())
    y = y.to(u.dtype)
    return (y, last) if return_last_state else y


def selective_scan_fn(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
    initial_state=None, return_last_state=False,
):
    """Selective scan on the best path for this call's device (see the module docstring)."""
    path = selective_scan_cuda if use_mamba_ssm(u) is not None else selective_scan_cpu
    return path(
        u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus,
        initial_state=initial_state, return_last_state=return_last_state,
    )


# --------------------------------------------------------------------------------------------------
# One token: the recurrent update used in decoding
# --------------------------------------------------------------------------------------------------


def selective_state_update_ref(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False):
    """One step of the recurrence, updating ``state`` in place (as mamba-ssm does).

    state: (b, d, n); x, dt, z: (b, d); B, C: (b, n). Returns y: (b, d).
    """
    dtype = _compute_dtype(x)
    dt = dt.to(dtype)
    if dt_bias is not None:
        dt = dt + dt_bias.to(dtype)
    if dt_softplus:
        dt = F.softplus(dt)
    dA = torch.exp(dt[..., None] * A.to(dtype))  # (b, d, n)
    dBx = (dt * x.to(dtype))[..., None] * B.to(dtype)[:, None, :]  # (b, d, n)
    previous = state.to(dtype)
    if torch.is_grad_enabled():
        previous = previous.clone()  # autograd saves it for dA's gradient; the copy_ below overwrites `state`
    new_state = previous * dA + dBx  # (b, d, n)
    state.copy_(new_state)
    y = torch.matmul(new_state, C.to(dtype)[..., None]).squeeze(-1)  # (b, d)
    if D is not None:
        y = y + x.to(dtype) * D.to(dtype)
    if z is not None:
        y = y * F.silu(z.to(dtype))
    return y.to(x.dtype)


def selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False):
    """One-token update: mamba-ssm's Triton kernel on CUDA, else the reference (already vectorised)."""
    kernels = use_mamba_ssm(state, x)
    if kernels is not None:
        return kernels.selective_state_update(state, x, dt, A, B, C, D=D, z=z, dt_bias=dt_bias, dt_softplus=dt_softplus)
    return selective_state_update_ref(state, x, dt, A, B, C, D=D, z=z, dt_bias=dt_bias, dt_softplus=dt_softplus)
