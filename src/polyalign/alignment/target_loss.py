"""The training loss on target tokens only, unembedded in chunks: HF's value, a fraction of its cost.

Why: HF's causal-LM loss projects every position onto the vocabulary and takes a log-softmax
over [tokens, vocab] fp32 logits. With Gemma's 262k-token vocabulary that projection, the
log-softmax and their gradients are about half of a CPU training step (docs/benchmarks.md), yet
the loss reads only the positions whose next token is a target (the completion; prompt and
padding are masked). Here the model runs its body only (no logits), the target rows are kept,
and the unembedding (`polyalign.engine.unembed`: the model's own head and soft-cap) is applied to them
a chunk at a time: 128 MiB of fp32 logits, 128 rows of Gemma's vocabulary (on the demo's longest
batch, 1024-row chunks peaked 2 GB higher at the same speed in fp32); bf16 logits on a CPU stay bf16
through one fused kernel (`fused_loss`), 256 rows a chunk. Each chunk's gradient with respect
to its rows is taken as soon as its logits exist, so no logits tensor outlives its chunk. The
value, its normalisation (HF's `num_items_in_batch` under gradient accumulation and across
processes) and the LoRA gradients are HF's default loss's (tests/test_target_loss.py).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from transformers import Trainer

from polyalign.alignment.training_data import IGNORE
from polyalign.engine import cpu_kernels
from polyalign.engine.unembed import Unembed

CHUNK_BYTES = 128 * 2**20  # logits of one chunk of rows, as held (fp32; bf16 under the fused kernel)
FUSED_LOSS = "softmax_xent_bf16"  # polyalign.engine.cpu_kernels package of softmax_cross_entropy
BATCH_ONLY = ("labels", "shift_labels", "logits_to_keep")  # what the loss reads, not the model


class _RowGradients(torch.autograd.Function):
    """Summed cross-entropy of rows; forward also takes d(sum)/d(rows) chunk by chunk (the unembedding
    is frozen), so backward only scales that [rows, hidden] gradient, never a [rows, vocab] one."""

    @staticmethod
    def forward(ctx, rows: torch.Tensor, targets: torch.Tensor, unembed: Unembed, chunk: int) -> torch.Tensor:
        total = torch.zeros((), dtype=torch.float32, device=rows.device)
        grads = torch.empty_like(rows)  # [rows, hidden]
        head_loss = plain_head_loss if unembed.plain_head else module_head_loss
        for start in range(0, len(rows), chunk):
            piece, wanted = rows[start : start + chunk].detach(), targets[start : start + chunk]
            loss, grads[start : start + chunk] = head_loss(piece, wanted, unembed)
            total += loss
        ctx.save_for_backward(grads)
        return total

    @staticmethod
    def backward(ctx, grad_total: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        (grads,) = ctx.saved_tensors
        return grads * grad_total.to(grads.dtype), None, None, None


def module_head_loss(piece: torch.Tensor, targets: torch.Tensor, unembed: Unembed) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed cross-entropy, its gradient [chunk, hidden] w.r.t. `piece`) through `unembed.forward`:
    any head, by autograd."""
    piece = piece.requires_grad_()
    with torch.enable_grad():
        loss = F.cross_entropy(unembed.forward(piece), targets, reduction="sum")  # [chunk, vocab] fp32 logits
    (grad,) = torch.autograd.grad(loss, piece)
    return loss.detach(), grad


def plain_head_loss(piece: torch.Tensor, targets: torch.Tensor, unembed: Unembed) -> tuple[torch.Tensor, torch.Tensor]:
    """The same for a frozen plain head, written out: logits in the head's dtype, the loss and
    d loss / d logits = softmax - one-hot reduced in float32 in place, then that gradient @ head.
    Why: a bf16 head went through `unembed.forward`'s float32 upcast of all 262k rows, which bf16
    autocast cast back to bf16 anyway, with the logits sliced under autograd: on an AMX CPU, two
    thirds of a bf16 training step (gemma-3-270m); and autograd's log-softmax writes, reads and
    fills [chunk, vocab] tensors twice more than needed (fp32 as well). bf16 logits on a CPU go
    through one fused kernel instead (`fused_loss`), which never holds them in fp32."""
    weight, cap = unembed.head.weight, unembed.cap  # [vocab, hidden]
    with torch.autocast(piece.device.type, enabled=False), torch.no_grad():
        logits = F.linear(piece.to(weight.dtype), weight)  # [chunk, vocab], the head's dtype
        fused = None if cap else fused_loss(logits)
        if fused is not None:
            row_losses, probs = fused(logits, targets)  # [chunk] fp32, [chunk, vocab] bf16
            return row_losses.sum(), (probs @ weight).to(piece.dtype)
        logits = logits.float()
        squashed = None
        if cap:
            squashed = torch.tanh(logits / cap)
            logits = squashed * cap
        lse = torch.logsumexp(logits, -1)  # [chunk]
        loss = (lse - logits.gather(1, targets[:, None]).squeeze(1)).sum()
        probs = logits.sub_(lse[:, None]).exp_()  # softmax, in place
        probs[torch.arange(len(targets), device=targets.device), targets] -= 1  # d loss / d logits
        if squashed is not None:
            probs.mul_(1 - squashed * squashed)  # through the soft-cap
        grad = probs.to(weight.dtype) @ weight  # [chunk, hidden]
    return loss, grad.to(piece.dtype)


def softmax_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row [n]: -log softmax(logits [n, vocab])[target] in float32, and its gradient with respect
    to the logits (softmax - one-hot) rounded to their dtype: what the fused kernel compiles, one
    pass for the reductions and one for the gradient where eager bf16 makes six over [n, vocab]."""
    x = logits.float()
    lse = torch.logsumexp(x, -1)  # [n]
    picked = x.gather(1, targets[:, None]).squeeze(1)  # [n]
    probs = torch.exp(x - lse[:, None])  # [n, vocab]
    hit = torch.arange(x.shape[1], device=x.device)[None, :] == targets[:, None]
    return lse - picked, torch.where(hit, probs - 1, probs).to(logits.dtype)


def logit_examples() -> cpu_kernels.Examples:
    rows, vocab = torch.export.Dim("rows", min=1, max=1 << 30), torch.export.Dim("vocab", min=2, max=1 << 30)
    return (torch.randn(37, 96).bfloat16(), torch.randint(0, 96, (37,))), ({0: rows, 1: vocab}, {0: rows})


_PROBED: dict[str, Any] = {}


def fused_loss(logits: torch.Tensor):
    """The compiled `softmax_cross_entropy` for bf16 logits on a CPU outside autograd, once it matched
    the formula in float32 on random logits (losses within 1e-5, gradients within one bf16 ulp);
    None where it does not apply or cannot be had (then the eager passes run)."""
    if not (cpu_kernels.enabled() and cpu_kernels.eligible(logits)):
        return None
    if FUSED_LOSS not in _PROBED:
        kernel = cpu_kernels.load(FUSED_LOSS, softmax_cross_entropy, logit_examples)
        generator = torch.Generator().manual_seed(0)
        sample = (torch.randn(16, 5000, generator=generator) * 4).bfloat16()
        wanted = torch.randint(0, 5000, (16,), generator=generator)
        losses, grads = softmax_cross_entropy(sample.float(), wanted)
        ok = kernel is not None
        if kernel is not None:
            got_losses, got_grads = kernel(sample, wanted)
            ok = torch.allclose(got_losses, losses, rtol=1e-5, atol=1e-5)
            ok = ok and cpu_kernels.close_to_float32(got_grads, grads)
        _PROBED[FUSED_LOSS] = kernel if ok else None
    return _PROBED[FUSED_LOSS]


def held_logit_bytes(unembed: Unembed) -> int:
    """Bytes per logit a chunk holds: 2 where the fused kernel takes a frozen plain bf16 head's
    logits on a CPU (they are never upcast), else 4 (fp32)."""
    weight = getattr(unembed.head, "weight", None)
    if not (unembed.plain_head and not unembed.cap and isinstance(weight, torch.Tensor)) or weight.requires_grad:
        return 4
    with torch.no_grad():
        return 2 if fused_loss(torch.empty(0, 2, dtype=weight.dtype, device=weight.device)) is not None else 4


def loss_kernels(model: torch.nn.Module) -> list[str]:
    """The compiled kernels the target loss of `model` runs through ([] or [FUSED_LOSS])."""
    return [FUSED_LOSS] if held_logit_bytes(Unembed(model)) == 2 else []


def training_kernels(model: torch.nn.Module) -> list[str]:
    """The compiled kernels a bf16 training step of `model` runs through on a CPU: the norms' and the
    activation's (forward and backward, polyalign.engine.cpu_backward) and the loss's."""
    return sorted(cpu_kernels.in_use(model) + loss_kernels(model))


def chunk_rows(vocab_size: int, logit_bytes: int = 4) -> int:
    """Rows whose logits fill CHUNK_BYTES (fp32: 128 for Gemma's 262k vocabulary, 682 for SmolLM2's 49k)."""
    return max(1, CHUNK_BYTES // (logit_bytes * vocab_size))


def summed_cross_entropy(rows: torch.Tensor, targets: torch.Tensor, unembed: Unembed, chunk: int) -> torch.Tensor:
    """fp32 sum over rows [n, hidden] of -log p(target [n]), unembedded at most `chunk` rows at a time."""
    pieces = max(1, -(-len(rows) // chunk))
    chunk = max(1, -(-len(rows) // pieces))  # equal chunks: no small remainder (a slow matmul)
    frozen = not any(p.requires_grad for p in unembed.head.parameters())
    if torch.is_grad_enabled() and rows.requires_grad and frozen:
        return _RowGradients.apply(rows, targets, unembed, chunk)
    total = torch.zeros((), dtype=torch.float32, device=rows.device)
    for start in range(0, len(rows), chunk):  # evaluation, or a trainable head: plain autograd per chunk
        logits = unembed.forward(rows[start : start + chunk])  # [chunk, vocab] fp32
        total = total + F.cross_entropy(logits, targets[start : start + chunk], reduction="sum")
    return total


def target_loss(
    model: torch.nn.Module,
    inputs: dict[str, Any],
    unembed: Unembed,
    num_items_in_batch: torch.Tensor | int | None = None,
    chunk: int | None = None,
) -> tuple[torch.Tensor, Any]:
    """(mean next-token cross-entropy over the target tokens, the model's outputs without logits).

    Divided by `num_items_in_batch` when the Trainer passes it (targets of the whole accumulated
    batch, as HF's loss), else by this batch's targets. `model` may be wrapped (PEFT, DDP): it is
    called as a whole, so a distributed wrapper sees the forward it needs. `chunk`: rows unembedded
    at once (default `chunk_rows`).
    """
    labels = inputs["labels"]  # [batch, seq], IGNORE on prompt and padding
    body = {k: v for k, v in inputs.items() if k not in BATCH_ONLY}
    no_position = torch.zeros(0, dtype=torch.long, device=labels.device)  # the head runs below, on targets
    outputs = model(**body, logits_to_keep=no_position, output_hidden_states=True)
    hidden = outputs.hidden_states[-1]  # [batch, seq, hidden]: the decoder's final, normed output
    next_labels = F.pad(labels[:, 1:], (0, 1), value=IGNORE)  # [batch, seq]: the token each position predicts
    keep = next_labels != IGNORE  # [batch, seq]
    rows = hidden[keep]  # [targets, hidden]
    chunk = chunk or chunk_rows(unembed.vocab_size, held_logit_bytes(unembed))
    total = summed_cross_entropy(rows, next_labels[keep], unembed, chunk)
    count = num_items_in_batch if num_items_in_batch is not None else keep.sum()
    if torch.is_tensor(count):
        count = count.to(total.device)
    return total / count, outputs


class TargetLossTrainer(Trainer):
    """HF's Trainer with `target_loss` in place of the model's full-vocabulary loss."""

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        unembed = Unembed(self.accelerator.unwrap_model(model))
        with self.accelerator.autocast():  # mixed precision wraps only the model's forward: the head runs here
            loss, outputs = target_loss(model, inputs, unembed, num_items_in_batch)
        counted = self.model_accepts_loss_kwargs and num_items_in_batch is not None
        if counted and self.args.average_tokens_across_devices:
            # As Trainer.compute_loss: num_items_in_batch counts every process's targets and DDP
            # averages gradients over processes, so the loss is scaled back up by their number.
            loss = loss * (self.accelerator.num_processes if self.args.n_gpu <= 1 else self.args.n_gpu)
        return (loss, outputs) if return_outputs else loss
