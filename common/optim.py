"""The optimizers: torch's AdamW (the default), and the AdamW of transformers 4.12, which the original used.

The two differ in where epsilon goes. torch adds it to the bias-corrected root of the second moment; 4.12
added it to the uncorrected root and folded both bias corrections into the step size, so its effective
epsilon is eps / sqrt(1 - beta2**t): about 32 eps at the first step, shrinking towards eps over thousands
of steps. For weights whose gradients are near eps or below, the first updates differ by more than 10 %.
"""

from __future__ import annotations

import math

import torch


class OriginalAdamW(torch.optim.Optimizer):
    """transformers 4.12's AdamW (`correct_bias=True`), step for step: moments, then the parameter moves by
    -lr * sqrt(1 - beta2**t) / (1 - beta1**t) * m / (sqrt(v) + eps), then decoupled weight decay
    p -= lr * weight_decay * p on the moved parameter."""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-6, weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.mul_(beta1).add_(p.grad, alpha=1.0 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(p.grad, p.grad, value=1.0 - beta2)
                denom = exp_avg_sq.sqrt().add_(group["eps"])
                step_size = group["lr"] * math.sqrt(1.0 - beta2 ** state["step"]) / (1.0 - beta1 ** state["step"])
                p.addcdiv_(exp_avg, denom, value=-step_size)
                if group["weight_decay"] > 0.0:
                    p.add_(p, alpha=-group["lr"] * group["weight_decay"])
        return loss


def adamw(groups: list[dict], kind: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW with eps 1e-8 (the original's): torch's (`kind` "adamw") or transformers 4.12's ("original")."""
    if kind == "original":
        return OriginalAdamW(groups, lr=lr, eps=1e-8, weight_decay=weight_decay)
    # foreach: one call per step for all the parameters instead of one per tensor, the same numbers; on
    # CPU, where it is not the default, it halves the step of a frozen cell's small head.
    return torch.optim.AdamW(groups, lr=lr, eps=1e-8, weight_decay=weight_decay, foreach=True)
