"""ShakeDrop (Yamada et al. 2019), applied to a residual branch F(x) before it is added to the shortcut.

Training, per sample: gate b ~ Bernoulli(1 - p), alpha ~ U[-1, 1], beta ~ U[0, 1];
forward  F(x) * (b + alpha (1 - b)),  backward  dF * (b + beta (1 - b)).
Evaluation: F(x) * E[b + alpha (1 - b)] = F(x) * (1 - p).
The random numbers come from ``torch.rand`` on the input's device: no host sync, no ``.item()``,
so it runs under bf16 autocast and inside ``torch.compile(fullgraph=True)``.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


class _ShakeMultiply(torch.autograd.Function):
    """y = x * forward_scale with dL/dx = dL/dy * backward_scale (scales broadcast, e.g. (B,1,1,1))."""

    @staticmethod
    def forward(ctx, x: Tensor, forward_scale: Tensor, backward_scale: Tensor) -> Tensor:
        ctx.save_for_backward(backward_scale)
        return x * forward_scale

    @staticmethod
    def backward(ctx, grad: Tensor):
        (backward_scale,) = ctx.saved_tensors
        return grad * backward_scale, None, None


class ShakeDrop(nn.Module):
    """(B, ...) -> (B, ...): the branch scaled as in the module docstring; ``p_drop`` is p."""

    def __init__(self, p_drop: float, alpha_range: tuple[float, float] = (-1.0, 1.0),
                 beta_range: tuple[float, float] = (0.0, 1.0)):
        super().__init__()
        if not 0.0 <= p_drop < 1.0:
            raise ValueError(f"ShakeDrop p_drop must be in [0, 1), got {p_drop}")
        self.p_drop = float(p_drop)
        self.alpha_range = alpha_range
        self.beta_range = beta_range

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return x * (1.0 - self.p_drop)
        shape = (x.shape[0],) + (1,) * (x.dim() - 1)
        u = torch.rand((3,) + shape, device=x.device)  # gate, alpha, beta draws in one kernel
        keep = u[0] >= self.p_drop  # P(keep) = 1 - p
        (a0, a1), (b0, b1) = self.alpha_range, self.beta_range
        forward_scale = torch.where(keep, 1.0, a0 + (a1 - a0) * u[1]).to(x.dtype)
        backward_scale = torch.where(keep, 1.0, b0 + (b1 - b0) * u[2]).to(x.dtype)
        return _ShakeMultiply.apply(x, forward_scale, backward_scale)

    def extra_repr(self) -> str:
        return f"p_drop={self.p_drop:.4f}"


def linear_drop_probs(num_blocks: int, final: float) -> list[float]:
    """ShakeDrop's linear decay rule: p_l = final * l / L for blocks l = 1..L (the last one is ``final``)."""
    return [final * (l + 1) / num_blocks for l in range(num_blocks)]
