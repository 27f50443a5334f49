"""GPU check at the paper's sizes: random weights built from Mistral-7B's and Qwen1.5-14B's config.json
(src/polyalign/engine/shapes/, the real architectures and vocabularies; nothing is downloaded).

Per model: eval items/s of polyalign's scorer (shared few-shot prefix cache, planned batches) against
the paper's loop (one full forward per item); training tokens/s and MFU of polyalign's Trainer (target
loss) against a plain Trainer + PEFT (HF's full-vocabulary loss); and each peak
(torch.cuda.max_memory_allocated) against the planner's estimate. One JSON line per model.

  python scripts/gpu_check.py                      # one H200: about 10 minutes for both models
  python scripts/gpu_check.py --tiny --device cpu  # the same code on tiny shapes (tests/test_gpu_check.py)
"""

from __future__ import annotations

import argparse
import json
import random
import time

import torch

from polyalign.engine.memory_plan import EvalShape, TrainShape, eval_estimate, train_estimate
from polyalign.engine.model_shapes import read_config, shape_from_config

MODELS = ["mistralai/Mistral-7B-v0.1", "Qwen/Qwen1.5-14B"]
TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}
H200_BF16_PEAK = 989e12  # dense bf16 FLOP/s (MFU's denominator on an H200/H100 SXM)


def build(config: dict, tiny: bool, device: str, dtype: torch.dtype):
    """A random-weight model of the config's architecture (tiny: same vocabulary, 2 small layers)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if tiny:
        config = {**config, **TINY, "num_key_value_heads": min(config.get("num_key_value_heads", 4), 2)}
        config.pop("head_dim", None)
    cfg = AutoConfig.for_model(**config)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    return model.eval(), config


class Ids:
    """Token ids in place of a tokenizer: the scorer needs only a pad id."""

    pad_token_id = 0


def synthetic_items(vocab: int, n: int, prefix: int, suffix: int):
    from polyalign.engine.scoring import Item

    rng = random.Random(0)
    shared = [rng.randrange(10, vocab) for _ in range(prefix)]
    lengths = [rng.randrange(suffix // 2, suffix + 1) for _ in range(n)]
    return [Item(i, shared + [rng.randrange(10, vocab) for _ in range(k)], {}) for i, k in enumerate(lengths)]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak(device: str) -> int | None:
    return torch.cuda.max_memory_allocated() if device.startswith("cuda") else None


def eval_rates(model, items, prefix: int, batch: int, device: str, paper_items: int) -> dict:
    """items/s of polyalign's scorer and of the paper's loop (a full forward per item, last position)."""
    from polyalign.engine.scoring import Scorer

    sets = {"a": [5, 6], "b": [7]}
    scorer = Scorer(model, Ids())
    scorer.score(items[:batch], prefix, "prefix", sets, batch)  # warm-up
    reset_peak(device)
    sync(device)
    start = time.perf_counter()
    scorer.score(items, prefix, "prefix", sets, batch)
    sync(device)
    ours = len(items) / (time.perf_counter() - start)
    measured = peak(device)
    start = time.perf_counter()
    with torch.inference_mode():
        for item in items[:paper_items]:
            logits = model(input_ids=torch.tensor([item.ids], device=device)).logits[0, -1].float()
            logits.softmax(-1)[sets["a"]].sum().item()
    sync(device)
    paper = paper_items / (time.perf_counter() - start)
    return {"items_per_s": round(ours, 2), "paper_loop_items_per_s": round(paper, 2), "peak": measured}


def train_rates(model, vocab: int, seq: int, batch: int, steps: int, device: str, polyalign_loss: bool) -> dict:
    """Tokens/s and the peak of a LoRA run (r8 on q, v) with polyalign's Trainer or a plain one."""
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer, TrainingArguments

    from polyalign.alignment.target_loss import TargetLossTrainer
    from polyalign.alignment.training_data import PadCollator

    rng = random.Random(1)
    rows = []
    for _ in range(batch * (steps + 1)):
        ids = [rng.randrange(10, vocab) for _ in range(seq)]
        rows.append({"input_ids": ids, "attention_mask": [1] * seq, "labels": [-100] * (seq // 2) + ids[seq // 2 :]})
    net = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
    args = TrainingArguments(
        output_dir="/tmp/polyalign-gpu-check",
        max_steps=steps + 1,
        per_device_train_batch_size=batch,
        bf16=device.startswith("cuda"),
        report_to="none",
        save_strategy="no",
        logging_steps=10**6,
        remove_unused_columns=False,
        use_cpu=not device.startswith("cuda"),
        label_names=["labels"],
        disable_tqdm=True,
    )
    kind = TargetLossTrainer if polyalign_loss else Trainer
    trainer = kind(model=net, args=args, train_dataset=rows, data_collator=PadCollator(0, targets_only=False))
    times: list[float] = []

    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def on_step_begin(self, *a, **k):
            sync(device)
            times.append(time.perf_counter())

    trainer.add_callback(Clock())
    reset_peak(device)
    trainer.train()
    sync(device)
    seconds = time.perf_counter() - times[1]  # the first step is warm-up
    measured = peak(device)
    net.unload()  # the base model back, without LoRA, for the next run
    return {"tokens_per_s": round(batch * seq * steps / seconds, 1), "peak": measured}


def check_model(name: str, args) -> dict:
    config = read_config(name)
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    model, used = build(config, args.tiny, args.device, dtype)
    shape = shape_from_config(used, name)
    precision = "bf16" if dtype == torch.bfloat16 else "fp32"
    items = synthetic_items(shape.vocab, args.items, args.prefix, args.suffix)
    job = EvalShape(args.prefix, args.suffix, args.batch, precision, rows=len(items))
    row: dict = {"model": name, "tiny": args.tiny, "device": args.device, "params": shape.params()}
    row["eval"] = eval_rates(model, items, args.prefix, args.batch, args.device, args.paper_items)
    row["eval"]["planned_peak"] = eval_estimate(shape, job).peak
    plan = TrainShape(batch=args.train_batch, seq=args.seq, precision=precision)
    for label, ours in (("train", True), ("train_plain", False)):
        model.train()
        row[label] = train_rates(model, shape.vocab, args.seq, args.train_batch, args.steps, args.device, ours)
        model.eval()
    estimate = train_estimate(shape, plan)
    row["train"]["planned_peak"] = estimate.peak
    for label in ("train", "train_plain"):
        mfu = row[label]["tokens_per_s"] * estimate.flops_per_unit / H200_BF16_PEAK
        row[label]["mfu"] = round(mfu, 4)  # LoRA counts forward + input gradients (no base weight grads)
    del model
    return row


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=MODELS)
    parser.add_argument("--tiny", action="store_true", help="2 small layers, the real vocabulary (CPU tests)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--items", type=int, default=256)
    parser.add_argument("--paper-items", type=int, default=32, help="items timed through the paper's loop")
    parser.add_argument("--prefix", type=int, default=400)
    parser.add_argument("--suffix", type=int, default=96)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--train-batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args(argv)
    rows = []
    for name in args.models:
        rows.append(check_model(name, args))
        print(json.dumps(rows[-1]), flush=True)
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    return rows


if __name__ == "__main__":
    main()
