"""Parameters moved well away from their initialisation: at Mamba's init (Δ small, A's decay slow, the output
projection near zero) two scans that differ give nearly the same outputs, and comparisons would pass whatever the
scan did."""

import torch


@torch.no_grad()
def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Move every parameter well away from its initialisation, by name (so the same call randomises a
    transformers Mamba and a ToolMamba identically): A in [-2.5, -0.5], Δ = softplus(≈ -1) ≈ 0.3, every other
    parameter perturbed by N(0, 0.3). The SSM then carries information over many tokens."""
    g = torch.Generator().manual_seed(seed)
    for name, parameter in sorted(model.named_parameters()):
        noise = torch.randn(parameter.shape, generator=g)
        if name.endswith("A_log"):
            parameter.copy_(torch.log(torch.rand(parameter.shape, generator=g) * 2 + 0.5))
        elif name.endswith("dt_proj.bias"):
            parameter.copy_(noise * 0.5 - 1.0)
        else:
            parameter.add_(noise.to(parameter.dtype) * 0.3)
    return model
