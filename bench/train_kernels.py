"""bf16 LoRA training with and without the fused CPU kernels, beside fp32, alternated in one process.

Why one process: on a shared 2-core machine two training runs of the same variant differ by up to
1.4x, more than the kernels gain, so this runs polyalign's training loop (bench/train_throughput.py's,
with its token counter and clock) round by round, each round starting one variant later: fp32, bf16
with POLYALIGN_CPU_KERNELS=0 (eager norms, activation and loss passes) and bf16 with the kernels (the
default: polyalign.engine.cpu_kernels forward, polyalign.engine.cpu_backward backward, the fused loss
of polyalign.alignment.target_loss).
Each run loads the model afresh, so each variant installs what it uses. It reports real tokens per
second of the training loop per round, their medians, the ratios to fp32 and each run's train loss.

    python bench/train_kernels.py [--model gemma-3-270m] [--pairs 16] [--batch 16] [--steps 3]
        [--rounds 3] [--threads 2] [--out FILE.json]

The defaults are the demo's pairs (zh, es -> en emotion questions). Exits 0 whatever it finds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import bench_report  # noqa: E402
import train_throughput  # noqa: E402

from polyalign.alignment.alignment_data import write_pairs  # noqa: E402
from polyalign.engine.precision import cpu_description  # noqa: E402

VARIANTS = {"fp32": ("fp32", "1"), "bf16 eager": ("bf16", "0"), "bf16 kernels": ("bf16", "1")}


def main(argv: list[str] | None = None) -> int:
    p = bench_report.parser(__doc__.splitlines()[0], rounds=3)
    p.add_argument("--pairs", type=int, default=16)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--data-dir")
    args = bench_report.parse(p, argv)
    setup = argparse.Namespace(
        demo=True, pairs=args.pairs, data_dir=args.data_dir, steps=args.steps, batch=args.batch,
        grad_accum=1, cutoff=512, precision="fp32",
    )  # fmt: skip
    speeds: dict[str, list[float]] = {name: [] for name in VARIANTS}
    losses: dict[str, list[float]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_pairs(train_throughput.build_rows(setup), work / "pairs.jsonl")
        names = list(VARIANTS)
        for round_ in range(args.rounds):
            for name in names[round_ % 3 :] + names[: round_ % 3]:  # each variant first once: a machine speeding
                precision, kernels = VARIANTS[name]  # up or slowing down within a round favours none
                setup.precision = precision
                os.environ["POLYALIGN_CPU_KERNELS"] = kernels
                config = train_throughput.bench_config(setup)
                run = train_throughput.run_polyalign(args.model, work / "pairs.jsonl", config, work / "run")
                speeds[name].append(round(run["tokens_per_second"], 1))
                losses[name].append(run["train_loss"])
                print(f"{name}: {run['tokens_per_second']:.1f} tokens/s, loss {run['train_loss']:.5f}", flush=True)
    os.environ.pop("POLYALIGN_CPU_KERNELS")
    median = {name: statistics.median(s) for name, s in speeds.items()}
    report = {
        "cpu": cpu_description(),
        "threads": args.threads,
        "workload": f"{args.model}, {args.pairs} demo pairs, batch {args.batch}, {args.steps} steps, LoRA",
        "tokens_per_second": speeds,
        "median_vs_fp32": {name: round(m / median["fp32"], 2) for name, m in median.items()},
        "train_loss": losses,
    }
    bench_report.emit(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
