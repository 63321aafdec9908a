"""The fused one-token mixer step (``mamba_step_cpu``, csrc/selective_scan.cpp) against its reference twin
(``mamba_step_ref``, the composition of the one-token ops), against the multi-token scan, its dispatch, and
at model level: greedy tool decoding gives the same traces with the fused step on and off.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import hf_toolssm  # noqa: F401  (registers the Auto classes)
import hf_toolssm.ops.mamba_step as step_module
from hf_toolssm.ops.causal_conv1d import causal_conv1d_ref
from hf_toolssm.ops.kernels import cpu_scan_extension
from hf_toolssm.ops.mamba_step import mamba_step, mamba_step_cpu, mamba_step_ref, use_fused_step
from hf_toolssm.ops.selective_scan import selective_scan_ref

STATES = ("conv_state", "ssm_state")


@pytest.fixture(autouse=True)
def require_cpp_extension():
    if os.environ.get("HF_TOOLSSM_NO_CPP"):
        pytest.skip("HF_TOOLSSM_NO_CPP is set: the C++ extension is disabled")
    assert cpu_scan_extension() is not None, "the C++ extension did not build (see hf_toolssm.ops.kernels' warning)"


def step_inputs(batch=2, d=7, n=4, r=3, k=4, conv_bias=True, seed=0):
    """Random float32 inputs in the regime of a trained Mamba: decaying A, Δ = softplus(≈ -1 ± 1)."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0):
        return torch.randn(*shape, generator=g) * scale

    return {
        "x": randn(batch, d), "z": randn(batch, d), "conv_state": randn(batch, d, k - 1),
        "conv_weight": randn(d, k, scale=0.5), "conv_bias": randn(d) if conv_bias else None,
        "x_proj_weight": randn(r + 2 * n, d, scale=0.5), "dt_proj_weight": randn(d, r, scale=0.5),
        "dt_proj_bias": randn(d, scale=0.5) - 1.0, "A": -(torch.rand(d, n, generator=g) * 2 + 0.2),
        "D": randn(d), "ssm_state": randn(batch, d, n),
    }


def cloned(inputs):
    return {name: None if value is None else value.clone() for name, value in inputs.items()}


def assert_close(actual, expected, what, tolerance=2e-5):
    """|actual - expected| <= tolerance * max(1, max |expected|): float32 rounding only."""
    scale = max(1.0, expected.abs().max().item())
    error = (actual - expected).abs().max().item()
    assert error <= tolerance * scale, f"{what}: max error {error:.3g} > {tolerance:.1g} * {scale:.3g}"


def run_both(inputs):
    """(y, states) of the reference and of the fused step, each on its own copy of the states."""
    ref_inputs, cpp_inputs = cloned(inputs), cloned(inputs)
    with torch.inference_mode():
        y_ref = mamba_step_ref(**ref_inputs)
        y_cpp = mamba_step_cpu(**cpp_inputs)
    return (y_ref, ref_inputs), (y_cpp, cpp_inputs)


@pytest.mark.parametrize("batch", [1, 3, 8])
@pytest.mark.parametrize("d", [1, 7, 37])  # odd sizes: vector loops with remainders
@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("conv_bias", [True, False])
def test_fused_step_matches_reference(batch, d, k, conv_bias):
    inputs = step_inputs(batch=batch, d=d, n=5, r=3, k=k, conv_bias=conv_bias, seed=batch * 100 + d + k)
    (y_ref, ref), (y_cpp, cpp) = run_both(inputs)
    assert y_cpp.shape == (batch, d) and y_cpp.dtype == torch.float32
    assert_close(y_cpp, y_ref, "y")
    for name in STATES:  # updated in place, identically
        assert_close(cpp[name], ref[name], name)
    assert not torch.equal(cpp["ssm_state"], inputs["ssm_state"])
    assert not torch.equal(cpp["conv_state"], inputs["conv_state"])


def test_fused_step_at_the_shipped_model_size():
    """d_inner 128, d_state 16, rank 4: every vector loop runs full width; Δ covers softplus' linear branch."""
    inputs = step_inputs(batch=4, d=128, n=16, r=4, k=4, seed=3)
    inputs["dt_proj_bias"][:8] = 25.0  # softplus(v) = v above 20, as torch's default threshold
    (y_ref, ref), (y_cpp, cpp) = run_both(inputs)
    assert_close(y_cpp, y_ref, "y")
    for name in STATES:
        assert_close(cpp[name], ref[name], name)


def test_fused_step_takes_rows_of_a_wider_tensor():
    """The mixer passes x and z as the two halves of in_proj's output: rows strided by 2d."""
    inputs = step_inputs(batch=3, d=9)
    xz = torch.cat([inputs["x"], inputs["z"]], dim=1)  # (b, 2d)
    strided = {**cloned(inputs), "x": xz[:, :9], "z": xz[:, 9:]}
    assert not strided["x"].is_contiguous()
    (y_ref, _), _ = run_both(inputs)
    with torch.inference_mode():
        assert_close(mamba_step_cpu(**strided), y_ref, "y from strided rows")


def scan_over_tokens(x, z, conv_state, conv_weight, conv_bias, x_proj_weight, dt_proj_weight, dt_proj_bias, A, D,
                     ssm_state):
    """The multi-token forward of the mixer (between in_proj and out_proj) from the reference ops.
    x, z: (b, d, l). Returns y (b, d, l) and the final states."""
    x, conv_last = causal_conv1d_ref(x, conv_weight, conv_bias, initial_state=conv_state, activation="silu",
                                     return_final_state=True)  # (b, d, l), (b, d, k-1)
    x_dbl = F.linear(x.transpose(1, 2), x_proj_weight)  # (b, l, r + 2n)
    n = A.shape[1]
    dt, B, C = torch.split(x_dbl, [dt_proj_weight.shape[1], n, n], dim=-1)
    dt = (dt @ dt_proj_weight.T).transpose(1, 2)  # (b, d, l)
    y, ssm_last = selective_scan_ref(x, dt, A, B.transpose(1, 2), C.transpose(1, 2), D=D, z=z, delta_bias=dt_proj_bias,
                                     delta_softplus=True, initial_state=ssm_state, return_last_state=True)
    return y, conv_last, ssm_last


@pytest.mark.parametrize("k", [2, 4])
def test_many_fused_steps_equal_the_scan_over_the_same_tokens(k):
    batch, d, length = 2, 37, 24
    inputs = step_inputs(batch=batch, d=d, n=16, r=3, k=k, seed=7)
    g = torch.Generator().manual_seed(8)
    xs, zs = torch.randn(batch, d, length, generator=g), torch.randn(batch, d, length, generator=g)
    y_scan, conv_last, ssm_last = scan_over_tokens(**{**cloned(inputs), "x": xs, "z": zs})
    states = cloned(inputs)
    with torch.inference_mode():
        ys = [mamba_step_cpu(**{**states, "x": xs[:, :, t], "z": zs[:, :, t]}) for t in range(length)]
    assert_close(torch.stack(ys, dim=2), y_scan, "y over 24 steps", tolerance=1e-4)
    assert_close(states["conv_state"], conv_last, "conv state after 24 steps")
    assert_close(states["ssm_state"], ssm_last, "ssm state after 24 steps", tolerance=1e-4)


def test_fused_step_gives_the_same_bits_with_one_or_two_threads():
    """Rows go to threads only in chunks of >= 32768 / (d n) rows: 40 rows of 128 x 16 are split in two."""
    inputs = step_inputs(batch=40, d=128, n=16, r=4, seed=5)
    previous = torch.get_num_threads()
    results = []
    try:
        for threads in (2, 1):
            torch.set_num_threads(threads)
            states = cloned(inputs)
            with torch.inference_mode():
                results.append((mamba_step_cpu(**states), states["conv_state"], states["ssm_state"]))
    finally:
        torch.set_num_threads(previous)
    for threaded, serial in zip(*results):
        assert torch.equal(threaded, serial)


# --------------------------------------------------------------------------------------------------
# Dispatch
# --------------------------------------------------------------------------------------------------


@mock.patch.object(step_module, "FUSED_STEP_ENABLED", True)  # whatever the environment says
def test_dispatch_takes_the_fused_step_only_without_autograd_on_cpu_float32():
    inputs = step_inputs()
    with torch.no_grad():
        assert use_fused_step(**inputs)
    with torch.inference_mode():
        assert use_fused_step(**inputs)
        assert not use_fused_step(**{**inputs, "activation": "relu"})
        assert not use_fused_step(**{name: v if v is None else v.double() for name, v in inputs.items()})
        assert not use_fused_step(**{**inputs, "conv_bias": inputs["conv_bias"].double()})
        strided = inputs["ssm_state"].transpose(1, 2).contiguous().transpose(1, 2)
        assert not use_fused_step(**{**inputs, "ssm_state": strided})
        with mock.patch.object(step_module, "FUSED_STEP_ENABLED", False):
            assert not use_fused_step(**inputs)
    assert not use_fused_step(**inputs)  # grad mode: the kernel has no backward


def test_the_environment_switch_turns_the_fused_step_off():
    code = "import hf_toolssm.ops.mamba_step as m; print(m.FUSED_STEP_ENABLED)"
    env = dict(os.environ, HF_TOOLSSM_NO_FUSED_STEP="1")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.stdout.strip() == "False", result.stderr[-2000:]


def test_with_autograd_the_step_is_the_reference_and_tracks_gradients():
    inputs = step_inputs()
    inputs["x_proj_weight"].requires_grad_()
    with mock.patch.object(step_module, "mamba_step_cpu", side_effect=AssertionError("fused step under autograd")):
        y = mamba_step(**inputs)
    assert y.requires_grad and y.grad_fn is not None


def test_fused_step_under_no_grad_bumps_the_state_versions():
    """The kernel writes the states through raw pointers; like copy_ it must tell autograd they changed."""
    inputs = step_inputs()
    versions = [inputs[name]._version for name in STATES]
    with torch.no_grad():
        mamba_step_cpu(**inputs)
    assert all(inputs[name]._version > v for name, v in zip(STATES, versions))


# --------------------------------------------------------------------------------------------------
# The model: the mixer's step, and whole traces
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_toolssm.cli import DEFAULT_CHECKPOINT

    return (AutoModelForCausalLM.from_pretrained(DEFAULT_CHECKPOINT).eval(),
            AutoTokenizer.from_pretrained(DEFAULT_CHECKPOINT))


def decode(model, tokenizer, prompts, fused, max_new_tokens):
    from hf_toolssm.generation import generate_with_tools
    from hf_toolssm.tasks import get_task

    calls = []

    def counting(*args, **kwargs):
        calls.append(1)
        return mamba_step_cpu(*args, **kwargs)

    with (mock.patch.object(step_module, "FUSED_STEP_ENABLED", fused),
          mock.patch.object(step_module, "mamba_step_cpu", counting)):
        results = generate_with_tools(model, tokenizer, prompts, get_task("addition").make_environment,
                                      max_new_tokens=max_new_tokens, progress=False)
    return results, len(calls)


def test_greedy_tool_traces_are_identical_with_the_fused_step_on_and_off(shipped):
    """The shipped checkpoint decodes additions (tool calls, observations, many steps) with both paths, a batch
    of three and a row alone: every trace is identical, and the fused step really ran in one and not the other."""
    from hf_toolssm.tasks import get_task

    model, tokenizer = shipped
    rng = random.Random("fused-step")
    instances = [get_task("addition").sample(rng, size) for size in (3, 12, 25)]
    budget = 2 * len(instances[-1].full_tokens())
    for prompts in ([i.prompt for i in instances], [instances[-1].prompt]):
        fused, fused_calls = decode(model, tokenizer, prompts, fused=True, max_new_tokens=budget)
        unfused, unfused_calls = decode(model, tokenizer, prompts, fused=False, max_new_tokens=budget)
        assert fused_calls > 100 and unfused_calls == 0
        assert [r.tokens for r in fused] == [r.tokens for r in unfused]
        assert [r.roles for r in fused] == [r.roles for r in unfused]
        assert all(r.num_tool_calls > 0 for r in fused)
        assert [r.answer for r in fused] == [i.answer for i in instances[-len(prompts):]]


class _ShiftedLinear(nn.Module):
    """A stand-in for a PEFT LoRA layer: exposes the base ``weight``, but its forward adds something."""

    def __init__(self, base: nn.Linear):
        super().__init__()
        self.base = base
        self.weight = base.weight

    def forward(self, x):
        return self.base(x) + 0.5


def test_a_wrapped_x_proj_keeps_its_forward_in_the_step(shipped):
    """The fused step reads x_proj's weight directly, which would skip an adapter: a wrapped x_proj must go
    through its module (the reference composition) and change the logits."""
    from copy import deepcopy

    model = deepcopy(shipped[0])
    ids = torch.tensor([[5, 6, 7, 8, 9]])

    def next_logits():
        with torch.inference_mode():
            cache = model(input_ids=ids[:, :4], use_cache=True).cache
            return model(input_ids=ids[:, 4:], cache=cache, use_cache=True).logits

    plain = next_logits()
    for layer in model.backbone.layers:
        layer.mixer.x_proj = _ShiftedLinear(layer.mixer.x_proj)
    unexpected = AssertionError("fused step with a wrapped x_proj")
    with mock.patch.object(step_module, "mamba_step_cpu", side_effect=unexpected):
        wrapped = next_logits()
    assert (wrapped - plain).abs().max() > 1e-3
    with torch.inference_mode():  # and the step with the wrapper is the full pass with it
        full = model(input_ids=ids, use_cache=False).logits[:, 4:]
    torch.testing.assert_close(wrapped, full, atol=1e-4, rtol=1e-4)
