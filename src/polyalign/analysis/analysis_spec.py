"""What a logit lens or a PCA reads: LensSpec and PcaSpec, declared once for `polyalign lens`/`pca`,
an experiment's `analyses`, and run_lens/run_pca, which take them whole.

Why a module of its own: an experiment file is read and checked without torch, which the
analyses themselves (polyalign.analysis.lens, polyalign.analysis.pca) import.
"""

from __future__ import annotations

from dataclasses import dataclass

from polyalign.core.config import option
from polyalign.core.declarations import POOLINGS, check_choice

TASK_HELP = "emotion, snli, paws, or a task .yaml file"
LANGS_HELP = "comma-separated codes (zh,ja,ru) or 'all' (in an experiment, a list)"
LIMIT_HELP = "first N items per language (at least 3; in an experiment, null: all)"


@dataclass
class LensSpec:
    """A logit-lens analysis of the base model and every adapter (paper Figure 1)."""

    task: str = option(help=TASK_HELP)
    langs: list[str] = option(help=LANGS_HELP)
    mode: str = option("native", "prompt label words: english, native or agnostic")
    limit: int | None = option(100, LIMIT_HELP)
    layers: list[int | str] | None = option(None, "1-based layers or 'last' (None: all)")
    items: str | None = option(None, "benchmark item range START:STOP (in an experiment, default: the experiment's)")


@dataclass
class PcaSpec:
    """A PCA of intermediate representations of the base model and every adapter (paper Figure 2)."""

    task: str = option(help=TASK_HELP)
    langs: list[str] = option(help=LANGS_HELP)
    layers: list[int | str] = option(["last"], "1-based layers or 'last'")
    pooling: str = option(
        "mean",
        "mean: the item's tokens; all: every prompt position, few-shot block and BOS included "
        "(the paper's Figure 2); last: the answer position",
        POOLINGS,
    )
    limit: int | None = option(100, LIMIT_HELP)
    mode: str = option("english", "prompt label words: english, native or agnostic")
    items: str | None = option(None, "benchmark item range START:STOP (in an experiment, default: the experiment's)")

    def __post_init__(self) -> None:
        check_choice(self.pooling, POOLINGS, "pooling")
