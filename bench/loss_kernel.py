"""The bf16 training loss's head with and without the fused kernel (polyalign.alignment.target_loss), in one process.

Why: a bf16 LoRA step of gemma-3-270m spends a large part of its time projecting the target rows onto the
262k vocabulary and taking the loss and its gradient there (docs/benchmarks.md, the training profile). The
eager passes upcast the bf16 logits to fp32 and go over them six times; the fused kernel reads them once
for the log-sum-exp and once to write the gradient, in chunks of twice the rows. Whole training runs on a
shared 2-core machine differ by more than this gains, so this times the head alone, the two variants
alternated round by round on the same rows: the frozen bf16 head of the model, random hidden rows (the
demo's 887 target tokens per step of 16 pairs by default), the loss and the gradient with respect to the
rows, as a training step takes them.

    python bench/loss_kernel.py [--model gemma-3-270m] [--rows 887] [--rounds 7] [--threads 2] [--out FILE]

Exits 0 whatever it finds.
"""

from __future__ import annotations

import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import bench_report  # noqa: E402
import torch  # noqa: E402

from polyalign.alignment import target_loss  # noqa: E402
from polyalign.engine.models import load_model  # noqa: E402
from polyalign.engine.precision import cpu_description  # noqa: E402
from polyalign.engine.unembed import Unembed  # noqa: E402

FUSED = target_loss.fused_loss


def head_step(unembed: Unembed, rows: torch.Tensor, targets: torch.Tensor, fused: bool) -> dict:
    """Seconds, loss and chunk rows of one loss + row-gradient pass, the kernel on or off."""
    target_loss.fused_loss = FUSED if fused else (lambda logits: None)
    try:
        chunk = target_loss.chunk_rows(unembed.vocab_size, target_loss.held_logit_bytes(unembed))
        start = time.perf_counter()
        loss = target_loss.summed_cross_entropy(rows, targets, unembed, chunk)
        (grad,) = torch.autograd.grad(loss, rows)
        seconds = time.perf_counter() - start
    finally:
        target_loss.fused_loss = FUSED
    return {"seconds": seconds, "loss": float(loss), "grad": grad, "chunk_rows": chunk}


def main(argv: list[str] | None = None) -> int:
    p = bench_report.parser(__doc__.splitlines()[0], rounds=7)
    p.add_argument("--rows", type=int, default=887)
    args = bench_report.parse(p, argv)
    net, _ = load_model(args.model, dtype="bfloat16")
    net.requires_grad_(False)  # LoRA training: the head is frozen
    unembed = Unembed(net)
    generator = torch.Generator().manual_seed(0)
    rows = torch.randn(args.rows, net.config.hidden_size, generator=generator).bfloat16().requires_grad_()
    targets = torch.randint(0, unembed.vocab_size, (args.rows,), generator=generator)
    seconds: dict[str, list[float]] = {"eager": [], "fused": []}
    last: dict[str, dict] = {}
    for _ in range(args.rounds):
        for name in seconds:
            last[name] = head_step(unembed, rows, targets, fused=name == "fused")
            seconds[name].append(last[name]["seconds"])
    eager, fused = last["eager"], last["fused"]
    scale = float(eager["grad"].float().abs().max())
    report = {
        "cpu": cpu_description(),
        "threads": args.threads,
        "workload": f"{args.model} bf16 head, {args.rows} target rows, loss + row gradient",
        "kernel_in_use": fused["chunk_rows"] != eager["chunk_rows"],
        "chunk_rows": {"eager": eager["chunk_rows"], "fused": fused["chunk_rows"]},
        "seconds": {name: [round(s, 3) for s in values] for name, values in seconds.items()},
        "median_speed_up": round(statistics.median(seconds["eager"]) / statistics.median(seconds["fused"]), 2),
        "loss": {"eager": eager["loss"], "fused": fused["loss"]},
        "grad_max_diff_over_max": float((fused["grad"].float() - eager["grad"].float()).abs().max()) / scale,
    }
    bench_report.emit(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
