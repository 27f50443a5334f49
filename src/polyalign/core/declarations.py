"""The names and limits a command line or an experiment file may declare, and their checks.

Why a module of its own: validating a declaration (`--help`, `run --dry-run`, an experiment
file) must not import torch, and each check was written once per command. Nothing here
imports more than the standard library.
"""

from __future__ import annotations

from polyalign.core.errors import PolyalignError

RULES = ("exact", "prefix")  # scoring: full label log-prob, or the paper's prefix mass
# last: the answer position; mean: the item's own tokens (after the shared prefix);
# all: every prompt position, BOS and few-shot block included (the paper's Figure 2 notebook).
POOLINGS = ("mean", "last", "all")
DTYPE_NAMES = ("float32", "bfloat16", "float16")  # torch dtypes, by name (polyalign.engine.models maps them)
# auto: bf16 where the device computes it natively, else float32 (polyalign.engine.precision)
DTYPE_CHOICES = ("auto", *DTYPE_NAMES)
# One precision vocabulary for every command, config and experiment: each spelling -> its torch
# dtype name (--dtype fp32 and precision=float32 mean the same as float32 and fp32).
DTYPE_SPELLINGS = {"auto": "auto", "fp32": "float32", "bf16": "bfloat16", "fp16": "float16"} | {
    name: name for name in DTYPE_NAMES
}
TRAIN_PRECISIONS = ("auto", "bf16", "fp32")  # what a training recipe's precision may be
SHORT_PRECISION = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "auto": "auto"}


def dtype_name(spelling: str) -> str:
    """The torch dtype name (or auto) of a precision as any command accepts it; unknown: as given."""
    return DTYPE_SPELLINGS.get(spelling, spelling)


def short_precision(spelling: str) -> str:
    """The short name (auto, fp32, bf16, fp16) of a precision as any command accepts it."""
    return SHORT_PRECISION.get(dtype_name(spelling), spelling)


DEFAULT_MODEL = "gemma-3-270m"  # a packaged alias (polyalign.engine.models.ALIASES)
MIN_ITEMS = 3  # items per language the lens and PCA need (an interval, a PCA)


def check_choice(value: str, choices: tuple[str, ...], what: str) -> str:
    """`value` if it is one of `choices`, else one line naming them. `what` may be 'WHERE: KEY'
    (claim 1, part 'gain': measure): the message then reads as an invalid value of that key,
    not as if the claim or the setting were unknown."""
    if value not in choices:
        where, _, key = what.rpartition(": ")
        head = f"{where}: invalid {key}" if where else f"unknown {key}"
        raise PolyalignError(f"{head} '{value}' (choose from {', '.join(choices)})")
    return value


SEED_MAX = 2**32 - 1  # numpy's and the Trainer's seeds: a larger one fails only once training starts


def check_seed(seed: int, what: str) -> None:
    """A seed every random generator the run seeds accepts, refused at load (not after steps ran)."""
    if not 0 <= seed <= SEED_MAX:
        raise PolyalignError(f"{what} {seed}: a seed must be a whole number in 0..{SEED_MAX} (2**32 - 1)")


def check_analysis_limit(limit: int | None, what: str, flag: str = "--limit") -> None:
    """The lens and PCA need MIN_ITEMS items per language; `limit=None` takes them all."""
    if limit is not None and limit < MIN_ITEMS:
        raise PolyalignError(f"{flag} {limit}: {what} needs at least {MIN_ITEMS} items per language")


def check_layer_names(layers: list[int | str] | None, where: str) -> None:
    """Layers as declared, before any model is known: numbers from 1, or 'last'."""
    for layer in layers or []:
        if layer != "last" and not (isinstance(layer, int) and not isinstance(layer, bool) and layer >= 1):
            raise PolyalignError(f"{where}: layer {layer!r} is not a layer number (1, 2, ...) or 'last'")


def resolve_layers(layers: list[int | str] | None, total: int) -> list[int]:
    """1-based block outputs ('last' = `total`, the model's final, normed output), sorted; None: all."""
    if layers is None:
        return list(range(1, total + 1))
    chosen = [total if layer == "last" else layer for layer in layers]
    bad = [layer for layer in chosen if not (isinstance(layer, int) and 1 <= layer <= total)]
    if bad or not chosen:
        raise PolyalignError(
            f"layer {bad[0] if bad else '(none)'} out of range: the model has {total} layers (use 1..{total} or 'last')"
        )
    return sorted({int(layer) for layer in chosen})
