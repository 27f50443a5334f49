"""Measured peak memory of one eval batch or a few training steps, to check the planner against.

Run in a fresh process (the peak of one process is what is measured):
  python scripts/memory_probe.py eval smollm2-135m --batch 8 --suffix 64 --prefix 200
  python scripts/memory_probe.py train gemma-3-270m --batch 2 --seq 96
Prints one JSON line: the measured peak above the baseline (the interpreter with torch, transformers
and peft imported; Linux VmHWM, reset after the imports) and, on CUDA, torch.cuda.max_memory_allocated,
next to the planner's estimate for the same shapes.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from pathlib import Path


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def _reset_peak() -> int:
    Path("/proc/self/clear_refs").write_text("5")
    return _status("VmRSS")


def run_eval(args) -> tuple[dict, object]:
    import torch

    from polyalign.engine.memory_plan import EvalShape, eval_estimate
    from polyalign.engine.model_shapes import model_shape
    from polyalign.engine.models import load_model
    from polyalign.engine.scoring import Item, Scorer

    dtype = {"bf16": "bfloat16", "fp32": "float32"}[args.precision]
    model, tokenizer = load_model(args.model, device=args.device, dtype=dtype)
    rng = random.Random(0)
    vocab = len(tokenizer)
    prefix = [rng.randrange(10, vocab) for _ in range(args.prefix)]
    items = [Item(i, prefix + [rng.randrange(10, vocab) for _ in range(args.suffix)], {}) for i in range(args.batch)]
    Scorer(model, tokenizer).score(items, args.prefix, "prefix", {"a": [5, 6], "b": [7]}, args.batch)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    job = EvalShape(
        prefix=args.prefix,
        suffix=args.suffix,
        batch=args.batch,
        precision=args.precision,
        on_host=args.device == "cpu",
        rows=args.batch,
    )
    return {"tokens": args.suffix}, eval_estimate(model_shape(args.model), job)


def run_train(args) -> tuple[dict, object]:
    import torch

    from polyalign.alignment.train_config import load_config
    from polyalign.alignment.training import train
    from polyalign.core.files import write_jsonl
    from polyalign.engine.memory_plan import TrainShape, train_estimate
    from polyalign.engine.model_shapes import model_shape
    from polyalign.engine.models import load_tokenizer

    tokenizer = load_tokenizer(args.model)
    words = " ".join(["hello"] * (args.seq // 2))
    rows = [{"prompt": f"{i} {words}", "completion": f" {words} {i}"} for i in range(args.batch * 2)]
    seq = max(len(tokenizer(r["prompt"] + r["completion"])["input_ids"]) + 1 for r in rows)
    overrides = [f"per_device_batch={args.batch}", "grad_accum=1", "max_steps=1", "val_size=0", "save_steps=100"]
    overrides += [f"precision={args.precision}", f"gradient_checkpointing={str(args.checkpointing).lower()}"]
    overrides += [f"quantization={args.quantization}"] if args.quantization else []
    cfg = load_config(overrides=overrides)
    with tempfile.TemporaryDirectory() as tmp:
        write_jsonl(Path(tmp) / "pairs.jsonl", rows)
        train(args.model, Path(tmp) / "pairs.jsonl", Path(tmp) / "run", cfg)
    job = TrainShape(
        batch=args.batch,
        seq=seq,
        rank=cfg.lora_rank,
        modules=tuple(cfg.target_modules),
        precision=args.precision,
        gradient_checkpointing=args.checkpointing,
        quantization=args.quantization,
        on_host=not torch.cuda.is_available(),
    )
    return {"tokens": seq}, train_estimate(model_shape(args.model), job)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["eval", "train"])
    parser.add_argument("model")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--prefix", type=int, default=200)
    parser.add_argument("--suffix", type=int, default=64)
    parser.add_argument("--seq", type=int, default=96)
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    parser.add_argument("--checkpointing", action="store_true")
    parser.add_argument("--quantization", default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    import peft  # noqa: F401  (the baseline holds the libraries, not the model)
    import torch
    import transformers  # noqa: F401

    baseline = _reset_peak()
    shapes, estimate = (run_eval if args.kind == "eval" else run_train)(args)
    measured = _status("VmHWM") - baseline
    row = {"kind": args.kind, "model": args.model, **shapes, "measured_rss": measured}
    if torch.cuda.is_available():
        row["measured_cuda"] = torch.cuda.max_memory_allocated()
    row |= {"estimate": estimate.peak, "parts": estimate.parts}  # type: ignore[attr-defined]
    print(json.dumps(row))


if __name__ == "__main__":
    main()
