"""Causal depthwise 1-D convolution (Mamba's short conv): reference, fast CPU path, CUDA kernel, one-token update.

Glossary: b batch, d channels, l length, k kernel width. The conv state of a sequence is its last
``k - 1`` inputs (b, d, k-1): exactly what the next token's output depends on. Every path takes an
``initial_state`` (zeros by default) and can return the final state, so a forward can continue a cache.

    causal_conv1d_ref      explicit sum over the k taps: the definition.
    causal_conv1d_cpu      one grouped ``F.conv1d`` over [state, x].
    causal_conv1d_cuda     the ``causal-conv1d`` kernel.
    causal_conv1d_fn       dispatches per call (CUDA tensor and kernel importable -> kernel).
    causal_conv1d_update   one token: shift the state, dot with the taps (kernel on CUDA).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .kernels import require, use_causal_conv1d


def _activate(y: torch.Tensor, activation: str | None) -> torch.Tensor:
    if activation in ("silu", "swish"):
        return F.silu(y)
    if activation is None:
        return y
    raise ValueError(f"unsupported activation {activation!r}: use 'silu' or None")


def _with_state(x: torch.Tensor, weight: torch.Tensor, initial_state: torch.Tensor | None) -> torch.Tensor:
    """[initial_state, x] along time: (b, d, k-1+l)."""
    if initial_state is None:
        initial_state = x.new_zeros(x.shape[0], x.shape[1], weight.shape[1] - 1)
    return torch.cat([initial_state.to(x.dtype), x], dim=2)


def causal_conv1d_ref(x, weight, bias=None, initial_state=None, activation=None, return_final_state=False):
    """y[t] = act(bias + sum_j weight[:, j] * x[t - (k-1) + j]).  x: (b, d, l), weight: (d, k)."""
    width = weight.shape[1]
    length = x.shape[2]
    padded = _with_state(x, weight, initial_state)  # (b, d, k-1+l)
    y = sum(weight[None, :, j, None] * padded[:, :, j : j + length] for j in range(width))  # (b, d, l)
    if bias is not None:
        y = y + bias[None, :, None]
    y = _activate(y, activation)
    if not return_final_state:
        return y
    return y, padded[:, :, padded.shape[2] - (width - 1) :]  # (b, d, l), (b, d, k-1); not -(k-1): k may be 1


def causal_conv1d_cpu(x, weight, bias=None, initial_state=None, activation=None, return_final_state=False):
    """The same as one grouped convolution over [state, x]."""
    width = weight.shape[1]
    padded = _with_state(x, weight, initial_state)  # (b, d, k-1+l)
    y = F.conv1d(padded, weight[:, None, :], bias, groups=x.shape[1])  # (b, d, l)
    y = _activate(y, activation)
    if not return_final_state:
        return y
    return y, padded[:, :, padded.shape[2] - (width - 1) :]  # (b, d, l), (b, d, k-1)


def causal_conv1d_cuda(x, weight, bias=None, initial_state=None, activation=None, return_final_state=False):
    """The causal-conv1d kernel. With states it needs a channel-last layout of x (stride 1 along d)."""
    kernels = require(use_causal_conv1d(x), "causal_conv1d_cuda", "causal-conv1d")
    if initial_state is None and not return_final_state:
        return kernels.causal_conv1d_fn(x, weight, bias, activation=activation)
    x_channel_last = x.transpose(1, 2).contiguous().transpose(1, 2)  # same shape, d is the fastest axis
    if initial_state is not None:
        initial_state = initial_state.to(x.dtype).transpose(1, 2).contiguous().transpose(1, 2)
    out = kernels.causal_conv1d_fn(
        x_channel_last, weight, bias, initial_states=initial_state,
        return_final_states=return_final_state, activation=activation,
    )
    return out


def causal_conv1d_fn(x, weight, bias=None, initial_state=None, activation=None, return_final_state=False):
    path = causal_conv1d_cuda if use_causal_conv1d(x) is not None else causal_conv1d_cpu
    return path(x, weight, bias, initial_state=initial_state, activation=activation,
                return_final_state=return_final_state)


def causal_conv1d_update_ref(x, conv_state, weight, bias=None, activation=None):
    """One token. x: (b, d); conv_state: (b, d, k-1), updated in place. Returns y: (b, d)."""
    window = torch.cat([conv_state, x[:, :, None].to(conv_state.dtype)], dim=2)  # (b, d, k)
    y = (window * weight[None]).sum(-1)  # (b, d)
    if bias is not None:
        y = y + bias
    conv_state.copy_(window[:, :, 1:])
    return _activate(y, activation).to(x.dtype)


def causal_conv1d_update(x, conv_state, weight, bias=None, activation=None):
    kernels = use_causal_conv1d(x, conv_state)
    if kernels is not None:
        return kernels.causal_conv1d_update(x, conv_state, weight, bias, activation)
    return causal_conv1d_update_ref(x, conv_state, weight, bias, activation)
