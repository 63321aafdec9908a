"""The CUDA paths (mamba-ssm's selective scan and state update, the causal-conv1d kernels) against the
references, and a ToolMamba on CUDA against the same model on CPU.

Deselected by default (pyproject: `-m 'not slow and not cuda'`); run on a GPU machine with
`pytest -m cuda tests/test_cuda_kernels.py`. Written for mamba-ssm 2.3.2.post1 and causal-conv1d 1.7.0.

Kernel constraints these tests respect: causal-conv1d needs widths 2-4 and, for the channel-last layout that
initial/final states require, a channel count divisible by 8; mamba-ssm's scan takes float32/float16/bfloat16.
"""

from __future__ import annotations

import copy

import pytest
import torch

from hf_toolssm.ops.causal_conv1d import (
    causal_conv1d_cuda,
    causal_conv1d_fn,
    causal_conv1d_ref,
    causal_conv1d_update,
    causal_conv1d_update_ref,
)
from hf_toolssm.ops.kernels import causal_conv1d_kernels, mamba_ssm_kernels, use_causal_conv1d, use_mamba_ssm
from hf_toolssm.ops.selective_scan import (
    selective_scan_cuda,
    selective_scan_fn,
    selective_scan_ref,
    selective_state_update,
    selective_state_update_ref,
)


def _why_not_available() -> str | None:
    if not torch.cuda.is_available():
        return "no CUDA device"
    if mamba_ssm_kernels() is None:
        return "mamba-ssm's CUDA ops do not import (pip install '.[cuda]')"
    if causal_conv1d_kernels() is None:
        return "causal-conv1d does not import (pip install '.[cuda]')"
    return None


_REASON = _why_not_available()
pytestmark = [pytest.mark.cuda, pytest.mark.skipif(_REASON is not None, reason=_REASON or "")]

DEVICE = "cuda"
# Largest allowed |actual - expected| relative to max(1, max |expected|). The kernels compute in float32 with
# fast exp and a different summation order (mamba-ssm's own tests use rtol 6e-4 / atol 2e-3 in float32).
TOL_OUT, TOL_GRAD = 2e-3, 5e-3


@pytest.fixture(autouse=True, scope="module")
def exact_float32_matmuls():
    """TF32 would make the model comparisons below fail for reasons unrelated to the kernels."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def assert_close(actual, expected, tolerance, what=""):
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    scale = max(1.0, expected.abs().max().item())
    error = (actual.double() - expected.double()).abs().max().item()
    assert error <= tolerance * scale, f"{what}: max error {error:.3g} > {tolerance:.1g} * {scale:.3g}"


def cotangent(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# --------------------------------------------------------------------------------------------------
# Selective scan
# --------------------------------------------------------------------------------------------------


def scan_inputs(batch=2, d=16, n=8, length=37, *, D=True, z=True, delta_bias=True, initial_state=True, seed=0):
    g = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(DEVICE)

    return {
        "u": randn(batch, d, length),
        "delta": randn(batch, d, length, scale=0.5),
        "A": -(torch.rand(d, n, generator=g) * 2 + 0.2).to(DEVICE),
        "B": randn(batch, n, length),
        "C": randn(batch, n, length),
        "D": randn(d) if D else None,
        "z": randn(batch, d, length) if z else None,
        "delta_bias": randn(d, scale=0.5) if delta_bias else None,
        "initial_state": randn(batch, d, n) if initial_state else None,
    }


def run_scan(path, inputs, *, dtype=None, last_state_in_loss=False):
    leaves = {k: (v if dtype is None else v.to(dtype)).clone().requires_grad_(True)
              for k, v in inputs.items() if v is not None}
    y, last = path(**leaves, delta_softplus=True, return_last_state=True)
    loss = (y * cotangent(y.shape, 1).to(y)).sum()
    if last_state_in_loss:
        loss = loss + (last * cotangent(last.shape, 2).to(last)).sum()
    loss.backward()
    return y.detach(), last.detach(), {k: v.grad for k, v in leaves.items()}


VARIANTS = {
    "everything": {},
    "bare": dict(D=False, z=False, delta_bias=False, initial_state=False),
    "no_initial_state": dict(initial_state=False),
    "initial_state_no_z": dict(z=False),
}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("length", [1, 7, 37, 129, 2100])  # 2100 > the kernel's 2048-step chunk
def test_selective_scan_cuda_matches_reference(length, variant):
    """Outputs, last state and the gradients of every input (loss on y: see the last-state test below)."""
    inputs = scan_inputs(length=length, **VARIANTS[variant])
    y, last, grads = run_scan(selective_scan_cuda, inputs)
    y_ref, last_ref, grads_ref = run_scan(selective_scan_ref, inputs, dtype=torch.float64)
    assert_close(y, y_ref, TOL_OUT, "y")
    assert_close(last, last_ref, TOL_OUT, "last state")
    assert grads.keys() == grads_ref.keys()
    for name in grads_ref:
        assert grads[name] is not None, f"no gradient for {name}"
        assert_close(grads[name], grads_ref[name], TOL_GRAD, f"d loss / d {name}")


def test_selective_scan_cuda_prefix_then_rest_from_its_state_equals_full_scan():
    inputs = scan_inputs(length=64)
    full_y, full_last = selective_scan_cuda(**inputs, delta_softplus=True, return_last_state=True)

    def time_slice(start, stop):
        return {k: (v[..., start:stop].contiguous() if k in ("u", "delta", "B", "C", "z") else v)
                for k, v in inputs.items()}

    prefix_y, prefix_last = selective_scan_cuda(**time_slice(0, 20), delta_softplus=True, return_last_state=True)
    rest_y, rest_last = selective_scan_cuda(**{**time_slice(20, 64), "initial_state": prefix_last},
                                            delta_softplus=True, return_last_state=True)
    assert_close(torch.cat([prefix_y, rest_y], dim=2), full_y, TOL_OUT, "y")
    assert_close(rest_last, full_last, TOL_OUT, "last state")


def test_selective_scan_fn_dispatches_cuda_tensors_to_the_kernel():
    inputs = scan_inputs(length=9)
    assert use_mamba_ssm(inputs["u"]) is not None
    assert torch.equal(selective_scan_fn(**inputs, delta_softplus=True),
                       selective_scan_cuda(**inputs, delta_softplus=True))


@pytest.mark.xfail(reason="mamba-ssm's selective_scan_fn does not backpropagate through last_state "
                          "(documented in its docstring), so training through a cache continuation on CUDA "
                          "misses that gradient", strict=False)
def test_selective_scan_cuda_gradient_through_the_last_state():
    inputs = scan_inputs(length=16)
    _, _, grads = run_scan(selective_scan_cuda, inputs, last_state_in_loss=True)
    _, _, grads_ref = run_scan(selective_scan_ref, inputs, dtype=torch.float64, last_state_in_loss=True)
    for name in grads_ref:
        assert_close(grads[name], grads_ref[name], TOL_GRAD, f"d loss / d {name}")


@pytest.mark.parametrize("with_optional", [True, False])
def test_selective_state_update_cuda_token_by_token_equals_reference(with_optional):
    inputs = scan_inputs(length=12, D=with_optional, z=with_optional, delta_bias=with_optional)
    y_ref, last_ref = selective_scan_ref(**inputs, delta_softplus=True, return_last_state=True)
    state = inputs["initial_state"].clone()
    ys = []
    for t in range(12):
        ys.append(selective_state_update(  # mamba-ssm's Triton kernel: the tensors are on CUDA
            state, inputs["u"][:, :, t].contiguous(), inputs["delta"][:, :, t].contiguous(), inputs["A"],
            inputs["B"][:, :, t].contiguous(), inputs["C"][:, :, t].contiguous(), D=inputs["D"],
            z=inputs["z"][:, :, t].contiguous() if inputs["z"] is not None else None,
            dt_bias=inputs["delta_bias"], dt_softplus=True,
        ))
    assert use_mamba_ssm(state) is not None
    assert_close(torch.stack(ys, dim=2), y_ref, TOL_OUT, "y")
    assert_close(state, last_ref, TOL_OUT, "state")


def test_selective_state_update_cuda_equals_reference_on_one_step():
    inputs = scan_inputs(length=1)
    args = [inputs[k][:, :, 0].contiguous() for k in ("u", "delta")] + [inputs["A"]] + \
        [inputs[k][:, :, 0].contiguous() for k in ("B", "C")]
    kwargs = dict(D=inputs["D"], z=inputs["z"][:, :, 0].contiguous(), dt_bias=inputs["delta_bias"], dt_softplus=True)
    state_kernel, state_ref = inputs["initial_state"].clone(), inputs["initial_state"].clone()
    y_kernel = selective_state_update(state_kernel, *args, **kwargs)
    y_ref = selective_state_update_ref(state_ref, *args, **kwargs)
    assert_close(y_kernel, y_ref, TOL_OUT, "y")
    assert_close(state_kernel, state_ref, TOL_OUT, "state")


# --------------------------------------------------------------------------------------------------
# Causal conv1d
# --------------------------------------------------------------------------------------------------


def conv_inputs(batch=2, d=16, length=37, width=4, *, bias=True, initial_state=True, seed=0):
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g).to(DEVICE)

    return {
        "x": randn(batch, d, length),
        "weight": randn(d, width),
        "bias": randn(d) if bias else None,
        "initial_state": randn(batch, d, width - 1) if initial_state else None,
    }


def run_conv(path, inputs, activation, return_final_state, dtype=None):
    leaves = {k: (v if dtype is None else v.to(dtype)).clone().requires_grad_(True)
              for k, v in inputs.items() if v is not None}
    out = path(**leaves, activation=activation, return_final_state=return_final_state)
    y, final = out if return_final_state else (out, None)
    loss = (y * cotangent(y.shape, 1).to(y)).sum()
    if final is not None:
        loss = loss + (final * cotangent(final.shape, 2).to(final)).sum()
    loss.backward()
    return y.detach(), None if final is None else final.detach(), {k: v.grad for k, v in leaves.items()}


@pytest.mark.parametrize("return_final_state", [True, False])
@pytest.mark.parametrize("initial_state", [True, False])
@pytest.mark.parametrize("activation", ["silu", None])
@pytest.mark.parametrize("width", [2, 3, 4])
@pytest.mark.parametrize("length", [1, 7, 129])
def test_causal_conv1d_cuda_matches_reference(length, width, activation, initial_state, return_final_state):
    inputs = conv_inputs(length=length, width=width, initial_state=initial_state)
    y, final, grads = run_conv(causal_conv1d_cuda, inputs, activation, return_final_state)
    y_ref, final_ref, grads_ref = run_conv(causal_conv1d_ref, inputs, activation, return_final_state,
                                           dtype=torch.float64)
    assert_close(y, y_ref, TOL_OUT, "y")
    if return_final_state:
        assert_close(final, final_ref, TOL_OUT, "final state")
    for name in grads_ref:
        assert grads[name] is not None, f"no gradient for {name}"
        assert_close(grads[name], grads_ref[name], TOL_GRAD, f"d loss / d {name}")


def test_causal_conv1d_fn_dispatches_cuda_tensors_to_the_kernel():
    inputs = conv_inputs()
    assert use_causal_conv1d(inputs["x"]) is not None
    assert torch.equal(causal_conv1d_fn(**inputs, activation="silu"), causal_conv1d_cuda(**inputs, activation="silu"))


@pytest.mark.parametrize("activation", ["silu", None])
@pytest.mark.parametrize("width", [2, 4])
def test_causal_conv1d_update_cuda_token_by_token_equals_full_conv(width, activation):
    inputs = conv_inputs(length=9, width=width)
    y_ref, final_ref = causal_conv1d_ref(**inputs, activation=activation, return_final_state=True)
    state = inputs["initial_state"].clone()  # (b, d, k-1): causal-conv1d >= 1.4 accepts state_len >= k-1
    ys = [causal_conv1d_update(inputs["x"][:, :, t].contiguous(), state, inputs["weight"], inputs["bias"], activation)
          for t in range(9)]
    assert use_causal_conv1d(state) is not None
    assert_close(torch.stack(ys, dim=2), y_ref, TOL_OUT, "y")
    assert_close(state, final_ref, TOL_OUT, "state")


def test_causal_conv1d_update_cuda_equals_update_reference():
    inputs = conv_inputs(length=1)
    state_kernel, state_ref = inputs["initial_state"].clone(), inputs["initial_state"].clone()
    x = inputs["x"][:, :, 0].contiguous()
    y_kernel = causal_conv1d_update(x, state_kernel, inputs["weight"], inputs["bias"], "silu")
    y_ref = causal_conv1d_update_ref(x, state_ref, inputs["weight"], inputs["bias"], "silu")
    assert_close(y_kernel, y_ref, TOL_OUT, "y")
    assert torch.equal(state_kernel, state_ref)


# --------------------------------------------------------------------------------------------------
# The model on CUDA equals the model on CPU
# --------------------------------------------------------------------------------------------------


def make_model_pair():
    """The same randomised ToolMamba on CPU and on CUDA (d_inner = 64: causal-conv1d wants a multiple of 8)."""
    from randomize import randomize_

    from hf_toolssm import ToolMambaConfig, ToolMambaForCausalLM

    torch.manual_seed(0)
    config = ToolMambaConfig(vocab_size=48, hidden_size=32, state_size=8, num_hidden_layers=2, time_step_rank=4,
                             pad_token_id=0, bos_token_id=1, eos_token_id=2)
    cpu = randomize_(ToolMambaForCausalLM(config), seed=0).eval()  # away from the init, so that the SSM matters
    return cpu, copy.deepcopy(cpu).to(DEVICE)


@pytest.fixture(scope="module")
def models():
    return make_model_pair()


def ids(batch, length, seed=0):
    return torch.randint(3, 48, (batch, length), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def test_model_on_cuda_equals_model_on_cpu(models):
    cpu, cuda = models
    tokens = ids(2, 40)
    assert_close(cuda(tokens.to(DEVICE), use_cache=False).logits.cpu(), cpu(tokens, use_cache=False).logits,
                 TOL_OUT, "logits")


@torch.no_grad()
@pytest.mark.parametrize("chunks", [[10, 1, 1, 1, 1], [10, 5], [10, 2, 1, 3]])
def test_model_on_cuda_prefix_plus_cache_equals_cpu_full_pass(models, chunks):
    """CUDA continuation (conv/scan kernels with initial states, Triton/causal-conv1d one-token updates)."""
    cpu, cuda = models
    tokens = ids(2, sum(chunks))
    expected = cpu(tokens, use_cache=False).logits
    cache, start, logits = None, 0, []
    for length in chunks:
        out = cuda(tokens[:, start : start + length].to(DEVICE), cache=cache, use_cache=True)
        cache, start = out.cache, start + length
        logits.append(out.logits.cpu())
    assert_close(torch.cat(logits, dim=1), expected, TOL_OUT, "logits")


@torch.no_grad()
def test_model_on_cuda_right_padded_chunk_on_a_cache_equals_cpu(models):
    """The fast tool loop's ragged feed on CUDA: rows feed 1, 6 and 0 tokens of a right-padded chunk (Δ = 0 on
    padding through the kernel's delta_softplus=False path, the conv state read at each row's last token)."""
    cpu, cuda = models
    tokens = ids(3, 16)
    mask = torch.tensor([[1] + [0] * 5, [1] * 6, [0] * 6])
    outputs = []
    for model, device in ((cpu, "cpu"), (cuda, DEVICE)):
        prefix = model(tokens[:, :10].to(device), use_cache=True)
        chunk = model(tokens[:, 10:].to(device), cache=prefix.cache, attention_mask=mask.to(device), use_cache=True)
        after = model(tokens[:, :1].to(device), cache=chunk.cache, use_cache=True)  # continues each row's state
        outputs.append((chunk.logits.cpu() * mask[:, :, None], after.logits.cpu()))
    assert_close(outputs[1][0], outputs[0][0], TOL_OUT, "chunk logits")
    assert_close(outputs[1][1], outputs[0][1], TOL_OUT, "logits after the chunk")


@torch.no_grad()
def test_model_on_cuda_one_token_step_with_a_row_of_padding_equals_cpu(models):
    """The fast tool loop holds a row whose program runs on a tool thread: it feeds that row padding alone, one
    token wide, through the step kernel, and the row's states are put back (here row 1)."""
    cpu, cuda = models
    tokens = ids(3, 12)
    mask = torch.tensor([[1], [0], [1]])
    outputs = []
    for model, device in ((cpu, "cpu"), (cuda, DEVICE)):
        prefix = model(tokens[:, :10].to(device), use_cache=True)
        step = model(tokens[:, 10:11].to(device), cache=prefix.cache, attention_mask=mask.to(device), use_cache=True)
        after = model(tokens[:, 11:].to(device), cache=step.cache, use_cache=True)  # continues each row's state
        outputs.append((step.logits.cpu() * mask[:, :, None], after.logits.cpu()))
    assert_close(outputs[1][0], outputs[0][0], TOL_OUT, "step logits")
    assert_close(outputs[1][1], outputs[0][1], TOL_OUT, "logits after the step")


def test_model_on_cuda_greedy_generation_equals_cpu(models):
    cpu, cuda = models
    prompt = ids(2, 6)
    kwargs = dict(max_new_tokens=12, min_new_tokens=12, do_sample=False)
    assert torch.equal(cuda.generate(prompt.to(DEVICE), **kwargs).cpu(), cpu.generate(prompt, **kwargs))


def test_model_on_cuda_training_step_equals_cpu():
    """Training on CUDA takes mamba-ssm's fused mamba_inner_fn: same loss and gradients as on CPU."""
    cpu, cuda = make_model_pair()
    cpu.train()
    cuda.train()
    tokens = ids(2, 33)
    cpu_loss = cpu(tokens, labels=tokens).loss
    cuda_loss = cuda(tokens.to(DEVICE), labels=tokens.to(DEVICE)).loss
    cpu_loss.backward()
    cuda_loss.backward()
    assert_close(cuda_loss.detach().cpu(), cpu_loss.detach(), TOL_OUT, "loss")
    cuda_parameters = dict(cuda.named_parameters())
    for name, parameter in cpu.named_parameters():
        assert_close(cuda_parameters[name].grad.cpu(), parameter.grad, TOL_GRAD, f"grad {name}")


@torch.no_grad()
def test_bfloat16_model_on_cuda_runs_and_is_close_to_float32(models):
    _, cuda = models
    bf16 = copy.deepcopy(cuda).to(torch.bfloat16)
    tokens = ids(2, 24).to(DEVICE)
    reference = cuda(tokens, use_cache=False).logits
    logits = bf16(tokens, use_cache=False).logits
    assert torch.isfinite(logits).all()
    error = (logits - reference).abs()
    assert error.mean() <= 0.03 * reference.abs().mean() and error.max() <= 0.1 * reference.abs().max()
    prefix = bf16(tokens[:, :12], use_cache=True)  # bf16 cache continuation through the kernels
    rest = bf16(tokens[:, 12:], cache=prefix.cache, use_cache=True)
    continued = torch.cat([prefix.logits, rest.logits], dim=1)
    assert (continued - logits).abs().mean() <= 0.03 * logits.abs().mean()
