"""The original's optimizer, transformers 4.12's AdamW, against an independent transcription of its update
rule (gradients far below epsilon included), and against torch's AdamW where the two must agree."""

import math

import numpy as np
import pytest
import torch

from common.optim import OriginalAdamW


def transformers_4_12(params, grads, lr, eps, weight_decay, betas=(0.9, 0.999)):
    """The 4.12 rule written out in float64 NumPy, one step at a time: m, v; then
    p <- p - lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps); then p <- p - lr * wd * p."""
    b1, b2 = betas
    p = [x.astype(np.float64) for x in params]
    m = [np.zeros_like(x) for x in p]
    v = [np.zeros_like(x) for x in p]
    for t, step_grads in enumerate(grads, 1):
        for i, g in enumerate(step_grads):
            g = g.astype(np.float64)
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            p[i] = p[i] - lr * math.sqrt(1 - b2**t) / (1 - b1**t) * m[i] / (np.sqrt(v[i]) + eps)
            p[i] = p[i] - lr * weight_decay * p[i]
    return p


def run(optimizer_class, params, grads, **options):
    tensors = [torch.nn.Parameter(torch.from_numpy(x.copy())) for x in params]
    optimizer = optimizer_class(tensors, **options)
    for step_grads in grads:
        for tensor, g in zip(tensors, step_grads, strict=True):
            tensor.grad = torch.from_numpy(g.copy())
        optimizer.step()
    return [t.detach().numpy() for t in tensors]


@pytest.mark.parametrize("scale", [1.0, 1e-6, 1e-10])  # gradients of 1, near eps (1e-8), and far below it
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_each_step_is_transformers_4_12s(scale, weight_decay):
    rng = np.random.default_rng(0)
    # weights of 1e-3: float32 resolves the far smaller updates of gradients below epsilon
    params = [1e-3 * rng.standard_normal(shape).astype(np.float32) for shape in ((4, 3), (5,))]
    grads = [[scale * rng.standard_normal(x.shape).astype(np.float32) for x in params] for _ in range(30)]
    got = run(OriginalAdamW, params, grads, lr=1e-3, eps=1e-8, weight_decay=weight_decay)
    expected = transformers_4_12(params, grads, lr=1e-3, eps=1e-8, weight_decay=weight_decay)
    for g, e, start in zip(got, expected, params, strict=True):
        # float32 precision: a few roundings of the parameter per step, against the exact rule
        tolerance = len(grads) * 4 * np.finfo(np.float32).eps * np.abs(e).max()
        moved = np.abs(e - start).max()
        assert moved > 100 * tolerance and np.abs(g - e).max() <= tolerance, (scale, np.abs(g - e).max(), moved)


def test_it_departs_from_torchs_adamw_where_gradients_are_near_epsilon_and_agrees_without_epsilon():
    rng = np.random.default_rng(1)
    params = [rng.standard_normal(64).astype(np.float32)]
    grads = [[1e-8 * rng.standard_normal(64).astype(np.float32)]]
    original = run(OriginalAdamW, params, grads, lr=1e-3, eps=1e-8)[0] - params[0]
    torch_adamw = run(torch.optim.AdamW, params, grads, lr=1e-3, eps=1e-8, weight_decay=0.0)[0] - params[0]
    assert np.median(np.abs(original / torch_adamw - 1)) > 0.1  # the first update: more than 10 % apart
    grads = [[rng.standard_normal(64).astype(np.float32)] for _ in range(20)]
    without = {
        name: run(cls, params, grads, lr=1e-3, eps=0.0, weight_decay=0.0)[0]
        for name, cls in (("original", OriginalAdamW), ("torch", torch.optim.AdamW))
    }
    np.testing.assert_allclose(without["original"], without["torch"], rtol=0, atol=1e-6)
