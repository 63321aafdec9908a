"""The ops: every fast path equals its reference twin (outputs, last states and gradients of every input),
and every op can be split in time (prefix, then the rest from the prefix's state) without changing anything.

Paths under test (hf_toolssm.ops):
    selective_scan_ref                       the definition, a Python loop over time
    selective_scan_cpu, fused C++            csrc/selective_scan.cpp with its hand-written backward
    selective_scan_cpu, PyTorch fallback     vectorised discretisation + linear_scan_chunked (what runs
                                             without a compiler and under torch.compile)
    selective_state_update_ref               one decoding step
    causal_conv1d_ref / _cpu / _update_ref   the short convolution, full and one token at a time
The CUDA kernels are compared with the same references in test_cuda_kernels.py.
"""

from __future__ import annotations

from types import SimpleNamespace
from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import hf_toolssm.ops.kernels as kernels
import hf_toolssm.ops.selective_scan as scan_module
from hf_toolssm.ops.causal_conv1d import (
    causal_conv1d_cpu,
    causal_conv1d_fn,
    causal_conv1d_ref,
    causal_conv1d_update,
    causal_conv1d_update_ref,
)
from hf_toolssm.ops.kernels import cpu_scan_extension, env_flag
from hf_toolssm.ops.selective_scan import (
    linear_scan,
    linear_scan_chunked,
    linear_scan_ref,
    selective_scan_cpu,
    selective_scan_fn,
    selective_scan_ref,
    selective_state_update,
    selective_state_update_ref,
)

LENGTHS = [1, 7, 37, 129]  # one token, shorter than a chunk, odd, longer than the fallback's 64-step chunk
SCAN_ARGS = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")
# Largest allowed |actual - expected|, relative to max(1, max |expected|): float32 paths accumulate rounding
# over the sequence; float64 paths must agree to (almost) the last bit.
TOLERANCE = {torch.float32: 2e-5, torch.float64: 1e-11}


def assert_close(actual, expected, tolerance, what=""):
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    scale = max(1.0, expected.abs().max().item()) if expected.numel() else 1.0
    error = (actual.double() - expected.double()).abs().max().item() if expected.numel() else 0.0
    assert error <= tolerance * scale, f"{what}: max error {error:.3g} > {tolerance:.1g} * {scale:.3g}"


# --------------------------------------------------------------------------------------------------
# Selective scan: inputs and the three CPU paths
# --------------------------------------------------------------------------------------------------


def scan_inputs(batch=2, d=3, n=4, length=7, dtype=torch.float32, *, D=True, z=True, delta_bias=True,
                initial_state=True, seed=0):
    """Random inputs in the regime a trained Mamba sees: decaying A, softplus'd Δ of order 0.1-1."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0):
        return torch.randn(*shape, generator=g, dtype=torch.float64).mul(scale).to(dtype)

    return {
        "u": randn(batch, d, length),
        "delta": randn(batch, d, length, scale=0.5),
        "A": -(torch.rand(d, n, generator=g, dtype=torch.float64) * 2 + 0.2).to(dtype),
        "B": randn(batch, n, length),
        "C": randn(batch, n, length),
        "D": randn(d) if D else None,
        "z": randn(batch, d, length) if z else None,
        "delta_bias": randn(d, scale=0.5) if delta_bias else None,
        "initial_state": randn(batch, d, n) if initial_state else None,
    }


def require_cpp_extension():
    if env_flag("HF_TOOLSSM_NO_CPP"):
        pytest.skip("HF_TOOLSSM_NO_CPP is set: the fused C++ scan is disabled")
    assert cpu_scan_extension() is not None, "the fused C++ scan did not build (see hf_toolssm.ops.kernels' warning)"


def fused_cpp(**kwargs):
    require_cpp_extension()
    assert scan_module._use_cpu_extension(kwargs["u"]), "the fused C++ path would not be used"
    return selective_scan_cpu(**kwargs)


def pytorch_fallback(**kwargs):
    with mock.patch.object(scan_module, "_use_cpu_extension", lambda u: False):
        return selective_scan_cpu(**kwargs)


def loss_against_random_cotangents(y, last, seed):
    """<y, gy> + <last, g_last> with fixed random cotangents (drawn in float64 so that every dtype gets the
    same numbers), so that the gradient of every output element is checked."""
    g = torch.Generator().manual_seed(seed)
    gy = torch.randn(y.shape, generator=g, dtype=torch.float64).to(y.dtype)
    g_last = torch.randn(last.shape, generator=g, dtype=torch.float64).to(last.dtype)
    return (y * gy).sum() + (last * g_last).sum()


def run_scan(path, inputs, dtype=None, seed=1):
    """y, last state and the gradient of every tensor input for the loss <y, gy> + <last, g_last>."""
    leaves = {
        name: (value if dtype is None else value.to(dtype)).clone().requires_grad_(True)
        for name, value in inputs.items() if value is not None
    }
    y, last = path(**leaves, delta_softplus=True, return_last_state=True)
    loss_against_random_cotangents(y, last, seed).backward()
    return SimpleNamespace(y=y.detach(), last=last.detach(), grads={k: v.grad for k, v in leaves.items()})


def assert_same_scan(actual, expected, tolerance):
    assert_close(actual.y, expected.y, tolerance, "y")
    assert_close(actual.last, expected.last, tolerance, "last state")
    assert actual.grads.keys() == expected.grads.keys()
    for name in expected.grads:
        assert actual.grads[name] is not None, f"no gradient for {name}"
        assert_close(actual.grads[name], expected.grads[name], tolerance, f"d loss / d {name}")


VARIANTS = {
    "everything": {},  # D, z, delta_bias and an initial state
    "bare": dict(D=False, z=False, delta_bias=False, initial_state=False),
}


# --------------------------------------------------------------------------------------------------
# Selective scan: the paths agree
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("length", LENGTHS)
def test_fused_cpp_scan_matches_reference(length, variant):
    inputs = scan_inputs(length=length, **VARIANTS[variant])
    assert_same_scan(run_scan(fused_cpp, inputs), run_scan(selective_scan_ref, inputs), TOLERANCE[torch.float32])


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("length", LENGTHS)
def test_fused_cpp_scan_matches_float64_reference_to_float32_accuracy(length, variant):
    """The float64 reference is the ground truth; the float32 kernel must be as close as float32 allows."""
    inputs = scan_inputs(length=length, dtype=torch.float64, **VARIANTS[variant])
    fused = run_scan(fused_cpp, inputs, dtype=torch.float32)
    assert_same_scan(fused, run_scan(selective_scan_ref, inputs), TOLERANCE[torch.float32])


@pytest.mark.parametrize("length", LENGTHS)
def test_fused_cpp_scan_at_state_size_16_matches_float64_reference(length):
    """n = 16 takes the kernel's vector code (n = 4 above its plain loops); 129 steps span three forward blocks."""
    inputs = scan_inputs(d=5, n=16, length=length, dtype=torch.float64)
    fused = run_scan(fused_cpp, inputs, dtype=torch.float32)
    assert_same_scan(fused, run_scan(selective_scan_ref, inputs), TOLERANCE[torch.float32])


@pytest.mark.parametrize("n", [4, 16])
def test_fused_cpp_scan_matches_reference_over_the_whole_range_of_decays(n):
    """Δ A from ~ -1 down to ~ -100: the kernel's own exp over its range, down to where exp(Δ A) is 0 in float32."""
    inputs = scan_inputs(n=n, length=37, dtype=torch.float64)
    inputs["A"] = inputs["A"] * 30
    fused = run_scan(fused_cpp, inputs, dtype=torch.float32)
    assert_same_scan(fused, run_scan(selective_scan_ref, inputs), TOLERANCE[torch.float32])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("length", LENGTHS)
def test_pytorch_fallback_scan_matches_reference(length, variant, dtype):
    inputs = scan_inputs(length=length, dtype=dtype, **VARIANTS[variant])
    assert_same_scan(run_scan(pytorch_fallback, inputs), run_scan(selective_scan_ref, inputs), TOLERANCE[dtype])


@pytest.mark.parametrize("missing", ["D", "z", "delta_bias", "initial_state"])
@pytest.mark.parametrize("path", [fused_cpp, pytorch_fallback], ids=["cpp", "fallback"])
def test_scan_paths_match_reference_without_each_optional_argument(path, missing):
    inputs = scan_inputs(length=37, **{missing: False})
    result = run_scan(path, inputs)
    assert missing not in result.grads
    assert_same_scan(result, run_scan(selective_scan_ref, inputs), TOLERANCE[torch.float32])


def test_scan_without_softplus_matches_reference():
    inputs = scan_inputs(length=9)
    inputs["delta"] = inputs["delta"].abs()  # Δ must be positive when it is used as is

    def no_softplus(path):
        return lambda **kwargs: path(**{**kwargs, "delta_softplus": False})

    expected = run_scan(no_softplus(selective_scan_ref), inputs)
    for path in (fused_cpp, pytorch_fallback):
        assert_same_scan(run_scan(no_softplus(path), inputs), expected, TOLERANCE[torch.float32])


@pytest.mark.parametrize("path", [selective_scan_ref, fused_cpp, pytorch_fallback], ids=["ref", "cpp", "fallback"])
def test_scan_returns_input_dtype_and_float32_state_for_bfloat16_inputs(path):
    inputs = {k: (v.to(torch.bfloat16) if k in ("u", "delta", "B", "C", "z") else v)
              for k, v in scan_inputs(length=5).items()}
    y, last = path(**inputs, delta_softplus=True, return_last_state=True)
    assert y.dtype == torch.bfloat16 and last.dtype == torch.float32
    expected = selective_scan_ref(**{k: (v.float() if v is not None else None) for k, v in inputs.items()},
                                  delta_softplus=True)
    assert_close(y.float(), expected, 1e-2, "y in bfloat16")


def test_float64_inputs_are_computed_in_float64():
    """Regression: every path used to downcast to float32 (`.float()`), so float64 was float32-accurate."""
    inputs = scan_inputs(length=7, dtype=torch.float64)
    for path in (selective_scan_ref, selective_scan_cpu, pytorch_fallback):
        y, last = path(**inputs, delta_softplus=True, return_last_state=True)
        assert y.dtype == last.dtype == torch.float64
    y32 = selective_scan_ref(**{k: v.float() for k, v in inputs.items()}, delta_softplus=True)
    y64 = selective_scan_ref(**inputs, delta_softplus=True)
    assert (y64 - y32.double()).abs().max() > 0  # really different precision, not a cast of the same numbers


@pytest.mark.parametrize("path", [selective_scan_ref, pytorch_fallback], ids=["ref", "fallback"])
def test_scan_gradcheck_float64(path):
    """Numerical vs analytical Jacobians of every input, outputs y and last state (float64, tiny)."""
    inputs = scan_inputs(batch=1, d=2, n=3, length=5, dtype=torch.float64, seed=3)
    leaves = tuple(inputs[name].clone().requires_grad_(True) for name in SCAN_ARGS)

    def scan(*tensors):
        return path(**dict(zip(SCAN_ARGS, tensors)), delta_softplus=True, return_last_state=True)

    assert torch.autograd.gradcheck(scan, leaves)


@pytest.mark.parametrize("n", [4, 16])
def test_fused_cpp_scan_gives_the_same_bits_with_one_or_two_threads(n):
    """The kernel splits (batch x channel) over threads in the forward and the batch in the backward."""
    inputs = scan_inputs(batch=4, d=5, n=n, length=9)
    try:
        torch.set_num_threads(2)
        threaded = run_scan(fused_cpp, inputs)
    finally:
        torch.set_num_threads(1)
    serial = run_scan(fused_cpp, inputs)
    assert_same_scan(threaded, serial, tolerance=0.0)


def test_cpp_backward_without_last_state_gradient():
    """Only y used in the loss: the kernel's backward gets dlast=None and must treat it as zeros."""
    inputs = scan_inputs(length=11)

    def grads(path):
        leaves = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
        path(**leaves, delta_softplus=True).square().sum().backward()
        return {k: v.grad for k, v in leaves.items()}

    expected = grads(selective_scan_ref)
    actual = grads(fused_cpp)
    for name in expected:
        assert_close(actual[name], expected[name], TOLERANCE[torch.float32], f"d loss / d {name}")


def test_cpp_scan_broadcasts_b_and_c_of_batch_1_as_the_reference():
    inputs = scan_inputs(batch=3)
    inputs["B"], inputs["C"] = inputs["B"][:1], inputs["C"][:1]
    expected = selective_scan_ref(**inputs, delta_softplus=True)
    assert_close(fused_cpp(**inputs, delta_softplus=True), expected, TOLERANCE[torch.float32], "y")


def test_cpp_scan_rejects_shapes_it_cannot_read():
    """The C++ loop reads raw memory: a state size that differs between A and B must raise, not read past B."""
    inputs = scan_inputs(n=4)
    inputs["B"] = inputs["B"][:, :2]
    with pytest.raises(ValueError, match=r"A \(d, n\), B and C \(b, n, l\).*B \(2, 2, 7\)"):
        fused_cpp(**inputs, delta_softplus=True)


def test_cpp_scan_refuses_a_second_derivative_it_would_get_wrong():
    inputs = scan_inputs()
    u = inputs.pop("u").requires_grad_(True)
    y = fused_cpp(u=u, **inputs, delta_softplus=True)
    with pytest.raises(RuntimeError, match="no double backward"):
        torch.autograd.grad(y.square().sum(), u, create_graph=True)


def test_only_cpu_tensors_reach_the_cpp_scan():
    assert scan_module._use_cpu_extension(torch.zeros(1, 1, 1)) == (cpu_scan_extension() is not None)
    assert not scan_module._use_cpu_extension(torch.zeros(1, 1, 1, device="meta"))


@pytest.mark.parametrize("value, on", [("", False), ("0", False), ("false", False), ("1", True), ("yes", True)])
def test_environment_switches_read_0_as_off(monkeypatch, value, on):
    monkeypatch.setenv("HF_TOOLSSM_TEST_SWITCH", value)
    assert env_flag("HF_TOOLSSM_TEST_SWITCH") is on


# --------------------------------------------------------------------------------------------------
# Selective scan: splitting in time (what a cache continuation does)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("split", [1, 6, 36])
@pytest.mark.parametrize("path", [selective_scan_ref, fused_cpp, pytorch_fallback], ids=["ref", "cpp", "fallback"])
def test_scan_of_prefix_then_rest_from_its_state_equals_full_scan(path, split):
    inputs = scan_inputs(length=37, dtype=torch.float64 if path is not fused_cpp else torch.float32)
    full_y, full_last = path(**inputs, delta_softplus=True, return_last_state=True)

    def time_slice(start, stop):
        return {k: (v[..., start:stop] if k in ("u", "delta", "B", "C", "z") else v) for k, v in inputs.items()}

    prefix_y, prefix_last = path(**time_slice(0, split), delta_softplus=True, return_last_state=True)
    rest = {**time_slice(split, 37), "initial_state": prefix_last}
    rest_y, rest_last = path(**rest, delta_softplus=True, return_last_state=True)
    tolerance = TOLERANCE[inputs["u"].dtype]
    assert_close(torch.cat([prefix_y, rest_y], dim=2), full_y, tolerance, "y")
    assert_close(rest_last, full_last, tolerance, "last state")


def test_initial_state_changes_the_output():
    """Guards the split test against an initial state that is silently ignored."""
    inputs = scan_inputs(length=5, dtype=torch.float64)
    with_state = selective_scan_cpu(**inputs, delta_softplus=True)
    without = selective_scan_cpu(**{**inputs, "initial_state": None}, delta_softplus=True)
    assert (with_state - without).abs().max() > 1e-3


def test_scan_of_empty_sequence_returns_initial_state():
    inputs = scan_inputs(length=0, dtype=torch.float64)
    for path in (selective_scan_ref, selective_scan_cpu, pytorch_fallback):
        y, last = path(**inputs, delta_softplus=True, return_last_state=True)
        assert y.shape == (2, 3, 0)
        assert torch.equal(last, inputs["initial_state"])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_state_update_token_by_token_equals_scan(dtype):
    inputs = scan_inputs(length=13, dtype=dtype)
    expected_y, expected_last = selective_scan_ref(**inputs, delta_softplus=True, return_last_state=True)
    state = inputs["initial_state"].clone()
    ys = []
    for t in range(13):
        ys.append(selective_state_update_ref(
            state, inputs["u"][:, :, t], inputs["delta"][:, :, t], inputs["A"], inputs["B"][:, :, t],
            inputs["C"][:, :, t], D=inputs["D"], z=inputs["z"][:, :, t], dt_bias=inputs["delta_bias"],
            dt_softplus=True,
        ))  # (b, d) each; `state` is updated in place
    assert_close(torch.stack(ys, dim=2), expected_y, TOLERANCE[dtype], "y")
    assert_close(state, expected_last, TOLERANCE[dtype], "state after the last token")


def test_state_update_without_optional_arguments_equals_scan():
    inputs = scan_inputs(length=4, D=False, z=False, delta_bias=False, initial_state=False)
    expected_y, expected_last = selective_scan_ref(**inputs, return_last_state=True)
    state = torch.zeros(2, 3, 4)
    ys = [selective_state_update_ref(state, inputs["u"][:, :, t], inputs["delta"][:, :, t], inputs["A"],
                                     inputs["B"][:, :, t], inputs["C"][:, :, t]) for t in range(4)]
    assert_close(torch.stack(ys, dim=2), expected_y, TOLERANCE[torch.float32], "y")
    assert_close(state, expected_last, TOLERANCE[torch.float32], "state")


# --------------------------------------------------------------------------------------------------
# The diagonal linear recurrence
# --------------------------------------------------------------------------------------------------


def linear_scan_inputs(batch, length, m, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(batch, length, m, generator=g, dtype=dtype) * 1.2  # some |a| > 1 too
    b = torch.randn(batch, length, m, generator=g, dtype=dtype)
    h0 = torch.randn(batch, m, generator=g, dtype=dtype)
    return a, b, h0


@settings(max_examples=40, deadline=None)
@given(length=st.integers(1, 70), chunk=st.sampled_from([1, 2, 3, 5, 8, 64]), batch=st.integers(1, 2),
       seed=st.integers(0, 2**16))
def test_linear_scan_chunked_matches_reference(length, chunk, batch, seed):
    a, b, h0 = linear_scan_inputs(batch, length, m=3, seed=seed)
    leaves_ref = [t.clone().requires_grad_(True) for t in (a, b, h0)]
    leaves_chunked = [t.clone().requires_grad_(True) for t in (a, b, h0)]
    expected = linear_scan_ref(*leaves_ref)
    actual = linear_scan_chunked(*leaves_chunked, chunk=chunk)
    assert_close(actual, expected, 1e-12, "states")
    cotangent = torch.randn(expected.shape, generator=torch.Generator().manual_seed(seed), dtype=expected.dtype)
    (expected * cotangent).sum().backward()
    (actual * cotangent).sum().backward()
    for name, ref_leaf, leaf in zip(("a", "b", "h0"), leaves_ref, leaves_chunked):
        assert_close(leaf.grad, ref_leaf.grad, 1e-12, f"d / d {name}")


def test_linear_scan_chunked_gradcheck():
    leaves = [t.requires_grad_(True) for t in linear_scan_inputs(1, 11, m=2)]
    assert torch.autograd.gradcheck(lambda a, b, h0: linear_scan_chunked(a, b, h0, chunk=4), leaves)


def test_linear_scan_of_empty_sequence():
    a, b, h0 = linear_scan_inputs(2, 0, m=3)
    assert linear_scan(a, b, h0).shape == (2, 0, 3)


# --------------------------------------------------------------------------------------------------
# Causal depthwise conv1d
# --------------------------------------------------------------------------------------------------


def conv_inputs(batch=2, d=3, length=7, width=4, dtype=torch.float32, *, bias=True, initial_state=True, seed=0):
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)

    return {
        "x": randn(batch, d, length),
        "weight": randn(d, width),
        "bias": randn(d) if bias else None,
        "initial_state": randn(batch, d, width - 1) if initial_state else None,
    }


def run_conv(path, inputs, activation, seed=1):
    leaves = {k: v.clone().requires_grad_(True) for k, v in inputs.items() if v is not None}
    y, final = path(**leaves, activation=activation, return_final_state=True)
    loss_against_random_cotangents(y, final, seed).backward()
    return SimpleNamespace(y=y.detach(), last=final.detach(), grads={k: v.grad for k, v in leaves.items()})


@pytest.mark.parametrize("activation", ["silu", None])
@pytest.mark.parametrize("bias,initial_state", [(True, True), (False, False), (True, False)])
@pytest.mark.parametrize("width", [2, 3, 4])
@pytest.mark.parametrize("length", [1, 2, 7, 37])
def test_causal_conv1d_cpu_matches_reference(length, width, bias, initial_state, activation):
    inputs = conv_inputs(length=length, width=width, bias=bias, initial_state=initial_state)
    assert_same_scan(run_conv(causal_conv1d_cpu, inputs, activation), run_conv(causal_conv1d_ref, inputs, activation),
                     TOLERANCE[torch.float32])


def test_causal_conv1d_final_state_is_last_inputs():
    """The state is the last k-1 inputs, reaching back into the initial state when the input is short."""
    inputs = conv_inputs(length=2, width=4)
    _, final = causal_conv1d_ref(**inputs, return_final_state=True)
    expected = torch.cat([inputs["initial_state"][:, :, -1:], inputs["x"]], dim=2)
    assert torch.equal(final, expected)


@pytest.mark.parametrize("path", [causal_conv1d_ref, causal_conv1d_cpu], ids=["ref", "cpu"])
def test_causal_conv1d_gradcheck_float64(path):
    inputs = conv_inputs(batch=1, d=2, length=5, width=3, dtype=torch.float64)
    names = ("x", "weight", "bias", "initial_state")
    leaves = tuple(inputs[n].clone().requires_grad_(True) for n in names)

    def conv(*tensors):
        return path(**dict(zip(names, tensors)), activation="silu", return_final_state=True)

    assert torch.autograd.gradcheck(conv, leaves)


@pytest.mark.parametrize("split", [1, 2, 5])
@pytest.mark.parametrize("path", [causal_conv1d_ref, causal_conv1d_cpu], ids=["ref", "cpu"])
def test_causal_conv1d_prefix_then_rest_from_its_state_equals_full(path, split):
    inputs = conv_inputs(length=9, width=4, dtype=torch.float64)
    full_y, full_state = path(**inputs, activation="silu", return_final_state=True)
    x = inputs["x"]
    prefix_y, prefix_state = path(**{**inputs, "x": x[:, :, :split]}, activation="silu", return_final_state=True)
    rest_y, rest_state = path(**{**inputs, "x": x[:, :, split:], "initial_state": prefix_state}, activation="silu",
                              return_final_state=True)
    assert_close(torch.cat([prefix_y, rest_y], dim=2), full_y, TOLERANCE[torch.float64], "y")
    assert torch.equal(rest_state, full_state)


@pytest.mark.parametrize("activation", ["silu", None])
@pytest.mark.parametrize("width", [2, 4])
def test_causal_conv1d_update_token_by_token_equals_full_conv(width, activation):
    inputs = conv_inputs(length=9, width=width, dtype=torch.float64)
    full_y, full_state = causal_conv1d_ref(**inputs, activation=activation, return_final_state=True)
    state = inputs["initial_state"].clone()
    ys = [causal_conv1d_update_ref(inputs["x"][:, :, t], state, inputs["weight"], inputs["bias"], activation)
          for t in range(9)]  # `state` is updated in place
    assert_close(torch.stack(ys, dim=2), full_y, TOLERANCE[torch.float64], "y")
    assert torch.equal(state, full_state)


def test_causal_conv1d_rejects_unknown_activation():
    with pytest.raises(ValueError, match="unsupported activation 'gelu'"):
        causal_conv1d_cpu(**conv_inputs(), activation="gelu")


# --------------------------------------------------------------------------------------------------
# Dispatch: CPU tensors never reach the CUDA kernels, even where those import
# --------------------------------------------------------------------------------------------------


def test_cpu_tensors_use_cpu_paths_even_when_cuda_kernels_import(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("a CUDA kernel was called with CPU tensors")

    fake = SimpleNamespace(selective_scan_fn=forbidden, selective_state_update=forbidden, mamba_inner_fn=forbidden,
                           causal_conv1d_fn=forbidden, causal_conv1d_update=forbidden)
    monkeypatch.setattr(kernels, "mamba_ssm_kernels", lambda: fake)
    monkeypatch.setattr(kernels, "causal_conv1d_kernels", lambda: fake)

    inputs = scan_inputs(length=5)
    assert torch.equal(selective_scan_fn(**inputs, delta_softplus=True),
                       selective_scan_cpu(**inputs, delta_softplus=True))
    state = inputs["initial_state"].clone()
    args = (inputs["u"][:, :, 0], inputs["delta"][:, :, 0], inputs["A"], inputs["B"][:, :, 0], inputs["C"][:, :, 0])
    selective_state_update(state, *args, D=inputs["D"])
    conv = conv_inputs()
    assert torch.equal(causal_conv1d_fn(**conv, activation="silu"), causal_conv1d_cpu(**conv, activation="silu"))
    causal_conv1d_update(conv["x"][:, :, 0], conv["initial_state"].clone(), conv["weight"], conv["bias"], "silu")


def test_cuda_paths_called_directly_without_their_kernels_say_what_is_missing():
    inputs = scan_inputs()
    with pytest.raises(RuntimeError, match="selective_scan_cuda: needs CUDA tensors and the mamba-ssm package"):
        scan_module.selective_scan_cuda(**inputs)
    from hf_toolssm.ops.causal_conv1d import causal_conv1d_cuda

    with pytest.raises(RuntimeError, match="causal_conv1d_cuda: needs CUDA tensors and the causal-conv1d package"):
        causal_conv1d_cuda(torch.zeros(1, 2, 3), torch.zeros(2, 4))


def test_one_token_update_is_differentiable_although_it_writes_the_state_in_place():
    g = torch.Generator().manual_seed(3)
    b, d, n = 2, 5, 3
    state = torch.randn(b, d, n, generator=g)
    x, dt, z = (torch.randn(b, d, generator=g).requires_grad_() for _ in range(3))
    A = (-torch.rand(d, n, generator=g)).requires_grad_()
    B, C = (torch.randn(b, n, generator=g).requires_grad_() for _ in range(2))
    before = state.clone()
    y = selective_state_update_ref(state, x, dt, A, B, C, z=z, dt_softplus=True)
    y.sum().backward()  # used to fail: "modified by an inplace operation"
    assert A.grad is not None and x.grad is not None
    assert not torch.equal(state, before)


def test_the_cpu_kernels_first_compile_is_announced_and_later_loads_are_not(tmp_path, monkeypatch, caplog):
    """A fresh machine's first forward compiles for about a minute: without a word it looks like a hang."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.delenv("HF_TOOLSSM_NO_CPP", raising=False)
    built = SimpleNamespace()
    with mock.patch("torch.utils.cpp_extension.load_inline", return_value=built) as load_inline:
        assert kernels.cpu_scan_extension.__wrapped__() is built  # the cached function, called afresh
        name = load_inline.call_args.kwargs["name"]
        assert "compiling the fused CPU scan kernel, once on this machine" in caplog.text
        caplog.clear()
        (tmp_path / name / f"{name}.so").touch()  # what load_inline leaves behind
        assert kernels.cpu_scan_extension.__wrapped__() is built
        assert "compiling" not in caplog.text


def test_a_build_lock_a_killed_build_left_is_named_then_removed_when_stale(tmp_path, monkeypatch, caplog):
    """torch waits forever, silently, on a lock a killed build left (it removes its lock only in a finally)."""
    import os
    import time

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.delenv("HF_TOOLSSM_NO_CPP", raising=False)
    with mock.patch("torch.utils.cpp_extension.load_inline", return_value=SimpleNamespace()) as load_inline:
        kernels.cpu_scan_extension.__wrapped__()
        lock = tmp_path / load_inline.call_args.kwargs["name"] / "lock"
        lock.write_text("")
        kernels.cpu_scan_extension.__wrapped__()  # a young lock: maybe a build in progress, so only named
        assert lock.exists() and f"waiting for another process's build of the CPU kernel (lock {lock}" in caplog.text
        old = time.time() - kernels.STALE_BUILD_LOCK_S - 60
        os.utime(lock, (old, old))
        kernels.cpu_scan_extension.__wrapped__()
        assert not lock.exists() and "removing a build lock left 11 min ago by a killed build" in caplog.text


def test_sigterm_during_the_kernel_build_interrupts_it_so_torch_removes_its_lock():
    import signal

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), kernels._sigterm_as_interrupt():
        signal.raise_signal(signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) == before
