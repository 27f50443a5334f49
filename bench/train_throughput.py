"""Training throughput: polyalign's LoRA training vs a plain HF Trainer + PEFT loop.

Why: alignment data mixes languages whose questions differ a lot in token length; polyalign
batches similar lengths together (group_by_length) and computes the loss on target tokens
only, unembedding just those positions in chunks (polyalign.alignment.target_loss). This runs both loops
on the same model, pairs, LoRA and batch size, each in its own process, and reports real
(non-padding) tokens per second of the training loop (wall and CPU time), the padding fraction
and the process's peak resident memory (ru_maxrss: loading included, the same model in both),
so the effect of each is measured rather than assumed. On a machine shared with other jobs,
OMP_NUM_THREADS=1 keeps torch's threads from waiting on each other (docs/benchmarks.md).

    python bench/train_throughput.py --model smollm2-135m --pairs 64 --steps 8 [--out FILE.json]
    OMP_NUM_THREADS=1 python bench/train_throughput.py --demo --steps 8 --precision fp32  # the demo's 500 pairs
    python bench/train_throughput.py --demo --pairs 16 --batch 16 --steps 3 --precisions fp32,bf16  # side by side

Exits 0 whatever the ratio; non-zero only on errors.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local

import torch  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from polyalign.alignment import (
    train_config,  # noqa: E402
    training,  # noqa: E402
)
from polyalign.alignment.alignment_data import PairRequest, build_pairs, write_pairs  # noqa: E402
from polyalign.core.errors import PolyalignError  # noqa: E402
from polyalign.core.prompts import PromptPack  # noqa: E402
from polyalign.engine.precision import cpu_description, resolve_precision  # noqa: E402

SOURCES = ["zh", "de", "es", "it", "sw"]  # every language with a benchmark question file


class Counter:
    """Wraps a collator: counts real and padded token positions of every batch it builds."""

    def __init__(self, collate):
        self.collate, self.real, self.total = collate, 0, 0

    def __call__(self, features):
        batch = self.collate(features)
        self.real += int(batch["attention_mask"].sum())
        self.total += batch["attention_mask"].numel()
        return batch


class Clock(TrainerCallback):
    """Wall and CPU time of the training loop only (no loading, tokenization or saving). CPU time
    (all threads of the process) is the steadier one on a machine shared with other jobs."""

    def on_train_begin(self, args, state, control, **kwargs):
        self.start, self.cpu_start = time.perf_counter(), time.process_time()

    def on_train_end(self, args, state, control, **kwargs):
        self.seconds = time.perf_counter() - self.start
        self.cpu_seconds = time.process_time() - self.cpu_start
        self.loss = next((h["train_loss"] for h in reversed(state.log_history) if "train_loss" in h), None)


def result(name: str, counter: Counter, clock: Clock) -> dict:
    return {
        "name": name,
        "seconds": clock.seconds,
        "real_tokens": counter.real,
        "tokens_per_second": counter.real / clock.seconds,
        "tokens_per_cpu_second": counter.real / clock.cpu_seconds,
        "padding_fraction": 1 - counter.real / max(counter.total, 1),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # Linux: KiB
        "train_loss": getattr(clock, "loss", None),
    }


def run_polyalign(model: str, data: Path, cfg: train_config.TrainConfig, work: Path) -> dict:
    """polyalign.alignment.training.train as users run it, with its collator instrumented."""
    counters = []
    original = training.PadCollator

    def counted(pad_id, **kwargs):
        counters.append(Counter(original(pad_id, **kwargs)))
        return counters[-1]

    training.PadCollator = counted
    clock = Clock()
    try:
        training.train(model, data, work / "polyalign", cfg, overwrite=True, callbacks=[clock])
    finally:
        training.PadCollator = original
    return result("polyalign", counters[0], clock)


def run_baseline(model: str, rows: list[dict], cfg: train_config.TrainConfig, work: Path) -> dict:
    """The common recipe: prompt+completion as one text, causal-LM collator, random batches."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, DataCollatorForLanguageModeling, Trainer, TrainingArguments

    from polyalign.engine.model_paths import resolve_model_path
    from polyalign.engine.models import load_tokenizer

    tok = load_tokenizer(model)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    texts = [r["prompt"] + r["completion"] + (tok.eos_token or "") for r in rows]
    dataset = [{"input_ids": ids} for ids in tok(texts, truncation=True, max_length=cfg.cutoff_len)["input_ids"]]
    bf16 = resolve_precision(cfg.precision, "cuda" if torch.cuda.is_available() else "cpu") == "bf16"  # as polyalign
    net = AutoModelForCausalLM.from_pretrained(
        resolve_model_path(model), dtype=torch.bfloat16 if bf16 else torch.float32
    )
    net = get_peft_model(
        net,
        LoraConfig(
            r=cfg.lora_rank,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=cfg.target_modules,
            task_type="CAUSAL_LM",
        ),
    )
    args = TrainingArguments(
        output_dir=str(work / "baseline"),
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.per_device_batch,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio,
        bf16=bf16,
        logging_steps=cfg.logging_steps,
        save_strategy="no",
        report_to="none",
        seed=cfg.seed,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        use_cpu=not torch.cuda.is_available(),
    )
    counter, clock = Counter(DataCollatorForLanguageModeling(tok, mlm=False)), Clock()
    Trainer(
        model=net, args=args, train_dataset=dataset, data_collator=counter, processing_class=tok, callbacks=[clock]
    ).train()
    return result("HF Trainer + PEFT", counter, clock)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument(
        "--pairs", type=int, default=None, help="pairs in the mixture (default 64 over 5 languages; --demo: 500)"
    )
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--cutoff", type=int, default=512)
    parser.add_argument("--data-dir")
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"], help="both loops")
    parser.add_argument(
        "--demo",
        action="store_true",
        help="the demo's pairs: emotion questions of held-out items 250:500, zh/es => en, paper "
        "prompts, on gemma-3-270m (overrides --model)",
    )
    parser.add_argument(
        "--precisions",
        help="e.g. fp32,bf16: only polyalign's loop, once per precision (each its own process), side by side",
    )
    parser.add_argument("--out", help="also write the results as JSON here")
    parser.add_argument("--loop", choices=["baseline", "polyalign"], help=argparse.SUPPRESS)  # a child process
    parser.add_argument("--work", help=argparse.SUPPRESS)  # the child's folder: pairs.jsonl in, LOOP.json out
    args = parser.parse_args(argv)
    if args.demo:
        args.model = "gemma-3-270m"
    if args.pairs is None:  # the demo trains on 250 pairs per source language: the sampler sees all 500
        args.pairs = 500 if args.demo else 64
    return args


def build_rows(args: argparse.Namespace) -> list[dict]:
    if args.demo:
        from polyalign.cli.demo import TRAIN_ITEMS
        from polyalign.core.tasks import resolve_data_dir

        pack = PromptPack.load(str(resolve_data_dir(args.data_dir) / "prompts.json"))
        return build_pairs(
            PairRequest(
                "emotion", ["zh", "es"], "en", max(1, args.pairs // 2), 0, args.data_dir, pack, items=TRAIN_ITEMS
            )
        )
    per_language = max(1, args.pairs // len(SOURCES))
    return build_pairs(PairRequest("snli", SOURCES, "en", per_language, 0, args.data_dir, PromptPack.load()))


def bench_config(args: argparse.Namespace) -> train_config.TrainConfig:
    return train_config.load_config(
        None,
        [
            f"max_steps={args.steps}",
            f"per_device_batch={args.batch}",
            f"grad_accum={args.grad_accum}",
            f"cutoff_len={args.cutoff}",
            "val_size=0",
            f"save_steps={10**6}",
            f"logging_steps={10**6}",
            f"precision={args.precision}",
        ],
    )


def run_loop(args: argparse.Namespace) -> None:
    """The child: one loop on work/pairs.jsonl; its result, with this process's peak memory, to work/LOOP.json."""
    work = Path(args.work)
    cfg = bench_config(args)
    if args.loop == "baseline":
        rows = [json.loads(line) for line in (work / "pairs.jsonl").read_text(encoding="utf-8").splitlines()]
        res = run_baseline(args.model, rows, cfg, work)
    else:
        res = run_polyalign(args.model, work / "pairs.jsonl", cfg, work)
    (work / f"{args.loop}.json").write_text(json.dumps(res) + "\n")


def in_subprocess(loop: str, argv: list[str], work: Path) -> dict:
    """One loop in a fresh process: its peak memory is its own, not the other loop's."""
    cmd = [sys.executable, __file__, *argv, "--loop", loop, "--work", str(work)]
    proc = subprocess.run(cmd, check=False)
    if proc.returncode != 0:
        raise PolyalignError(f"the {loop} loop failed (exit {proc.returncode})")
    return json.loads((work / f"{loop}.json").read_text(encoding="utf-8"))


def report(args: argparse.Namespace, n_rows: int, base: dict, ours: dict) -> None:
    threads = f"{torch.get_num_threads()} threads"
    device = "cuda" if torch.cuda.is_available() else f"cpu ({cpu_description()}, {os.cpu_count()} cores, {threads})"
    print(
        f"\nmodel {args.model}, {n_rows} pairs, {args.steps} steps x batch {args.batch} "
        f"x accum {args.grad_accum}, precision {args.precision}, device {device}"
    )
    print(f"{'loop':<20} {'tokens/s':>10} {'tokens/CPU-s':>13} {'padding':>8} {'seconds':>8} {'peak RSS MiB':>13}")
    for r in (base, ours):
        print(
            f"{r['name']:<20} {r['tokens_per_second']:>10.1f} {r['tokens_per_cpu_second']:>13.1f} "
            f"{r['padding_fraction']:>8.1%} {r['seconds']:>8.2f} {r['peak_rss_mib']:>13.0f}"
        )
    ratio = ours["tokens_per_second"] / base["tokens_per_second"]
    cpu_ratio = ours["tokens_per_cpu_second"] / base["tokens_per_cpu_second"]
    memory = ours["peak_rss_mib"] / base["peak_rss_mib"]
    print(f"polyalign / baseline tokens/s: {ratio:.2f}x (per CPU second {cpu_ratio:.2f}x); peak memory: {memory:.2f}x")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        record = {"config": vars(args), "device": device, "baseline": base, "polyalign": ours, "ratio": ratio}
        record["cpu_ratio"] = cpu_ratio
        Path(args.out).write_text(json.dumps(record, indent=2) + "\n")


def side_by_side(args: argparse.Namespace, argv: list[str], rows: list[dict]) -> None:
    """polyalign's loop once per precision of --precisions (fresh processes, same pairs), with the
    ratio of tokens/s to the first and the training loss (equal within bf16 noise)."""
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for precision in args.precisions.split(","):
            work = Path(tmp) / precision
            work.mkdir()
            write_pairs(rows, work / "pairs.jsonl")
            results.append(
                {"precision": precision, **in_subprocess("polyalign", [*argv, "--precision", precision], work)}
            )
    print(f"\nmodel {args.model}, {len(rows)} pairs, {args.steps} steps x batch {args.batch}, CPU {cpu_description()}")
    print(f"{'precision':<10} {'tokens/s':>10} {'vs first':>9} {'seconds':>8} {'peak RSS MiB':>13} {'train loss':>11}")
    for r in results:
        ratio = r["tokens_per_second"] / results[0]["tokens_per_second"]
        loss = "-" if r["train_loss"] is None else f"{r['train_loss']:.4f}"
        print(
            f"{r['precision']:<10} {r['tokens_per_second']:>10.1f} {ratio:>8.2f}x {r['seconds']:>8.2f} "
            f"{r['peak_rss_mib']:>13.0f} {loss:>11}"
        )
    if args.out:
        Path(args.out).write_text(json.dumps({"config": vars(args), "runs": results}, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    try:
        if args.loop:
            run_loop(args)
            return 0
        rows = build_rows(args)
        if args.precisions:
            side_by_side(args, argv, rows)
            return 0
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            write_pairs(rows, work / "pairs.jsonl")
            base = in_subprocess("baseline", argv, work)
            ours = in_subprocess("polyalign", argv, work)
    except PolyalignError as exc:
        print(f"train_throughput: error: {exc}", file=sys.stderr)
        return 2
    report(args, len(rows), base, ours)
    return 0


if __name__ == "__main__":
    sys.exit(main())
