"""EvalConfig: what defines an evaluation's results, each field with its help as metadata.

Why a module of its own: `polyalign eval` builds its options from these fields (polyalign.cli.dataclass_args)
when the parser is built, which must not import torch; an experiment's eval step builds the same
config from its declaration (polyalign.core.config.from_attributes), so neither copies it field by field.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from polyalign.core.config import option
from polyalign.core.declarations import RULES
from polyalign.core.errors import PolyalignError
from polyalign.core.prompts import PromptPack
from polyalign.core.tasks import TaskSpec
from polyalign.evaluation.inputs import check_inputs


def threshold_value(text: str) -> float | str:
    """--verify-threshold: a log-probability margin, or auto."""
    return text if text == "auto" else float(text)


@dataclass
class EvalConfig:
    """Everything that defines an evaluation's results (batch size does not); checked when made."""

    model: str = option(help="Hugging Face id, local folder, or packaged alias")
    task: str = option(help="emotion, snli, paws, or a task .yaml file")
    langs: str = option("all", "'all' or comma-separated codes (en,zh,...)")
    mode: str = option("english", "label words: english, native or agnostic")
    scoring: str = option("exact", "exact (full label log-prob) or prefix (the paper's rule)")  # checked below
    adapter: str | None = option(None, "LoRA adapter folder applied on top of the model")
    limit: int | None = option(None, "first N items per language")
    items: str | None = option(None, "half-open range of benchmark item indices, e.g. 0:250", metavar="START:STOP")
    data_dir: str | None = option(None, "benchmark folder")
    prompts: str | None = option(None, "prompt pack JSON (default: polyalign's own pack)")
    batch_size: int = option(16, "most prompts per forward; batches are cut to minimize padding")
    allow_overlap: bool = option(False, "score items the adapter's training questions came from")
    verify: bool | None = option(
        None,
        "bf16/fp16 weights: re-score in float32 the items whose top-two margin is under "
        "--verify-threshold (default: on; ignored for float32)",
    )
    verify_threshold: float | str | None = option(
        None,
        "log-probability margin under which --verify re-scores, or auto (the default): measured on the "
        "run, a safety factor times the largest bf16-vs-float32 shift of its re-scored items "
        "(polyalign.evaluation.verify_plan)",
        parse=threshold_value,
        metavar="MARGIN|auto",
    )

    def __post_init__(self) -> None:
        if self.scoring not in RULES:
            raise PolyalignError(f"unknown scoring '{self.scoring}' (choose from {', '.join(RULES)})")
        if self.limit is not None and self.limit < 1:
            raise PolyalignError("--limit must be at least 1")
        if self.batch_size < 1:
            raise PolyalignError("--batch-size must be at least 1")

    def identity(self) -> dict:
        # verification is not part of it: what it depends on is the threshold in effect for the
        # weights' dtype, which run.json records with the dtype (eval_folder.RESUMED_AS)
        skip = ("batch_size", "allow_overlap", "verify", "verify_threshold")
        return {k: v for k, v in asdict(self).items() if k not in skip}


def check_config(cfg: EvalConfig) -> tuple[TaskSpec, PromptPack, list[str]]:
    """Check the inputs, which needs no model (call before loading one): (task, pack, languages)."""
    return check_inputs(
        cfg.task,
        cfg.langs,
        cfg.mode,
        cfg.items,
        cfg.limit,
        cfg.data_dir,
        cfg.prompts,
        cfg.adapter,
        cfg.allow_overlap,
        model=cfg.model,  # a merged model carries its adapter's provenance
    )
