"""The training recipe as data: TrainConfig (the paper's values by default), read from YAML with
`key=value` overrides and checked in one place, before any model is loaded."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

from polyalign.alignment.quantized import check_quantization
from polyalign.alignment.training_data import TEMPLATES
from polyalign.core.config import apply_overrides, build, read_mapping
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
    precision: str = "auto"  # auto: bf16 where native (CUDA with bf16, AVX512-BF16/AMX CPU), else fp32
    gradient_checkpointing: bool = False
    quantization: str | None = None  # nf4 or int8: a bitsandbytes-quantized frozen base (QLoRA)
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
    report_to: str = "none"  # none, tensorboard (event files under checkpoints/runs/) or wandb
    trust_remote_code: bool = False


# Keys added after runs were recorded: left out of a run's identity at their default, so a step or
# folder recorded before they existed keeps its key. report_to only logs: never part of it.
LATER_KEYS = {"quantization": None}
REPORTERS = ("none", "tensorboard", "wandb")


def recipe_identity(cfg: TrainConfig) -> dict:
    """The recipe as a training step's key and a run folder's config.yaml record it."""
    values = dataclasses.asdict(cfg)
    values.pop("report_to")
    return {k: v for k, v in values.items() if k not in LATER_KEYS or v != LATER_KEYS[k]}


def default_config_path() -> Path:
    return Path(str(files("polyalign.alignment") / "configs" / "train_default.yaml"))


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
    _check_schedule(cfg)
    check_seed(cfg.seed, "seed")
    if not 0 <= cfg.val_size < 1:
        raise PolyalignError(f"val_size must be in [0, 1) (got {cfg.val_size})")
    if not 0 < cfg.learning_rate < math.inf or not 0 <= cfg.warmup_ratio < 1 or not 0 <= cfg.lora_dropout < 1:
        raise PolyalignError(
            f"learning_rate must be a finite number > 0 (got {cfg.learning_rate}), "
            "warmup_ratio and lora_dropout in [0, 1)"
        )
    if cfg.keep not in ("final", "best"):
        raise PolyalignError(f"keep must be final or best (got '{cfg.keep}')")
    if cfg.template not in TEMPLATES:
        raise PolyalignError(f"template must be one of {', '.join(TEMPLATES)} (got '{cfg.template}')")
    if cfg.keep == "best" and cfg.val_size > 0 and cfg.save_steps % cfg.eval_steps:
        raise PolyalignError(
            f"save_steps ({cfg.save_steps}) must be a multiple of eval_steps ({cfg.eval_steps}) "
            f"to keep the best checkpoint"
        )
    cfg.precision = short_precision(cfg.precision)  # one vocabulary: float32 and fp32 alike
    if cfg.precision not in TRAIN_PRECISIONS:
        raise PolyalignError(f"precision must be auto, bf16 (bfloat16) or fp32 (float32) (got '{cfg.precision}')")
    if not cfg.target_modules:
        raise PolyalignError("target_modules is empty")
    if cfg.report_to not in REPORTERS:
        raise PolyalignError(f"report_to must be one of {', '.join(REPORTERS)} (got '{cfg.report_to}')")
    if cfg.report_to != "none" and importlib.util.find_spec(cfg.report_to) is None:
        raise PolyalignError(f"report_to={cfg.report_to} needs its package: pip install {cfg.report_to}")
    check_quantization(cfg.quantization)


def _check_schedule(cfg: TrainConfig) -> None:
    """Values Trainer takes without complaint but that train nothing, or train to NaN."""
    if cfg.max_steps != -1 and cfg.max_steps < 1:
        raise PolyalignError(f"max_steps must be -1 (train for epochs) or at least 1 (got {cfg.max_steps})")
    if not 0 < cfg.epochs < math.inf:
        raise PolyalignError(f"epochs must be a finite number > 0 (got {cfg.epochs})")
    if cfg.lr_scheduler not in SCHEDULERS:
        raise PolyalignError(f"lr_scheduler must be one of {', '.join(SCHEDULERS)} (got '{cfg.lr_scheduler}')")
    for name in ("weight_decay", "max_grad_norm"):
        if not 0 <= getattr(cfg, name) < math.inf:
            raise PolyalignError(f"{name} must be a finite number >= 0 (got {getattr(cfg, name)})")
