"""LoRA question-alignment training (the paper's recipe) and adapter merging.

The loss is on the completion (target-language question) only: the model learns to
produce the aligned question, not to reproduce its prompt. A run folder is resumable and
self-describing: resolved config, per-step log, loss curve, the adapter (final or best weights).
Hugging Face's Trainer does the loop, so `accelerate launch` works without code change.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

from polyalign.config import apply_overrides, build, read_mapping
from polyalign.declarations import DEFAULT_MODEL
from polyalign.errors import PolyalignError
from polyalign.item_range import parse_items, provenance_record, write_provenance
from polyalign.results import atomic_write_text, file_sha256, read_jsonl_tolerant, read_records, write_jsonl
from polyalign.training_data import IGNORE, TEMPLATES, PadCollator, split_pairs, tokenize_pairs  # noqa: F401


@dataclass
class TrainConfig:
    """Training hyper-parameters; defaults are the paper's (see configs/train_default.yaml)."""

    lora_rank: int = 8  # LoRA rank r
    lora_alpha: int = 16  # LoRA scaling numerator (scale = alpha / r)
    lora_dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])  # attention projections
    epochs: float = 3.0
    max_steps: int = -1  # > 0 overrides epochs (smoke tests, benchmarks)
    learning_rate: float = 5e-5
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.1  # fraction of steps with linear warm-up
    per_device_batch: int = 4
    grad_accum: int = 4  # effective batch 4 x 4 = 16 on one device
    per_device_eval_batch: int = 4
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    precision: str = "auto"  # auto: bf16 on CUDA with bf16, else fp32
    gradient_checkpointing: bool = False
    val_size: float = 0.05  # held-out fraction, evaluated every eval_steps
    keep: str = "final"  # final: the last weights (the paper's runs); best: reload the lowest eval loss
    template: str = "none"  # none: plain prompt -> completion; chat: the tokenizer's chat template
    cutoff_len: int = 2048  # max tokens of prompt + completion
    group_by_length: bool = True  # batches of similar length: less padding
    seed: int = 0
    logging_steps: int = 10
    eval_steps: int = 100
    save_steps: int = 100  # must be a multiple of eval_steps
    save_total_limit: int | None = 3
    trust_remote_code: bool = False


def default_config_path() -> Path:
    return Path(str(files("polyalign") / "configs" / "train_default.yaml"))


def load_config(path: str | Path | None = None, overrides: list[str] | tuple = ()) -> TrainConfig:
    """Defaults <- packaged YAML <- user YAML <- `key=value` overrides, typed and validated."""
    values = dataclasses.asdict(TrainConfig())
    for source in [default_config_path(), Path(path) if path else None]:
        if source is None or (source == default_config_path() and not source.exists()):
            continue
        values.update(read_mapping(source, "config"))
        build(TrainConfig, values, str(source))  # an unknown or ill-typed key names its file
    cfg = build(TrainConfig, apply_overrides(values, overrides), "training config")
    check_config(cfg)
    return cfg


def check_config(cfg: TrainConfig) -> None:
    """Reject values Trainer would accept silently or fail on late."""
    positive = [
        "lora_rank",
        "per_device_batch",
        "grad_accum",
        "per_device_eval_batch",
        "cutoff_len",
        "logging_steps",
        "eval_steps",
        "save_steps",
    ]
    for name in positive:
        if getattr(cfg, name) < 1:
            raise PolyalignError(f"config key '{name}' must be at least 1 (got {getattr(cfg, name)})")
    if not 0 <= cfg.val_size < 1:
        raise PolyalignError(f"val_size must be in [0, 1) (got {cfg.val_size})")
    if cfg.learning_rate <= 0 or not 0 <= cfg.warmup_ratio < 1 or not 0 <= cfg.lora_dropout < 1:
        raise PolyalignError("learning_rate must be > 0, warmup_ratio and lora_dropout in [0, 1)")
    if cfg.keep not in ("final", "best"):
        raise PolyalignError(f"keep must be final or best (got '{cfg.keep}')")
    if cfg.template not in TEMPLATES:
        raise PolyalignError(f"template must be one of {', '.join(TEMPLATES)} (got '{cfg.template}')")
    if cfg.keep == "best" and cfg.val_size > 0 and cfg.save_steps % cfg.eval_steps:
        raise PolyalignError(
            f"save_steps ({cfg.save_steps}) must be a multiple of eval_steps ({cfg.eval_steps}) "
            f"to keep the best checkpoint"
        )
    if cfg.precision not in ("auto", "bf16", "fp32"):
        raise PolyalignError(f"precision must be auto, bf16 or fp32 (got '{cfg.precision}')")
    if not cfg.target_modules:
        raise PolyalignError("target_modules is empty")


def read_pairs(path: str | Path) -> list[dict]:
    """Pairs written by `polyalign data build` (any JSONL/JSON with prompt and completion)."""
    rows = read_records(Path(path))
    for i, row in enumerate(rows):
        if not (
            isinstance(row.get("prompt"), str) and isinstance(row.get("completion"), str) and row["completion"].strip()
        ):
            raise PolyalignError(f"{path}: record {i} needs 'prompt' and a non-empty 'completion'")
    return rows


def benchmark_provenance(rows: list[dict]) -> list[dict]:
    """Which benchmark test items the pairs' questions came from (rows written by `data build --items`)."""
    from collections import Counter

    counts = Counter((r["task"], r["items"]) for r in rows if r.get("task") and r.get("items"))
    return [
        provenance_record(task, parse_items(items, "pairs"), n)  # type: ignore[arg-type]  # items is a str
        for (task, items), n in sorted(counts.items())
    ]


def _log_callback(log_path: Path):
    from transformers import TrainerCallback

    class JsonlLog(TrainerCallback):
        """Appends every Trainer log (loss, eval_loss, lr, ...) as one JSON line, main process only."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs:
                with log_path.open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps({"step": state.global_step, "epoch": state.epoch, **logs}) + "\n")

    return JsonlLog()


def plot_loss(log_path: Path, png: Path) -> None:
    """Training and validation loss against the optimizer step."""
    from matplotlib.figure import Figure

    rows = read_jsonl_tolerant(log_path)
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for key, style in (("loss", "-"), ("eval_loss", "o-")):
        points = [(r["step"], r[key]) for r in rows if key in r]
        if points:
            ax.plot(*zip(*points), style, label=key)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (target tokens)")
    if ax.lines:
        ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=100)


def _held_config(config_path: Path, overwrite: bool) -> dict | None:
    """The config.yaml a run folder holds (None: none, or unreadable and about to be overwritten)."""
    if not config_path.exists():
        return None
    try:
        held = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        if overwrite:
            return None
        reason = str(exc).splitlines()[0]
        raise PolyalignError(
            f"{config_path}: unreadable ({reason}); fix or delete it, or pass --overwrite or choose another --out"
        ) from None
    return held if isinstance(held, dict) else None


def _prepare_run(out: Path, resolved: dict, resume: bool, overwrite: bool) -> str | None:
    """Check the folder holds this run (or nothing); return the checkpoint to resume from."""
    from transformers.trainer_utils import get_last_checkpoint

    config_path = out / "config.yaml"
    if out.exists() and any(out.iterdir()):
        held = _held_config(config_path, overwrite)
        if held != resolved:
            if not overwrite:
                what = "another run" if held else "files that are not a polyalign run"
                diff = sorted(k for k in set(held or {}) | set(resolved) if (held or {}).get(k) != resolved.get(k))
                raise PolyalignError(
                    f"{out} holds {what}"
                    + (f" (differs in {', '.join(diff)})" if held else "")
                    + "; pass --overwrite to replace it or choose another --out"
                )
            shutil.rmtree(out)
        elif overwrite:
            shutil.rmtree(out)
        elif (out / "summary.json").exists():
            raise PolyalignError(f"{out} holds this run, already finished; pass --overwrite to train again")
        elif out.joinpath("checkpoints").is_dir() and get_last_checkpoint(str(out / "checkpoints")):
            if not resume:
                raise PolyalignError(
                    f"{out} holds an unfinished run of this config; pass --resume to continue "
                    f"or --overwrite to start over"
                )
            last = get_last_checkpoint(str(out / "checkpoints"))
            step = int(Path(last).name.split("-")[-1])
            rows = [r for r in read_jsonl_tolerant(out / "log.jsonl") if r.get("step", 0) <= step]
            write_jsonl(out / "log.jsonl", rows)
            return last
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(config_path, yaml.safe_dump(resolved, sort_keys=False, allow_unicode=True))
    atomic_write_text(out / "log.jsonl", "")  # a fresh start: drop rows of a run killed before any checkpoint
    return None


def train(
    model: str,
    data: str | Path,
    out: str | Path,
    cfg: TrainConfig | None = None,
    resume: bool = False,
    overwrite: bool = False,
    callbacks: list | None = None,
) -> dict:
    """Train a LoRA adapter on prompt->completion pairs; returns the run summary.

    Recipe-style: the folder, the data, the model and the Trainer's arguments are each set up
    by their own function; the model is checked before anything is written.
    """
    from transformers import Trainer

    from polyalign.models import load_tokenizer

    cfg = cfg or load_config()
    check_config(cfg)
    out, data = Path(out), Path(data)
    rows = read_pairs(data)
    named = str(Path(model).resolve()) if Path(model).exists() else model  # same folder, same run
    resolved = {
        "model": named,
        "data": str(data.resolve()),
        "data_sha256": file_sha256(data),
        **dataclasses.asdict(cfg),
    }
    if (
        resume
        and not overwrite
        and (out / "summary.json").exists()
        and _held_config(out / "config.yaml", False) == resolved
    ):
        return json.loads((out / "summary.json").read_text(encoding="utf-8"))  # finished: nothing to resume
    tokenizer = load_tokenizer(model, cfg.trust_remote_code)  # the model is checked before anything is written
    last = _setup_folder(out, resolved, resume, overwrite)
    train_rows, val_rows, collator = _setup_data(tokenizer, rows, cfg, model)
    bf16 = _use_bf16(cfg)
    net = _setup_model(model, cfg, bf16)
    args = _training_args(cfg, out, bf16, has_val=bool(val_rows))
    trainer = Trainer(
        model=net,
        args=args,
        train_dataset=train_rows,
        eval_dataset=val_rows or None,
        data_collator=collator,
        processing_class=tokenizer,
        callbacks=[_log_callback(out / "log.jsonl"), *(callbacks or [])],
    )
    trainer.train(resume_from_checkpoint=last)
    trainer.save_model(str(out / "adapter"))  # the last weights, or the best ones with keep: best
    chat = cfg.template == "chat" and bool(getattr(tokenizer, "chat_template", None))
    summary = {
        "global_step": trainer.state.global_step,
        "resumed_from": last,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "best_eval_loss": trainer.state.best_metric,
        "n_train": len(train_rows),
        "n_val": len(val_rows),
        "bf16": bf16,
        "kept": "best" if val_rows and cfg.keep == "best" else "final",
        "template": "chat" if chat else "none",
        "world_size": args.world_size,
        "effective_batch": cfg.per_device_batch * cfg.grad_accum * args.world_size,
    }
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(out / "adapter"))
        write_provenance(out / "adapter", benchmark_provenance(rows))
        plot_loss(out / "log.jsonl", out / "loss.png")
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def _setup_folder(out: Path, resolved: dict, resume: bool, overwrite: bool) -> str | None:
    """The main process checks and prepares the run folder first; returns the checkpoint to resume from."""
    import torch
    from accelerate import PartialState
    from transformers.trainer_utils import get_last_checkpoint

    state = PartialState(cpu=not torch.cuda.is_available())  # CPU: join the gloo group too
    last = None
    with state.main_process_first():
        if state.is_main_process:
            last = _prepare_run(out, resolved, resume, overwrite)
        elif resume and (out / "checkpoints").is_dir():
            last = get_last_checkpoint(str(out / "checkpoints"))
    return last


def _setup_data(tokenizer, rows: list[dict], cfg: TrainConfig, model: str) -> tuple[list, list, PadCollator]:
    """Tokenized training and validation rows, and the collator that pads them."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise PolyalignError(f"{model}: tokenizer has neither a pad nor an eos token")
    train_rows, val_rows = split_pairs(
        tokenize_pairs(tokenizer, rows, cfg.cutoff_len, cfg.template), cfg.val_size, cfg.seed
    )
    return train_rows, val_rows, PadCollator(pad_id)


def _use_bf16(cfg: TrainConfig) -> bool:
    import torch

    return cfg.precision == "bf16" or (
        cfg.precision == "auto" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    )


def _setup_model(model: str, cfg: TrainConfig, bf16: bool):
    """The base model with fresh LoRA weights on `cfg.target_modules`."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from polyalign.models import resolve_model_path

    try:
        net = AutoModelForCausalLM.from_pretrained(
            resolve_model_path(model),
            use_safetensors=True,
            dtype=torch.bfloat16 if bf16 else torch.float32,
            trust_remote_code=cfg.trust_remote_code,
        )
        lora = LoraConfig(
            r=cfg.lora_rank,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=list(cfg.target_modules),
            task_type="CAUSAL_LM",
        )
        net = get_peft_model(net, lora)  # type: ignore[assignment]
    except (OSError, ValueError) as exc:
        raise PolyalignError(f"{model}: cannot set up LoRA training: {str(exc).splitlines()[0]}") from None
    if cfg.gradient_checkpointing:
        net.enable_input_require_grads()
    return net


def _training_args(cfg: TrainConfig, out: Path, bf16: bool, has_val: bool):
    """The Trainer's arguments for `cfg`, across the transformers versions that renamed some."""
    import torch
    from transformers import TrainingArguments

    known = TrainingArguments.__dataclass_fields__  # names moved within transformers 5.x
    extra: dict[str, Any] = {
        "activation_checkpointing"
        if "activation_checkpointing" in known
        else "gradient_checkpointing": cfg.gradient_checkpointing
    }
    if "train_sampling_strategy" in known:
        extra["train_sampling_strategy"] = "group_by_length" if cfg.group_by_length else "random"
    else:
        extra["group_by_length"] = cfg.group_by_length
    return TrainingArguments(
        **extra,
        output_dir=str(out / "checkpoints"),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.per_device_batch,
        per_device_eval_batch_size=cfg.per_device_eval_batch,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        bf16=bf16,
        logging_steps=cfg.logging_steps,
        eval_strategy="steps" if has_val else "no",
        eval_steps=cfg.eval_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        load_best_model_at_end=has_val and cfg.keep == "best",
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        seed=cfg.seed,
        data_seed=cfg.seed,
        report_to="none",
        remove_unused_columns=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        label_names=["labels"],
        use_cpu=not torch.cuda.is_available(),
    )


def merge(
    model: str, adapter: str | Path, out: str | Path, overwrite: bool = False, trust_remote_code: bool = False
) -> Path:
    """Base model + LoRA folded into one HF folder (safetensors + tokenizer), merged in fp32
    for exactness and saved in the base model's dtype; written atomically."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from polyalign.models import apply_adapter, load_tokenizer, resolve_model_path

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise PolyalignError(f"{out} exists and is not empty; pass --overwrite to replace it")
    path = resolve_model_path(model)
    tokenizer = load_tokenizer(model, trust_remote_code)
    dtype = getattr(AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code), "dtype", None)
    net = AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32, use_safetensors=True, trust_remote_code=trust_remote_code
    )
    merged = apply_adapter(net, str(adapter)).merge_and_unload()
    if isinstance(dtype, torch.dtype):
        merged = merged.to(dtype)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}-") as tmp:
        folder = Path(tmp) / "merged"
        merged.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)
        (folder / "polyalign-merge.json").write_text(json.dumps({"model": model, "adapter": str(adapter)}, indent=2))
        if out.exists():
            shutil.rmtree(out)
        os.replace(folder, out)
    return out


def cmd_train(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    summary = train(args.model, args.data, args.out, cfg, resume=args.resume, overwrite=args.overwrite)
    print(json.dumps(summary, indent=2))
    print(f"adapter: {Path(args.out) / 'adapter'}")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    print(f"merged model: {merge(args.model, args.adapter, args.out, args.overwrite, args.trust_remote_code)}")
    return 0


def add_cli(subparsers) -> None:
    """Register `polyalign train` and `polyalign merge` on the top-level subparsers."""
    p = subparsers.add_parser("train", help="LoRA question-alignment training on `data build` pairs")
    p.add_argument("--model", default=DEFAULT_MODEL, help="HF id, local folder, or packaged alias")
    p.add_argument("--data", required=True, help="pairs JSONL from `polyalign data build`")
    p.add_argument("--out", required=True, help="run folder (adapter/, config.yaml, log.jsonl, loss.png)")
    p.add_argument("--config", help="YAML with any TrainConfig keys (defaults: the paper's recipe)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    p.add_argument("--overwrite", action="store_true", help="replace a folder that holds a different run")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. learning_rate=1e-4")
    p.set_defaults(func=cmd_train)

    p = subparsers.add_parser("merge", help="fold a LoRA adapter into its base model (HF folder)")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--adapter", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--trust-remote-code", action="store_true")
    p.set_defaults(func=cmd_merge)
