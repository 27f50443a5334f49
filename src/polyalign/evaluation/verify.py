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
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

from polyalign.core.errors import PolyalignError
from polyalign.core.files import read_jsonl_tolerant
from polyalign.engine.float32_view import Float32View
from polyalign.engine.scoring import Item, Scorer
from polyalign.evaluation.results import SampleLog

FAST_DTYPES = ("bfloat16", "float16")
# Log-probability margin up to which a fast-dtype item is re-scored in float32. Measured, not a
# bound: the largest change bf16 made to a top-two margin on gemma-3-270m, 10 languages x 10 items
# per rule (bench/verify_margins.py), was 0.234 on emotion (0.5 is ~2x) and 0.370 (exact) / 0.342
# (prefix) on 3-class snli (~1.35x); another model, task or device may shift margins more. About a
# quarter of emotion items and a third of snli items fall under it.
THRESHOLD = 0.5


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


def threshold_in_effect(verify: bool | None, threshold: float | None, dtype: str) -> float | None:
    """The run's threshold, or None where it is not verified: float32 weights (nothing to verify,
    `verify` is ignored) or verification turned off. `verify` None means on for bf16/fp16."""
    if dtype not in FAST_DTYPES or verify is False:
        return None
    chosen = THRESHOLD if threshold is None else threshold
    if not chosen >= 0:
        raise PolyalignError(f"--verify-threshold must be a margin >= 0 (got {threshold})")
    return chosen


def reference_checkpoint(model: str) -> Path | None:
    """The local folder whose safetensors the float32 view reads (None: a hub id not in the local
    cache; the view then upcasts, and says it is not exact where that matters)."""
    from polyalign.engine.models import resolve_model_path

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


class Verifier:
    """Re-scores one process's items under the threshold in float32: by default the resident model
    through a layer-wise float32 view (polyalign.engine.float32_view, no second copy), or a model
    from `load_reference()` where one is given (loaded lazily, once)."""

    def __init__(
        self,
        threshold: float,
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
                self._scorer = Scorer(self._model, self._tokenizer)
        return self._scorer, self._view if self._view is not None else nullcontext()

    def needs(self, row: dict) -> bool:
        return under(row["scores"], self.rule, self.threshold)

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
    ) -> None:
        """Re-score `items` (this process's, all scored fast: rows in `fast`) under the threshold.

        `make_row(index, scores)` builds a plain sample row.
        """
        start = time.perf_counter()
        need = [it for it in items if self.needs(fast[it.index])]
        done = {r["index"] for f in log_glob(partial_dir, task, lang) for r in read_jsonl_tolerant(f)}
        if all(it.index in done for it in need):
            return
        scorer, view = self._float32_scorer()
        log = SampleLog(partial_dir / "fp32" / f"{task}_{lang}.rank{rank}.jsonl")

        def save(batch_scores: dict[int, dict[str, float]]) -> None:
            rows = []
            for index, scores in sorted(batch_scores.items()):
                was = fast[index]
                rows.append(
                    {
                        **make_row(index, scores),
                        "fast": {
                            "dtype": self.fast_dtype,
                            "pred": was["pred"],
                            "margin": margin(was["scores"], self.rule),
                        },
                    }
                )
            log.append(rows)
            self.rescored += len(rows)

        try:
            with view:
                scorer.score(need, shared, self.rule, token_sets, self.batch_size, on_batch=save, done=done)
        finally:
            log.close()
            self.seconds += time.perf_counter() - start


def merge(rows: dict[int, dict], partial_dir: Path, task: str, lang: str, threshold: float, rule: str) -> None:
    """Replace, in `rows` (index -> fast row), every item under the threshold by its float32 row."""
    verified = {r["index"]: r for f in log_glob(partial_dir, task, lang) for r in read_jsonl_tolerant(f)}
    need = [i for i, row in rows.items() if under(row["scores"], rule, threshold)]
    missing = [i for i in need if i not in verified]
    if missing:
        raise PolyalignError(f"{task}/{lang}: {len(missing)} items were not re-scored in float32; run again to resume")
    rows.update({i: verified[i] for i in need})


def language_stats(rows: list[dict]) -> dict:
    """How many of a language's items were re-scored, and how many predictions that changed."""
    rescored = [r for r in rows if "fast" in r]
    return {"rescored": len(rescored), "changed": sum(r["fast"]["pred"] != r["pred"] for r in rescored)}


def summary(threshold: float | None, fast_dtype: str, languages: dict, verifier: Verifier | None) -> dict | None:
    """results.json's `verify` entry: threshold, items re-scored in total and per language."""
    if threshold is None:
        return None
    per = {lang: entry["verify"] for lang, entry in languages.items()}
    return {
        "dtype": fast_dtype,
        "reference_dtype": "float32",
        "threshold": threshold,
        "rescored": sum(v["rescored"] for v in per.values()),
        "changed": sum(v["changed"] for v in per.values()),
        "items": sum(entry["n"] for entry in languages.values()),
        "per_language": per,
        "seconds": round(verifier.seconds, 3) if verifier else 0.0,
        "reference": verifier.reference() if verifier else None,
    }
