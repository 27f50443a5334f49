"""LoRA question-alignment training (the paper's recipe) and adapter merging.

The loss is on the completion (target-language question) only: the model learns to
produce the aligned question, not to reproduce its prompt. A run folder is resumable and
self-describing: resolved config, per-step log, loss curve, the adapter (final or best weights).
Hugging Face's Trainer does the loop, so `accelerate launch` works without code change.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import yaml

from polyalign.alignment.checkpoints import last_complete_checkpoint, provenance_callback
from polyalign.alignment.quantized import prepare_quantized, quantization_kwargs, record_quantized_base
from polyalign.alignment.train_config import TrainConfig, load_config, recipe_identity
from polyalign.alignment.train_fit import check_training_fits
from polyalign.alignment.training_data import PadCollator, split_pairs, tokenize_pairs
from polyalign.core.errors import PolyalignError
from polyalign.core.files import atomic_write_text, file_sha256, read_jsonl_tolerant, read_records, write_jsonl
from polyalign.core.item_range import parse_items, provenance_record, write_provenance
from polyalign.engine.process_device import one_device_per_process


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


def prepare_run(out: Path, resolved: dict, resume: bool, overwrite: bool) -> str | None:
    """Check the folder holds this run (or nothing); return the checkpoint to resume from."""
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
        elif last := last_complete_checkpoint(out / "checkpoints", remove_incomplete=True):  # half ones skipped
            if not resume:
                raise PolyalignError(
                    f"{out} holds an unfinished run of this config; pass --resume to continue "
                    f"or --overwrite to start over"
                )
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
    from polyalign.alignment.target_loss import TargetLossTrainer
    from polyalign.engine.models import load_tokenizer

    cfg = cfg or load_config()
    cfg.check()  # again: a caller may have changed it since it was made
    out, data = Path(out), Path(data)
    rows = read_pairs(data)
    named = str(Path(model).resolve()) if Path(model).exists() else model  # same folder, same run
    resolved = {
        "model": named,
        "data": str(data.resolve()),
        "data_sha256": file_sha256(data),
        **recipe_identity(cfg),
    }
    finished = _finished_summary(out, resolved, resume, overwrite)
    if finished is not None:
        return finished
    tokenizer = load_tokenizer(model, cfg.trust_remote_code)  # the model is checked before anything is written
    last = _setup_folder(out, resolved, resume, overwrite)
    train_rows, val_rows, collator = _setup_data(tokenizer, rows, cfg, model)
    bf16 = _use_bf16(cfg, model)
    net = _setup_model(model, cfg, bf16)
    args = one_device_per_process(_training_args(cfg, out, bf16, has_val=bool(val_rows)))  # no DataParallel
    trainer = TargetLossTrainer(  # the loss on target tokens only, unembedded in chunks
        model=net,
        args=args,
        train_dataset=train_rows,
        eval_dataset=val_rows or None,
        data_collator=collator,
        processing_class=tokenizer,
        callbacks=[
            _log_callback(out / "log.jsonl"),
            provenance_callback(benchmark_provenance(rows)),
            *(callbacks or []),
        ],
    )
    trainer.train(resume_from_checkpoint=last)
    trainer.save_model(str(out / "adapter"))  # the last weights, or the best ones with keep: best
    (out / "adapter" / "training_args.bin").unlink(missing_ok=True)  # Trainer's pickle; config.yaml has it
    summary = _summary(trainer, cfg, tokenizer, last, len(train_rows), len(val_rows), model)
    if trainer.is_world_process_zero():
        _describe_adapter(out / "adapter", tokenizer, rows, cfg)
        plot_loss(out / "log.jsonl", out / "loss.png")
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def _describe_adapter(adapter: Path, tokenizer, rows: list[dict], cfg: TrainConfig) -> None:
    """What the adapter folder carries besides its weights: tokenizer, provenance, quantized base."""
    tokenizer.save_pretrained(str(adapter))
    write_provenance(adapter, benchmark_provenance(rows))
    record_quantized_base(adapter, cfg.quantization)


def _finished_summary(out: Path, resolved: dict, resume: bool, overwrite: bool) -> dict | None:
    """A resumed run that already finished with this configuration: its summary (nothing to do)."""
    done = out / "summary.json"
    if resume and not overwrite and done.exists() and _held_config(out / "config.yaml", False) == resolved:
        return json.loads(done.read_text(encoding="utf-8"))
    return None


def _summary(
    trainer, cfg: TrainConfig, tokenizer, resumed_from: str | None, n_train: int, n_val: int, model: str
) -> dict:
    """summary.json: what ran (steps, data sizes, precision, template, batch) and what was kept."""
    from polyalign.alignment.target_loss import training_kernels  # torch: not for `--help` or a dry run

    chat = cfg.template == "chat" and bool(getattr(tokenizer, "chat_template", None))
    world = trainer.args.world_size
    return {
        "global_step": trainer.state.global_step,
        "resumed_from": resumed_from,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "best_eval_loss": trainer.state.best_metric,
        "n_train": n_train,
        "n_val": n_val,
        "bf16": bool(trainer.args.bf16),
        "precision": "bf16" if trainer.args.bf16 else "fp32",  # what precision=auto resolved to here
        "precision_why": _precision_why(cfg.precision, model),
        "cpu_kernels": training_kernels(trainer.model),  # bf16 on a CPU: the fused kernels' rounding
        "kept": "best" if n_val and cfg.keep == "best" else "final",
        "template": "chat" if chat else "none",
        "world_size": world,
        "devices_per_process": max(trainer.args.n_gpu, 1),
        "effective_batch": trainer.args.train_batch_size * cfg.grad_accum * world,  # per device x devices x ...
    }


def _setup_folder(out: Path, resolved: dict, resume: bool, overwrite: bool) -> str | None:
    """The main process checks and prepares the run folder first; returns the checkpoint to resume from."""
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())  # CPU: join the gloo group too
    last = None
    with state.main_process_first():
        if state.is_main_process:
            last = prepare_run(out, resolved, resume, overwrite)
        elif resume and (out / "checkpoints").is_dir():
            last = last_complete_checkpoint(out / "checkpoints")
    return last


def _setup_data(tokenizer, rows: list[dict], cfg: TrainConfig, model: str) -> tuple[list, list, PadCollator]:
    """Tokenized training and validation rows, and the collator that pads them."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise PolyalignError(f"{model}: tokenizer has neither a pad nor an eos token")
    train_rows, val_rows = split_pairs(
        tokenize_pairs(tokenizer, rows, cfg.cutoff_len, cfg.template), cfg.val_size, cfg.seed
    )
    longest = max(len(r["input_ids"]) for r in train_rows)
    check_training_fits(model, cfg, longest, "bf16" if _use_bf16(cfg, model) else "fp32")  # before the weights load
    return train_rows, val_rows, PadCollator(pad_id, targets_only=False)  # target_loss picks the rows


def _precision_why(precision: str, model: str) -> str:
    import torch

    from polyalign.engine.precision import why_auto

    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    return why_auto(device_type, model) if precision == "auto" else f"precision: {precision} asked for"


def _use_bf16(cfg: TrainConfig, model: str) -> bool:
    """precision auto: bf16 where the device computes it natively and fast for `model`'s layers
    (polyalign.engine.precision), else fp32."""
    import torch

    from polyalign.engine.precision import resolve_precision

    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    return resolve_precision(cfg.precision, device_type, model) == "bf16"


def _setup_model(model: str, cfg: TrainConfig, bf16: bool):
    """The base model with fresh LoRA weights on `cfg.target_modules`."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, set_seed

    from polyalign.engine import cpu_kernels, exact_norms
    from polyalign.engine.model_paths import resolve_model_path

    try:
        net = AutoModelForCausalLM.from_pretrained(
            resolve_model_path(model),
            use_safetensors=True,
            dtype=torch.bfloat16 if bf16 else torch.float32,
            trust_remote_code=cfg.trust_remote_code,
            **quantization_kwargs(cfg.quantization, bf16),
        )
        net = prepare_quantized(net, cfg.quantization, cfg.gradient_checkpointing)
        exact_norms.install(net)  # the same bits, fewer passes (polyalign.engine.exact_norms)
        cpu_kernels.install(net)  # bf16 on a CPU: fused norms and activation, forward and backward
        lora = LoraConfig(
            r=cfg.lora_rank,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=list(cfg.target_modules),
            task_type="CAUSAL_LM",
        )
        set_seed(cfg.seed)  # LoRA's A matrices are drawn here, before Trainer seeds: same seed, same run
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
        report_to=cfg.report_to,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        label_names=["labels"],
        use_cpu=not torch.cuda.is_available(),
    )
