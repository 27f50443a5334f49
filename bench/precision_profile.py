"""Where an evaluation and a training step spend their time, fp32 beside bf16: the profile behind the speed-ups.

Why: bf16 matmuls run several times faster than fp32 on a native-bf16 CPU (AMX: about 5x), yet a
whole evaluation or training step gains less, because everything that is not a matmul (norms,
activations, attention, casts, the loss over a 262k vocabulary) gains little or nothing. This runs
`polyalign eval` (one language, --no-verify) and two LoRA training steps of the demo's pairs under
torch's profiler, once per precision, in this process, and prints per run: wall seconds, the
matmul share of operator time, and the largest other operators. What is left after the matmuls is
what holds a precision back.

    python bench/precision_profile.py [--model gemma-3-270m] [--items 80:160] [--precisions fp32,bf16]
        [--phases eval,train] [--threads 1] [--shapes N] [--out FILE.json]

--shapes on the train phase holds every operator's input shapes: on a 24 GB machine the fp32 steps
ran out of memory (AMD EPYC, 2026-12-06); use it with --phases eval.

One thread by default: on a machine shared with other jobs, two threads wait on each other and the
profile shows the waiting, not the work. Exits 0 whatever it finds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from polyalign.cli.commands import main as polyalign_main  # noqa: E402
from polyalign.core.tasks import resolve_data_dir  # noqa: E402
from polyalign.engine.precision import cpu_description  # noqa: E402

MATMULS = ("aten::mm", "aten::bmm", "aten::addmm")
DTYPES = {"fp32": "float32", "bf16": "bfloat16"}


def summarize(prof, seconds: float, top: int = 6, shapes: int = 0) -> dict:
    """Wall seconds, operator seconds, matmul share and the largest other operators of one profile;
    with `shapes`, also its `shapes` largest operators by input shape (a profile recorded with shapes)."""
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events) / 1e6
    matmul = sum(e.self_cpu_time_total for e in events if e.key in MATMULS) / 1e6
    others = [(e.key, round(e.self_cpu_time_total / 1e6, 3)) for e in events if e.key not in MATMULS][:top]
    summary = {"wall_s": round(seconds, 2), "operator_s": round(total, 2), "matmul_share": matmul / total}
    if shapes:
        grouped = sorted(prof.key_averages(group_by_input_shape=True), key=lambda e: -e.self_cpu_time_total)
        summary["by_shape"] = [
            (e.key, str(e.input_shapes)[:90], round(e.self_cpu_time_total / 1e6, 3)) for e in grouped[:shapes]
        ]
    return {**summary, "others": others}


def profile_eval(args: argparse.Namespace, precision: str, work: Path) -> dict:
    data = resolve_data_dir(args.data_dir)
    argv = ["eval", "--model", args.model, "--task", "emotion", "--langs", args.lang, "--items", args.items]
    argv += [
        "--scoring",
        "prefix",
        "--mode",
        "english",
        "--data-dir",
        str(data),
        "--prompts",
        str(data / "prompts.json"),
    ]
    argv += ["--out", str(work / f"eval-{precision}"), "--overwrite", "--dtype", DTYPES[precision], "--no-verify"]
    with profile(activities=[ProfilerActivity.CPU], record_shapes=bool(args.shapes)) as prof:
        start = time.perf_counter()
        polyalign_main(argv)
        seconds = time.perf_counter() - start
    return summarize(prof, seconds, shapes=args.shapes)


class StepProfile(TrainerCallback):
    """Profiles the training steps after the first (the first pays for allocation and warm-up)."""

    def __init__(self, record_shapes: bool = False):
        self.record_shapes = record_shapes

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == 1:
            self.prof = profile(activities=[ProfilerActivity.CPU], record_shapes=self.record_shapes)
            self.prof.__enter__()
            self.start = time.perf_counter()

    def on_train_end(self, args, state, control, **kwargs):
        self.seconds = time.perf_counter() - self.start
        self.prof.__exit__(None, None, None)


def profile_train(args: argparse.Namespace, precision: str, work: Path) -> dict:
    from polyalign.alignment import train_config, training
    from polyalign.alignment.alignment_data import PairRequest, build_pairs, write_pairs
    from polyalign.cli.demo import TRAIN_ITEMS
    from polyalign.core.prompts import PromptPack

    pack = PromptPack.load(str(resolve_data_dir(args.data_dir) / "prompts.json"))
    rows = build_pairs(PairRequest("emotion", ["zh", "es"], "en", 8, 0, args.data_dir, pack, items=TRAIN_ITEMS))
    write_pairs(rows, work / f"pairs-{precision}.jsonl")
    overrides = ["max_steps=3", "per_device_batch=16", "val_size=0", "save_steps=1000000", "logging_steps=1000000"]
    cfg = train_config.load_config(None, [*overrides, f"precision={precision}"])
    clock = StepProfile(record_shapes=bool(args.shapes))
    pairs = work / f"pairs-{precision}.jsonl"
    training.train(args.model, pairs, work / f"train-{precision}", cfg, overwrite=True, callbacks=[clock])
    return {**summarize(clock.prof, clock.seconds, shapes=args.shapes), "steps": 2}


PHASES = {"eval": profile_eval, "train": profile_train}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--lang", default="en")
    parser.add_argument("--items", default="80:160")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--phases", default="eval,train")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--shapes", type=int, default=0, help="also list this many operators by input shape")
    parser.add_argument("--data-dir")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    unknown = set(args.phases.split(",")) - set(PHASES)
    if unknown:
        parser.error(f"--phases: {', '.join(sorted(unknown))} is not one of {', '.join(PHASES)}")
    torch.set_num_threads(args.threads)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for precision in args.precisions.split(","):
            for phase in args.phases.split(","):
                run = PHASES[phase](args, precision, Path(tmp))
                runs.append({"precision": precision, "phase": phase, **run})
    print(
        f"\n{args.model}, CPU {cpu_description()}, {args.threads} thread(s); phases {args.phases}: "
        f"eval {args.lang} {args.items}, 2 train steps of 16 pairs"
    )
    print("| precision | phase | wall s | operator s | matmul share | largest other operators (s) |")
    print("|---|---|---:|---:|---:|---|")
    for r in runs:
        others = ", ".join(f"{k.removeprefix('aten::')} {v}" for k, v in r["others"])
        print(
            f"| {r['precision']} | {r['phase']} | {r['wall_s']} | {r['operator_s']} | "
            f"{r['matmul_share']:.0%} | {others} |"
        )
    for r in runs:
        for name, shapes, seconds in r.get("by_shape", []):
            print(f"{r['precision']} {r['phase']}: {name} {shapes} {seconds} s")
    if args.out:
        Path(args.out).write_text(
            json.dumps({"cpu": cpu_description(), "threads": args.threads, "runs": runs}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
