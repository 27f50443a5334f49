"""The LLaMA-Factory export: pairs, dataset_info.json and the settings that make LLaMA-Factory train
the token ids and labels `polyalign train` trains.

Why the special tokens are in the text: LLaMA-Factory (0.9) builds a pair's tokens from its template;
the stock `empty` template adds nothing, neither the BOS that polyalign's prompt starts with nor the
EOS its completion ends with (reported for gemma-3-270m: step-1 loss 3.29, not 1.87). So each exported
prompt carries the special tokens the tokenizer adds around it, each completion the EOS (or, with
template chat, the chat template's own text), and NAME.llamafactory.yaml names `template: empty`
with polyalign's training values. Every row is checked: its texts, encoded as that template does
(no special tokens added), give polyalign's input ids and labels, or the export stops.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import yaml

from polyalign.alignment.train_config import TrainConfig
from polyalign.alignment.training_data import IGNORE, chat_texts, tokenize_pairs
from polyalign.core.errors import PolyalignError
from polyalign.core.files import atomic_write_json, atomic_write_text

LF_TEMPLATE = "empty"  # LLaMA-Factory's template that adds no token and no text around a turn
COLUMNS = {"prompt": "instruction", "query": "input", "response": "output"}


class ExportedPair(NamedTuple):
    """One pair as LLaMA-Factory reads it: prompt and completion text, special tokens included."""

    instruction: str
    output: str


def export_pair(tokenizer, row: dict, template: str, i: int = 0) -> ExportedPair:
    """The texts whose tokens (no special tokens added) are what polyalign trains for this row."""
    if template == "chat" and getattr(tokenizer, "chat_template", None):
        return ExportedPair(*chat_texts(tokenizer, row, i))
    with_special = tokenizer(row["prompt"], add_special_tokens=True)["input_ids"]
    plain = tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
    lead = next(
        (k for k in range(len(with_special) - len(plain) + 1) if with_special[k : k + len(plain)] == plain), None
    )
    if lead is None:
        raise PolyalignError(f"pair {i}: the tokenizer's special tokens do not wrap the prompt's own tokens")
    before = "".join(tokenizer.convert_ids_to_tokens(with_special[:lead]))
    after = "".join(tokenizer.convert_ids_to_tokens(with_special[lead + len(plain) :]))
    eos = tokenizer.eos_token if tokenizer.eos_token_id is not None else ""
    return ExportedPair(before + row["prompt"] + after, row["completion"] + eos)


def llamafactory_tokens(tokenizer, pair: ExportedPair) -> dict:
    """LLaMA-Factory's supervised rule with the empty template, untruncated: the prompt's ids then the
    completion's, each encoded without added special tokens; the prompt's labels ignored."""
    prompt = tokenizer(pair.instruction, add_special_tokens=False)["input_ids"]
    completion = tokenizer(pair.output, add_special_tokens=False)["input_ids"]
    return {"input_ids": prompt + completion, "labels": [IGNORE] * len(prompt) + completion}


def export_pairs(tokenizer, rows: list[dict], template: str) -> list[ExportedPair]:
    """Every row exported and checked against polyalign's own tokenization (untruncated)."""
    exported = []
    for i, row in enumerate(rows):
        pair = export_pair(tokenizer, row, template, i)
        ours = tokenize_pairs(tokenizer, [row], cutoff_len=10**9, template=template)[0]
        theirs = llamafactory_tokens(tokenizer, pair)
        if theirs["input_ids"] != ours["input_ids"] or theirs["labels"] != ours["labels"]:
            raise PolyalignError(
                f"pair {i}: its text does not encode to polyalign's training tokens (a tokenizer that "
                "merges special tokens with the text); train it with `polyalign train` instead"
            )
        exported.append(pair)
    return exported


def settings(cfg: TrainConfig, model: str, name: str, dataset_dir: Path) -> dict:
    """LLaMA-Factory's training arguments with polyalign's values (its own defaults differ: README)."""
    values = {
        "model_name_or_path": model,
        "trust_remote_code": cfg.trust_remote_code,
        "stage": "sft",
        "do_train": True,
        "finetuning_type": "lora",
        "lora_rank": cfg.lora_rank,
        "lora_alpha": cfg.lora_alpha,
        "lora_dropout": cfg.lora_dropout,
        "lora_target": ",".join(cfg.target_modules),
        "dataset": name,
        "dataset_dir": str(dataset_dir),
        "template": LF_TEMPLATE,
        "cutoff_len": cfg.cutoff_len,
        "train_on_prompt": False,
        "val_size": cfg.val_size,
        "per_device_train_batch_size": cfg.per_device_batch,
        "gradient_accumulation_steps": cfg.grad_accum,
        "learning_rate": cfg.learning_rate,
        "num_train_epochs": cfg.epochs,
        **({"max_steps": cfg.max_steps} if cfg.max_steps > 0 else {}),
        "lr_scheduler_type": cfg.lr_scheduler,
        "warmup_ratio": cfg.warmup_ratio,
        "weight_decay": cfg.weight_decay,
        "max_grad_norm": cfg.max_grad_norm,
        "group_by_length": cfg.group_by_length,
        "disable_gradient_checkpointing": not cfg.gradient_checkpointing,
        "seed": cfg.seed,
        "logging_steps": cfg.logging_steps,
        "save_steps": cfg.save_steps,
        "save_total_limit": cfg.save_total_limit,
        "output_dir": f"saves/{name}",
        "report_to": "none",
    }
    if cfg.precision == "bf16":
        values["bf16"] = True
    if cfg.val_size > 0:
        values.update(
            eval_strategy="steps", eval_steps=cfg.eval_steps, per_device_eval_batch_size=cfg.per_device_eval_batch
        )
    if cfg.keep == "best":
        values.update(load_best_model_at_end=True, metric_for_best_model="eval_loss")
    return values


def settings_text(values: dict, over_cutoff: int) -> str:
    """The settings as YAML, with the lines a reader needs before running them."""
    head = [
        "# LLaMA-Factory (0.9) settings written by `polyalign data build --format llamafactory`:",
        f"#   llamafactory-cli train {values['dataset']}.llamafactory.yaml",
        "# trains the token ids and labels `polyalign train` trains on these pairs: the prompts carry the",
        "# tokenizer's special tokens (BOS) and the completions its EOS, so the template must be `empty`.",
        "# The values are polyalign's training config; precision auto: add `bf16: true` where the GPU has it.",
        "# Not the same in the two tools: which pairs are held out (each draws its own val_size split).",
    ]
    if over_cutoff:
        head.append(f"# {over_cutoff} pairs exceed cutoff_len: LLaMA-Factory cuts them by its own rule (infer_seqlen).")
    return "\n".join(head) + "\n" + yaml.safe_dump(values, sort_keys=False, allow_unicode=True)


def register_dataset(info_path: Path, name: str, file_name: str) -> None:
    """Add NAME to dataset_info.json (merged, so other datasets stay)."""
    info = {}
    if info_path.exists():
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            raise PolyalignError(f"{info_path}: malformed JSON; fix or remove it") from None
    info[name] = {"file_name": file_name, "columns": COLUMNS}
    atomic_write_json(info_path, info)


def write_llamafactory(records: list[dict], out: Path, model: str, cfg: TrainConfig) -> list[Path]:
    """NAME.alpaca.json, its dataset_info.json entry and NAME.llamafactory.yaml beside OUT."""
    from polyalign.engine.model_paths import resolve_model_path
    from polyalign.engine.models import load_tokenizer

    model = resolve_model_path(model)  # an alias becomes its local folder, which LLaMA-Factory can load
    tokenizer = load_tokenizer(model, trust_remote_code=cfg.trust_remote_code)
    pairs = export_pairs(tokenizer, records, cfg.template)
    name = out.name[: -len(out.suffix)] if out.suffix else out.name
    alpaca = out.with_name(f"{name}.alpaca.json")
    atomic_write_json(alpaca, [{"instruction": p.instruction, "input": "", "output": p.output} for p in pairs])
    info_path = out.parent / "dataset_info.json"
    register_dataset(info_path, name, alpaca.name)
    lengths = [len(t["input_ids"]) for t in (llamafactory_tokens(tokenizer, p) for p in pairs)]
    over = sum(n > cfg.cutoff_len for n in lengths)
    config_path = out.with_name(f"{name}.llamafactory.yaml")
    atomic_write_text(config_path, settings_text(settings(cfg, model, name, out.parent.resolve()), over))
    return [alpaca, info_path, config_path]
