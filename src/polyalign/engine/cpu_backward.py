"""bf16 training on a CPU through the fused kernels: each forward kernel of polyalign.engine.cpu_kernels
paired with a fused backward kernel in one autograd Function.

Why: in a bf16 LoRA step of gemma-3-270m on an AMX CPU the norms (forward and autograd's backward)
took about 4 s and the gated gelu about 2.4 s of 36 s of operator time (docs/benchmarks.md, "The
fused bf16 loss kernel"): each is a chain of elementwise passes, several of them casts, where one
pass over the rows computes the same in float32. The backward kernels write out the analytic input
gradients in float32 and round once:

- RMSNorm, y = x * r * s with r = rsqrt(mean(x^2) + eps) and s = 1 + w (Gemma) or w (Llama):
  dx = r * (g s) - x * r^3 * mean(g s x);
- gelu_tanh(a) * u: da = g u (p + 2 a p (1 - p) c (1 + 3 k a^2)) with p = sigmoid(2 c (a + k a^3)),
  du = g gelu_tanh(a); silu(a) * u: da = g u p (1 + a (1 - p)) with p = sigmoid(a), du = g silu(a).

Only the inputs' gradients: a norm whose weight is trained keeps the eager forward. A backward kernel
is used only after a probe on random rows gives autograd's float32 gradients within one bf16 ulp
(plus 1e-3 of the largest, for the norm's cancellation); otherwise that module trains eagerly.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

PROBE_ROWS = 64
GELU_C, GELU_K = math.sqrt(2.0 / math.pi), 0.044715
Rows = tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]  # [n, d] view, back to the input's layout


def norm_backward_function(family: str, eps: float) -> Callable:
    """(x [n, d], w [d], g [n, d]) -> dx [n, d] for `family`'s RMSNorm, in float32, rounded once."""

    def backward(x: torch.Tensor, w: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        r = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)  # [n, 1]
        gs = g.float() * ((1.0 + w.float()) if family == "gemma" else w.float())
        return (r * gs - xf * r.pow(3) * (gs * xf).mean(-1, keepdim=True)).to(x.dtype)

    return backward


def gelu_tanh_mul_backward(a: torch.Tensor, u: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    af, uf, gf = a.float(), u.float(), g.float()
    p = torch.sigmoid(2 * GELU_C * (af + GELU_K * af * af * af))
    slope = p + 2 * af * p * (1 - p) * GELU_C * (1 + 3 * GELU_K * af * af)
    return (gf * uf * slope).to(a.dtype), (gf * af * p).to(u.dtype)


def silu_mul_backward(a: torch.Tensor, u: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    af, uf, gf = a.float(), u.float(), g.float()
    p = torch.sigmoid(af)
    return (gf * uf * p * (1 + af * (1 - p))).to(a.dtype), (gf * af * p).to(u.dtype)


GATED_BACKWARDS = {"gelu_tanh_mul": gelu_tanh_mul_backward, "silu_mul": silu_mul_backward}


def as_rows(x: torch.Tensor) -> Rows | None:
    """`x` ([..., d]) as a [n, d] view with the way back, for a contiguous `x` or a transposed
    [b, t, h, d] (attention's q/k norms) that is; None otherwise."""
    width = x.shape[-1]
    if x.is_contiguous():
        return x.view(-1, width), lambda rows: rows.view(x.shape)
    if x.dim() == 4 and x.transpose(1, 2).is_contiguous():
        swapped = x.transpose(1, 2)
        return swapped.reshape(-1, width), lambda rows: rows.view(swapped.shape).transpose(1, 2)
    return None


def same_rows(g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """`g` (x's shape, any layout) as [n, d] rows in the order `as_rows(x)` gives x's."""
    moved = g if x.is_contiguous() else g.transpose(1, 2)
    return moved.reshape(-1, g.shape[-1]).contiguous()


class FusedNorm(torch.autograd.Function):
    """A frozen-weight RMSNorm: the forward kernel, then the input gradient from the backward kernel;
    saves only the input (autograd's eager norm keeps several float32 intermediates)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, kernel: Callable, backward: Callable) -> torch.Tensor:
        rows, back = as_rows(x)  # type: ignore[misc]  # the caller checked the layout
        ctx.save_for_backward(x, weight)
        ctx.backward_kernel = backward
        return back(kernel(rows, weight))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        rows, back = as_rows(x)  # type: ignore[misc]
        return back(ctx.backward_kernel(rows, weight, same_rows(grad, x))), None, None, None


class FusedGatedMul(torch.autograd.Function):
    """act(gate) * up: the forward kernel, then both input gradients from one backward pass; saves
    gate and up only (eager saves the activation's output as well)."""

    @staticmethod
    def forward(ctx, gate: torch.Tensor, up: torch.Tensor, kernel: Callable, backward: Callable) -> torch.Tensor:
        width = gate.shape[-1]
        ctx.save_for_backward(gate, up)
        ctx.backward_kernel = backward
        return kernel(gate.reshape(-1, width), up.reshape(-1, width)).view(gate.shape)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        gate, up = ctx.saved_tensors
        width = gate.shape[-1]
        flat = (t.reshape(-1, width) for t in (gate, up, grad.contiguous()))
        d_gate, d_up = ctx.backward_kernel(*flat)
        return d_gate.view(gate.shape), d_up.view(up.shape), None, None


def grads_close(got: torch.Tensor, want: torch.Tensor) -> bool:
    """Within one bf16 ulp of float32 autograd's gradient, plus 1e-3 of its largest value."""
    slack = want.abs() * 2.0**-7 + 1e-3 * float(want.abs().max())
    return bool(((got.float() - want).abs() <= slack).all())


def norm_backward_agrees(kernel: Callable, module: torch.nn.Module) -> bool:
    """Whether a compiled norm backward gives autograd's gradient through `module`'s float32 forward."""
    import copy

    weight: torch.Tensor = module.weight  # type: ignore[assignment]
    generator = torch.Generator().manual_seed(1)
    x, g = ((torch.randn(PROBE_ROWS, int(weight.shape[0]), generator=generator) * 3).bfloat16() for _ in range(2))
    reference = copy.deepcopy(module).float().requires_grad_(False)
    leaf = x.float().requires_grad_()
    with torch.enable_grad():
        (want,) = torch.autograd.grad(type(reference).forward(reference, leaf), leaf, g.float())
    with torch.no_grad():
        return grads_close(kernel(x, weight.detach(), g), want)


def gated_backward_agrees(kernel: Callable, formula: Callable) -> bool:
    """Whether a compiled gated-activation backward gives autograd's gradients of formula(gate) * up."""
    generator = torch.Generator().manual_seed(1)
    gate, up, g = ((torch.randn(PROBE_ROWS, 64, generator=generator) * 3).bfloat16() for _ in range(3))
    leaves = [gate.float().requires_grad_(), up.float().requires_grad_()]
    with torch.enable_grad():
        want = torch.autograd.grad(formula(leaves[0]) * leaves[1], leaves, g.float())
    with torch.no_grad():
        got = kernel(gate, up, g)
    return all(grads_close(a, b) for a, b in zip(got, want))
