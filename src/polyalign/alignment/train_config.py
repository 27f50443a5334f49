"""The training recipe as data: TrainConfig, the one home of its defaults (the paper's values),
each field's help and choices, and its checks, run whenever one is made (`__post_init__`).
Read from an optional user YAML with `key=value` overrides, before any model is loaded."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

from polyalign.alignment.quantized import QUANTIZATIONS, check_quantization
from polyalign.alignment.training_data import TEMPLATES
from polyalign.core.config import apply_overrides, build, check_choices, option, read_mapping, typed_values
from polyalign.core.declarations import TRAIN_PRECISIONS, check_seed, short_precision
from polyalign.core.errors import PolyalignError

# Schedulers that transformers builds from the warm-up and step counts alone (others need more keys).
SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
)
REPORTERS = ("none", "tensorboard", "wandb")
# Keys that must be at least 1.
POSITIVE = (
    "lora_rank",
    "per_device_batch",
    "grad_accum",
    "per_device_eval_batch",
    "cutoff_len",
    "logging_steps",
    "eval_steps",
    "save_steps",
)


@dataclass
class TrainConfig:
    """Training hyper-parameters; the defaults are the paper's LoRA recipe (Zhang et al. 2024, trained
    with LLaMA-Factory). Every instance is checked when made: a bad value never reaches Trainer."""

    lora_rank: int = option(8, "LoRA rank r")
    lora_alpha: int = option(16, "LoRA scaling numerator (scale = alpha / r)")
    lora_dropout: float = option(0.0, "dropout on the LoRA input, in [0, 1)")
    target_modules: list[str] = option(["q_proj", "v_proj"], "the attention projections LoRA adapts")
    epochs: float = option(3.0, "training epochs")
    max_steps: int = option(-1, "> 0: stop after that many optimizer steps, overriding epochs (smoke tests)")
    learning_rate: float = option(5e-5, "peak learning rate")
    lr_scheduler: str = option("cosine", f"learning-rate schedule: {', '.join(SCHEDULERS)}", SCHEDULERS)
    warmup_ratio: float = option(0.1, "fraction of steps with linear warm-up")
    per_device_batch: int = option(4, "training batch per device (effective batch 4 x 4 = 16 on one device)")
    grad_accum: int = option(4, "gradient accumulation steps")
    per_device_eval_batch: int = option(4, "held-out batch per device")
    weight_decay: float = option(0.0, "AdamW weight decay")
    max_grad_norm: float = option(1.0, "gradient clipping norm")
    precision: str = option(
        "auto",
        "auto: bf16 where native (CUDA with bf16, AVX512-BF16/AMX CPU), else fp32; bf16 (bfloat16) | fp32 (float32)",
        TRAIN_PRECISIONS,
    )
    gradient_checkpointing: bool = option(False, "recompute activations in the backward pass: less memory")
    quantization: str | None = option(
        None,
        "nf4 or int8: a bitsandbytes-quantized frozen base under the LoRA (QLoRA); null: the base in precision",
        QUANTIZATIONS,
    )
    val_size: float = option(0.05, "held-out fraction in [0, 1), evaluated every eval_steps (loss curve)")
    keep: str = option(
        "final",
        "final: the last weights (the paper's runs); best: reload the lowest-eval-loss checkpoint",
        ("final", "best"),
    )
    template: str = option(
        "none", "none: plain prompt -> completion; chat: the tokenizer's chat template (user = prompt)", TEMPLATES
    )
    cutoff_len: int = option(2048, "most tokens of prompt + completion")
    group_by_length: bool = option(True, "batch items of similar length: less padding")
    seed: int = option(0, "training seed")
    logging_steps: int = option(10, "log the loss every N steps")
    eval_steps: int = option(100, "evaluate the held-out loss every N steps")
    save_steps: int = option(100, "checkpoint every N steps (with keep=best: a multiple of eval_steps)")
    save_total_limit: int | None = option(3, "checkpoints kept (null: all)")
    report_to: str = option("none", "none, tensorboard (event files under checkpoints/runs/) or wandb", REPORTERS)
    trust_remote_code: bool = option(False, "allow model code from the hub")

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Reject values Trainer would accept silently or fail on late (rerun after a change)."""
        self.precision = short_precision(self.precision)  # one vocabulary: float32 and fp32 alike
        for name in POSITIVE:
            if getattr(self, name) < 1:
                raise PolyalignError(f"config key '{name}' must be at least 1 (got {getattr(self, name)})")
        check_schedule(self)
        check_seed(self.seed, "seed")
        check_fractions(self)
        check_quantization(self.quantization)  # before the choices: it names what is missing to install
        if self.precision not in TRAIN_PRECISIONS:  # before the choices: it names the long spellings too
            raise PolyalignError(f"precision must be auto, bf16 (bfloat16) or fp32 (float32) (got '{self.precision}')")
        check_choices(self)
        if self.keep == "best" and self.val_size > 0 and self.save_steps % self.eval_steps:
            raise PolyalignError(
                f"save_steps ({self.save_steps}) must be a multiple of eval_steps ({self.eval_steps}) "
                f"to keep the best checkpoint"
            )
        if not self.target_modules:
            raise PolyalignError("target_modules is empty")
        if self.report_to != "none" and importlib.util.find_spec(self.report_to) is None:
            raise PolyalignError(f"report_to={self.report_to} needs its package: pip install {self.report_to}")


def check_schedule(cfg: TrainConfig) -> None:
    """Values Trainer takes without complaint but that train nothing, or train to NaN."""
    if cfg.max_steps != -1 and cfg.max_steps < 1:
        raise PolyalignError(f"max_steps must be -1 (train for epochs) or at least 1 (got {cfg.max_steps})")
    if not 0 < cfg.epochs < math.inf:
        raise PolyalignError(f"epochs must be a finite number > 0 (got {cfg.epochs})")
    for name in ("weight_decay", "max_grad_norm"):
        if not 0 <= getattr(cfg, name) < math.inf:
            raise PolyalignError(f"{name} must be a finite number >= 0 (got {getattr(cfg, name)})")


def check_fractions(cfg: TrainConfig) -> None:
    """The held-out share, warm-up share and dropout lie in [0, 1); the learning rate is finite."""
    if not 0 <= cfg.val_size < 1:
        raise PolyalignError(f"val_size must be in [0, 1) (got {cfg.val_size})")
    if not 0 < cfg.learning_rate < math.inf or not 0 <= cfg.warmup_ratio < 1 or not 0 <= cfg.lora_dropout < 1:
        raise PolyalignError(
            f"learning_rate must be a finite number > 0 (got {cfg.learning_rate}), "
            "warmup_ratio and lora_dropout in [0, 1)"
        )


# Keys added after runs were recorded: left out of a run's identity at their default, so a step or
# folder recorded before they existed keeps its key. report_to only logs: never part of it.
LATER_KEYS = {"quantization": None}


def recipe_identity(cfg: TrainConfig) -> dict:
    """The recipe as a training step's key and a run folder's config.yaml record it."""
    values = dataclasses.asdict(cfg)
    values.pop("report_to")
    return {k: v for k, v in values.items() if k not in LATER_KEYS or v != LATER_KEYS[k]}


def load_config(path: str | Path | None = None, overrides: list[str] | tuple = ()) -> TrainConfig:
    """The paper's recipe <- a user YAML <- `key=value` overrides, typed and checked.

    The file's keys are typed on their own, so an unknown or ill-typed one names the file; the
    values are checked together, once the overrides are in."""
    values = dataclasses.asdict(TrainConfig())
    if path:
        values.update(typed_values(TrainConfig, read_mapping(Path(path), "config"), str(path)))
    return build(TrainConfig, apply_overrides(values, overrides), "training config")
