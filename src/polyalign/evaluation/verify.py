"""Verified reduced precision: score in bf16/fp16, re-score in float32 where the dtype could matter.

Reduced-precision weights move every class score by a small error, so an item's prediction can
differ from float32's only when its top-two margin is smaller than that error. A verified run
scores every item in the fast dtype, then scores again in float32, from the same resident model
through a layer-wise float32 view (polyalign.engine.float32_view: the checkpoint's own tensors or
exact upcasts, one module at a time, no second copy), every item whose margin is at most the
threshold (ties and NaN scores included, whatever the threshold). The rows written for
those items are the float32 ones, marked with what the fast dtype gave:

  {"index", "gold", "pred", "scores", ["tied"], "fast": {"dtype": "bfloat16", "pred": ..., "margin": ...}}

The margin is in log-probability for both rules: the summed label log-probabilities (exact) or
the log of each label's probability mass (prefix); a tie has margin 0. THRESHOLD comes from
bench/verify_margins.py (its docstring has the numbers).

Resumable like the fast pass: float32 rows go to their own per-process logs
(samples/.partial/fp32/), the items to re-score follow from the fast rows alone, and the batches
are planned over all of them with finished flushes skipped, so a resumed run writes the same
files. The merge keeps exactly the float32 rows of items under the threshold in effect.

The threshold in effect (None: not verified) is part of an eval folder's identity: run.json records
it beside the dtype (eval_folder.RESUMED_AS) and a finished folder's results.json holds it
(eval_folder.check_verification), so a folder evaluated with --no-verify, or another threshold, is
refused (or with --overwrite redone) by a rerun, never relabelled; experiments included.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

from polyalign.core.errors import PolyalignError
from polyalign.core.files import read_jsonl_tolerant
from polyalign.engine.float32_view import Float32View
from polyalign.engine.float32_view import batch_overhead as view_batch_overhead
from polyalign.engine.placement import input_device
from polyalign.engine.scoring import Item, Scorer
from polyalign.evaluation.results import SampleLog
from polyalign.evaluation.verify_plan import (
    AUTO,
    check_threshold,
    describe_auto,
    language_guarantee,
    plan_rounds,
    score_shift,
)

FAST_DTYPES = ("bfloat16", "float16")
# Default: measured on the run itself (polyalign.evaluation.verify_plan). A fixed log-probability
# margin can be given instead: bench/verify_margins.py measured the largest change bf16 made to a
# top-two margin on gemma-3-270m, 10 languages x 10 items per rule, at 0.234 on emotion and 0.370
# (exact) / 0.342 (prefix) on 3-class snli; 0.5 re-scores a quarter to 40% of the items.
THRESHOLD: float | str = AUTO
# What results.json says verification covers. Calibration's boundary is not a zero margin and moves
# with every item's score: re-scoring the items near it too re-scored 213 of 600 instead of 90 and
# still left 2 of 600 calibrated predictions different, against 10 (gemma-3-270m, emotion, 5
# languages x 120; `python bench/verify_rounds.py FP32_DIR BF16_DIR --calibrated`).
COVERS = (
    "raw predictions (each item's best-scoring class); batch-calibrated predictions and AUC are computed "
    "from these scores and are not verified: a few near the calibrated boundary can differ from float32's"
)


def margin(scores: dict[str, float], rule: str) -> float:
    """Gap between the two best classes in log-probability (0 on a tie, inf with one class, NaN
    when a score is NaN or +inf: no gap can be trusted then)."""
    values = [_log(v) if rule == "prefix" else v for v in scores.values()]
    if any(math.isnan(v) or v == math.inf for v in values):
        return math.nan
    values.sort(reverse=True)
    if len(values) < 2:
        return math.inf
    if values[0] == values[1]:
        return 0.0
    return values[0] - values[1]


def _log(p: float) -> float:
    if math.isnan(p):
        return p
    return math.log(p) if p > 0 else -math.inf


def under(scores: dict[str, float], rule: str, threshold: float) -> bool:
    """Whether an item goes back to float32: margin at most the threshold, so ties always do (also
    at threshold 0), and so does a NaN margin (`nan < threshold` would be false)."""
    return not margin(scores, rule) > threshold


def threshold_in_effect(verify: bool | None, threshold: float | str | None, dtype: str) -> float | str | None:
    """The run's threshold (a margin, or `auto`), or None where it is not verified: float32 weights
    (nothing to verify, `verify` is ignored) or verification turned off. `verify` None means on for
    bf16/fp16."""
    if dtype not in FAST_DTYPES or verify is False:
        return None
    return check_threshold(THRESHOLD if threshold is None else threshold)


def reference_checkpoint(model: str, net=None) -> Path | None:
    """The local folder whose safetensors the float32 view reads: the one `net`'s weights were
    loaded from, else `model`'s (None: a hub id not in the local cache; the view then upcasts, and
    says it is not exact where that matters)."""
    from polyalign.engine.model_paths import resolve_model_path
    from polyalign.engine.unembed import base_model

    loaded = getattr(base_model(net).config, "_name_or_path", "") if net is not None else ""
    if loaded and Path(loaded).is_dir():
        return Path(loaded)  # an alias's folder is not re-hashed (1 GB for gemma-3-270m)
    path = Path(resolve_model_path(model))
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model, local_files_only=True, allow_patterns=["*.safetensors", "*.json"]))
    except (OSError, ValueError):
        return None


def log_glob(partial_dir: Path, task: str, lang: str) -> list[Path]:
    return sorted((partial_dir / "fp32").glob(f"{task}_{lang}.rank*.jsonl"))


def carried_shift(partial_dir: Path, task: str, earlier: Sequence[str], rank: int) -> float | None:
    """The largest shift process `rank` measured re-scoring the languages before this one (None: it
    re-scored none), from its float32 logs: what verify_plan carries into the next language."""
    shifts = [
        row["fast"]["shift"]
        for lang in earlier
        for row in read_jsonl_tolerant(partial_dir / "fp32" / f"{task}_{lang}.rank{rank}.jsonl")
        if "shift" in row.get("fast", {})
    ]
    return max(shifts) if shifts else None


class Verifier:
    """Re-scores one process's items under the threshold in float32: by default the resident model
    through a layer-wise float32 view (polyalign.engine.float32_view, no second copy), or a model
    from `load_reference()` where one is given (loaded lazily, once)."""

    def __init__(
        self,
        threshold: float | str,
        fast_dtype: str,
        model,
        tokenizer,
        rule: str,
        batch_size: int,
        checkpoint: Path | None = None,
        load_reference: Callable[[], object] | None = None,
    ):
        self.threshold, self.fast_dtype, self.rule, self.batch_size = threshold, fast_dtype, rule, batch_size
        self._model, self._checkpoint, self._load, self._tokenizer = model, checkpoint, load_reference, tokenizer
        self._scorer: Scorer | None = None
        self._view: Float32View | None = None
        self.seconds = 0.0
        self.rescored = 0  # items re-scored by this process in this session

    @property
    def loaded(self) -> bool:
        return self._scorer is not None

    def reference(self) -> dict:
        """How the float32 scores were computed, for results.json."""
        if self._load is not None:
            return {"method": "second float32 model"}
        if self._view is None:
            self._view = Float32View(self._model, self._checkpoint)
        return self._view.describe()

    def _float32_scorer(self) -> tuple[Scorer, AbstractContextManager]:
        if self._scorer is None:
            if self._load is not None:
                self._scorer = Scorer(self._load(), self._tokenizer)
            else:
                self._view = self._view or Float32View(self._model, self._checkpoint)
                overhead = view_batch_overhead(input_device(self._model))  # it computes in float32
                self._scorer = Scorer(self._model, self._tokenizer, overhead)
        return self._scorer, self._view if self._view is not None else nullcontext()

    def run(
        self,
        items: list[Item],
        fast: dict[int, dict],
        shared: int,
        token_sets,
        partial_dir: Path,
        task: str,
        lang: str,
        rank: int,
        make_row: Callable[[int, dict[str, float]], dict],
        prior: float | None = None,
    ) -> None:
        """Re-score `items` (this process's, all scored fast: rows in `fast`) round by round
        (polyalign.evaluation.verify_plan) until the threshold is reached.

        `make_row(index, scores)` builds a plain sample row; `prior`: `carried_shift` of the
        languages this process verified before.
        """
        start = time.perf_counter()
        by_index = {it.index: it for it in items}
        verified = {r["index"]: r for f in log_glob(partial_dir, task, lang) for r in read_jsonl_tolerant(f)}
        log = SampleLog(partial_dir / "fp32" / f"{task}_{lang}.rank{rank}.jsonl")

        def save(batch_scores: dict[int, dict[str, float]]) -> None:
            rows = [self._row(make_row(i, scores), fast[i]) for i, scores in sorted(batch_scores.items())]
            log.append(rows)
            verified.update((row["index"], row) for row in rows)
            self.rescored += len(rows)

        try:
            while True:
                rounds, reached = rounds_of(list(by_index), fast, verified, self.threshold, self.rule, prior)
                if reached is not None:
                    return
                scorer, view = self._float32_scorer()
                need = [by_index[i] for i in rounds[-1]]  # planned whole: a resumed round has the same batches
                with view:
                    scorer.score(need, shared, self.rule, token_sets, self.batch_size, on_batch=save, done=verified)
        finally:
            log.close()
            self.seconds += time.perf_counter() - start

    def _row(self, row: dict, was: dict) -> dict:
        """A float32 row, marked with what the fast dtype gave and how far it was off."""
        shift = score_shift(was["scores"], row["scores"], self.rule)
        fast = {"dtype": self.fast_dtype, "pred": was["pred"], "margin": margin(was["scores"], self.rule)}
        return {**row, "fast": {**fast, "shift": shift}}


def rounds_of(
    indices: list[int],
    fast: dict[int, dict],
    verified: dict[int, dict],
    threshold: float | str,
    rule: str,
    prior: float | None = None,
) -> tuple[list[list[int]], float | None]:
    """verify_plan.plan_rounds over one process's items, from its bf16 rows and the float32 rows found."""
    margins = {i: margin(fast[i]["scores"], rule) for i in indices}
    shifts = {i: score_shift(fast[i]["scores"], verified[i]["scores"], rule) for i in indices if i in verified}
    return plan_rounds(indices, margins, shifts, threshold, prior)


def merge(
    rows: dict[int, dict],
    partial_dir: Path,
    task: str,
    lang: str,
    threshold: float | str,
    rule: str,
    world: int = 1,
    earlier: Sequence[str] = (),
) -> None:
    """Replace, in `rows` (index -> fast row), every item each process's rounds re-scored by its
    float32 row (those rounds recomputed from the rows alone, with the shifts each process carried
    from the `earlier` languages: a missing one means unfinished)."""
    verified = {r["index"]: r for f in log_glob(partial_dir, task, lang) for r in read_jsonl_tolerant(f)}
    need: list[int] = []
    for rank in range(world):
        mine = [i for i in rows if i % world == rank]
        prior = carried_shift(partial_dir, task, earlier, rank)
        rounds, reached = rounds_of(mine, rows, verified, threshold, rule, prior)
        if reached is None:
            missing = sum(i not in verified for r in rounds for i in r)
            raise PolyalignError(f"{task}/{lang}: {missing} items were not re-scored in float32; run again to resume")
        need += [i for r in rounds for i in r]
    rows.update({i: verified[i] for i in need})


def language_stats(rows: list[dict], rule: str, tokens: Mapping[int, int]) -> dict:
    """How many of a language's items were re-scored, and of their scored tokens (`tokens`: item index
    -> tokens after the shared prefix, scoring.scored_tokens; re-scoring costs float32's price per
    token, and the near ties can be the longest items), how many predictions that changed, and what
    the re-scoring shows (verify_plan.language_guarantee)."""
    rescored = [r for r in rows if "fast" in r]
    return {
        "rescored": len(rescored),
        "rescored_tokens": sum(tokens[r["index"]] for r in rescored),
        "tokens": sum(tokens[r["index"]] for r in rows),
        "changed": sum(r["fast"]["pred"] != r["pred"] for r in rescored),
        **language_guarantee(rows, lambda scores: margin(scores, rule)),
    }


def summary(threshold: float | str | None, fast_dtype: str, languages: dict, verifier: Verifier | None) -> dict | None:
    """results.json's `verify` entry: threshold and why, items (and their scored tokens) re-scored in
    total and per language, and the guarantee the samples show (the smallest ratio of a kept margin
    to a measured shift)."""
    if threshold is None:
        return None
    per = {lang: entry["verify"] for lang, entry in languages.items()}
    why = describe_auto() if threshold == AUTO else f"a fixed margin: every item whose bf16 margin is <= {threshold}"
    return {
        "dtype": fast_dtype,
        "reference_dtype": "float32",
        "threshold": threshold,
        "why": why,
        "covers": COVERS,
        "rescored": sum(v["rescored"] for v in per.values()),
        "rescored_tokens": sum(v["rescored_tokens"] for v in per.values()),
        "tokens": sum(v["tokens"] for v in per.values()),
        "changed": sum(v["changed"] for v in per.values()),
        "items": sum(entry["n"] for entry in languages.values()),
        "max_shift": max((v["max_shift"] for v in per.values()), default=0.0),
        "kept_margin_over_max_shift": min((v["kept_margin_over_max_shift"] for v in per.values()), default=math.inf),
        "per_language": per,
        "seconds": round(verifier.seconds, 3) if verifier else 0.0,
        "reference": verifier.reference() if verifier else None,
    }
