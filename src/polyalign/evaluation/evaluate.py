"""`polyalign eval`: few-shot constrained evaluation over languages, resumable and shardable.

Layout of an output folder:
  run.json                      the configuration (a different run refuses to reuse the folder)
  samples/.partial/*.jsonl      per-process logs of finished items (resume reads these)
  samples/.partial/fp32/*.jsonl float32 re-scores of a verified bf16/fp16 run (polyalign.evaluation.verify)
  samples/{task}_{lang}.jsonl   final per-item results, sorted by index
  results.json                  summary, written last and atomically
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from polyalign.core.errors import PolyalignError
from polyalign.core.files import atomic_write_json, atomic_write_text, read_jsonl_tolerant
from polyalign.core.item_range import evaluated_range, parse_items, read_provenance
from polyalign.core.prompts import PromptPack
from polyalign.core.tasks import gold_labels, load_task, load_test_records, resolve_data_dir
from polyalign.engine.models import describe_model
from polyalign.engine.precision import AUTO_CHOICES
from polyalign.engine.scoring import (
    Indistinguishable,
    Item,
    Scorer,
    check_distinguishable,
    continuation_ids,
    prefix_sets,
    scored_tokens,
)
from polyalign.evaluation.calibration import calibration_averages, calibration_summary
from polyalign.evaluation.eval_config import EvalConfig, check_config
from polyalign.evaluation.eval_folder import claim_run_dir, run_identity
from polyalign.evaluation.results import SampleLog, predict, read_samples, samples_text, summarize
from polyalign.evaluation.verify import (
    Verifier,
    carried_shift,
    language_stats,
    merge,
    reference_checkpoint,
    summary,
    threshold_in_effect,
)


@dataclass
class PreparedLanguage:
    lang: str
    items: list[Item]
    shared: int
    golds: list[str]
    words: dict[str, str]
    token_sets: dict[str, list[int]] | None
    info: dict


def _distributed():
    """(rank, world size, barrier) under `accelerate launch`/torchrun, else a single process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1, lambda: None
    import torch
    from accelerate import PartialState

    # Without CUDA, PartialState only joins the process group (gloo) when told it runs on CPU.
    state = PartialState(cpu=not torch.cuda.is_available())
    if state.num_processes <= 1:
        raise PolyalignError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} but no process group could be formed")
    return state.process_index, state.num_processes, state.wait_for_everyone


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def prepare_language(cfg: EvalConfig, pack: PromptPack, tokenizer, lang: str, strict: bool = True) -> PreparedLanguage:
    """Render, tokenize and check one language's items before any model call.

    With `strict` off, label words the rule cannot tell apart leave this language unscored, its
    reason in `info["unscorable"]` and no items: one such language must not stop the others.
    """
    task = load_task(cfg.task)
    data_dir = resolve_data_dir(cfg.data_dir)
    records = load_test_records(task, lang, data_dir)
    gold = gold_labels(task, lang, records, data_dir)
    chosen = evaluated_range(parse_items(cfg.items), cfg.limit, len(records))
    words = pack.label_words(task, lang, cfg.mode)
    prefix_text, _ = pack.split(task, lang, cfg.mode)
    prefix_ids = tokenizer(prefix_text)["input_ids"]
    where = f"{task.name}/{lang} mode {cfg.mode}"
    items, shared, first_prompt = [], len(prefix_ids), ""
    for i in chosen.indices():
        prompt = pack.render(task, lang, cfg.mode, records[i])
        ids = tokenizer(prompt)["input_ids"]
        conts = {}
        if cfg.scoring == "exact":
            conts = {c: continuation_ids(tokenizer, ids, prompt, w) for c, w in words.items()}
        shared = min(shared, _common_prefix(prefix_ids, ids))
        items.append(Item(i, ids, conts))
        first_prompt = first_prompt or prompt
    info = {
        "label_words": words,
        "gold_mapping": gold.mapping,
        "inconsistent_file_labels": gold.inconsistent,
        "shared_prefix_tokens": shared,
    }
    token_sets = None
    try:
        if cfg.scoring == "prefix":
            token_sets = _prefix_rule(tokenizer, items, first_prompt, words, where, info)
        for item in items if cfg.scoring == "exact" else []:
            check_distinguishable(words, item.continuations, "exact", where)
    except Indistinguishable as exc:
        if strict:
            raise
        info["unscorable"] = str(exc)
    shown = token_sets if token_sets is not None else (items[0].continuations if items else {})
    info["label_tokens"] = {c: {"ids": ids, "tokens": tokenizer.convert_ids_to_tokens(ids)} for c, ids in shown.items()}
    kept = [] if "unscorable" in info else items
    return PreparedLanguage(lang, kept, shared, [gold.classes[it.index] for it in kept], words, token_sets, info)


def _prefix_rule(
    tokenizer, items: list[Item], prompt: str, words: dict[str, str], where: str, info: dict
) -> dict[str, list[int]]:
    """Candidate sets of the prefix rule; labels with a shared token stem get it appended to every prompt."""
    stem_ids, stem, sets = prefix_sets(tokenizer, items[0].ids, prompt, words)
    if stem_ids:
        info["stem"] = {
            "text": stem,
            "ids": stem_ids,
            "tokens": tokenizer.convert_ids_to_tokens(stem_ids),
            "scored_words": {c: w[len(stem) :] for c, w in words.items()},
        }
    check_distinguishable({c: w[len(stem) :] for c, w in words.items()}, sets, "prefix", where)
    for item in items:
        item.ids = item.ids + stem_ids
    return sets


def run_eval(
    cfg: EvalConfig,
    model,
    tokenizer,
    out: Path,
    overwrite: bool = False,
    progress: bool = True,
    load_reference: Callable[[], object] | None = None,
) -> dict | None:
    """Evaluate every language; returns results.json's content on the main process.

    A verified run (bf16/fp16 weights, see polyalign.evaluation.verify) re-scores in float32 through a
    layer-wise view of `model` (no second copy), or with `load_reference()`'s model where given.
    """
    task, pack, langs = check_config(cfg)
    rank, world, barrier = _distributed()
    runtime = run_identity(model, cfg.batch_size, world)
    threshold = threshold_in_effect(cfg.verify, cfg.verify_threshold, runtime["dtype"])
    claim_run_dir(out, cfg.identity(), overwrite, rank, {**runtime, "verify_threshold": threshold})
    barrier()
    # every language is prepared (and checked) before any computing; one whose labels the rule
    # cannot tell apart is reported in results.json, not scored, and does not stop the others
    prepared = [prepare_language(cfg, pack, tokenizer, lang, strict=False) for lang in langs]
    scorer = Scorer(model, tokenizer)
    verifier = None
    if threshold is not None:
        checkpoint = None if load_reference else reference_checkpoint(cfg.model, model)
        verifier = Verifier(
            threshold, runtime["dtype"], model, tokenizer, cfg.scoring, cfg.batch_size, checkpoint, load_reference
        )
    final = {p.lang: out / "samples" / f"{task.name}_{p.lang}.jsonl" for p in prepared}
    todo_total = sum(len(p.items) for p in prepared if not final[p.lang].exists())
    bar = tqdm(total=todo_total, desc=f"{task.name} eval", unit="item", disable=not progress or rank != 0)
    scored, seconds = 0, 0.0
    for prep in prepared:
        if final[prep.lang].exists() or "unscorable" in prep.info:
            continue
        start = time.perf_counter()
        earlier = scorable_before(prepared, prep.lang)
        scored += _score_language(
            cfg, task.name, prep, scorer, verifier, out / "samples" / ".partial", (rank, world), bar, earlier
        )
        seconds += time.perf_counter() - start
    bar.close()
    if scorer.backoff and scorer.backoff.record:  # batches halved after out-of-memory errors
        runtime = {**runtime, "oom_backoff": scorer.backoff.record}
    barrier()
    if rank != 0:
        return None
    return _finish(cfg, task.name, pack, prepared, out, final, scored, seconds, runtime, threshold, verifier)


def sample_row(index: int, gold: str, scores: dict[str, float]) -> dict:
    """One item's row of a samples file."""
    pred, tied = predict(scores)
    row = {"index": index, "gold": gold, "pred": pred, "scores": scores}
    if tied:
        row["tied"] = tied
    return row


def _score_language(
    cfg: EvalConfig,
    task: str,
    prep: PreparedLanguage,
    scorer: Scorer,
    verifier: Verifier | None,
    partial_dir: Path,
    shard: tuple[int, int],
    bar,
    earlier: list[str],
) -> int:
    """Score this process's share of one language (resuming its log), then verify it (carrying the
    shifts measured on the `earlier` languages); items scored."""
    rank, world = shard
    done = {r["index"]: r for f in partial_dir.glob(f"{task}_{prep.lang}.rank*.jsonl") for r in read_jsonl_tolerant(f)}
    bar.update(len(done) if rank == 0 else 0)
    mine = [it for it in prep.items if it.index % world == rank]  # planned whole: see Scorer.score
    log = SampleLog(partial_dir / f"{task}_{prep.lang}.rank{rank}.jsonl")
    bar.set_postfix_str(prep.lang)
    gold_of = {it.index: g for it, g in zip(prep.items, prep.golds)}

    def make_row(index: int, scores: dict[str, float]) -> dict:
        return sample_row(index, gold_of[index], scores)

    fresh: dict[int, dict] = {}

    def save(batch_scores: dict[int, dict[str, float]]) -> None:
        rows = [make_row(index, scores) for index, scores in sorted(batch_scores.items())]
        log.append(rows)
        fresh.update((row["index"], row) for row in rows)
        bar.update(len(rows) * world)

    try:
        if any(it.index not in done for it in mine):
            scorer.score(mine, prep.shared, cfg.scoring, prep.token_sets, cfg.batch_size, on_batch=save, done=set(done))
    finally:
        log.close()
    if verifier is not None:
        bar.set_postfix_str(f"{prep.lang} float32 check")
        prior = carried_shift(partial_dir, task, earlier, rank)
        rows = {**done, **fresh}
        verifier.run(mine, rows, prep.shared, prep.token_sets, partial_dir, task, prep.lang, rank, make_row, prior)
    return sum(it.index not in done for it in mine)


def _finish(
    cfg: EvalConfig,
    task: str,
    pack: PromptPack,
    prepared: list[PreparedLanguage],
    out: Path,
    final: dict[str, Path],
    scored: int,
    seconds: float,
    runtime: dict,
    threshold: float | str | None,
    verifier: Verifier | None,
) -> dict:
    """Merge process logs into sorted sample files, then write results.json last."""
    partial_dir = out / "samples" / ".partial"
    languages, unscorable = {}, {}
    for prep in prepared:
        if "unscorable" in prep.info:
            unscorable[prep.lang] = {"reason": prep.info["unscorable"], **prep.info}
            continue
        if not final[prep.lang].exists():
            earlier = scorable_before(prepared, prep.lang)
            _merge_language(prep, task, partial_dir, final[prep.lang], threshold, cfg, runtime["world_size"], earlier)
        samples = read_samples(final[prep.lang])
        languages[prep.lang] = {**summarize(samples), **calibration_summary(samples, cfg.scoring), **prep.info}
        if threshold is not None:
            tokens = scored_tokens(prep.items, prep.shared, cfg.scoring)
            languages[prep.lang]["verify"] = language_stats(samples, cfg.scoring, tokens)
    accuracies = [v["accuracy"] for v in languages.values()]
    results = {
        **describe_model(cfg.model, cfg.adapter),
        "task": task,
        "mode": cfg.mode,
        "scoring": cfg.scoring,
        "limit": cfg.limit,
        "items": cfg.items,
        "trained_on": read_provenance(cfg.adapter),
        "prompts": cfg.prompts or "polyalign (built in)",
        "prompts_sha256": hashlib.sha256(Path(pack.source).read_bytes()).hexdigest(),
        "languages": languages,
        "unscorable": unscorable,  # languages whose label words the rule cannot tell apart, with the reason
        "average": sum(accuracies) / len(accuracies) if accuracies else 0.0,
        **calibration_averages(languages),  # of calibrated accuracy and (two classes) AUC
        "runtime": runtime,  # dtype and device type of the weights, batch size, processes (last session)
        "precision_why": AUTO_CHOICES.get(cfg.model, {}).get("why", "dtype given (--dtype, POLYALIGN_DTYPE or dtype:)"),
        # bf16/fp16 runs: threshold, items re-scored in float32 (in total and per language); else None
        "verify": summary(threshold, runtime["dtype"], languages, verifier),
        "timing": {
            "seconds": round(seconds, 3),
            "items_scored": scored,
            "items_per_second": round(scored / seconds, 3) if seconds > 0 else None,
        },
    }
    atomic_write_json(out / "results.json", results)
    if partial_dir.exists():
        shutil.rmtree(partial_dir)
    return results


def scorable_before(prepared: list[PreparedLanguage], lang: str) -> list[str]:
    """The scorable languages run before `lang`: a verified run carries their measured shifts."""
    order = [p.lang for p in prepared if "unscorable" not in p.info]
    return order[: order.index(lang)] if lang in order else order


def _merge_language(
    prep: PreparedLanguage,
    task: str,
    partial_dir: Path,
    final: Path,
    threshold: float | str | None,
    cfg: EvalConfig,
    world: int,
    earlier: list[str],
) -> None:
    """Write one language's sorted samples file from the process logs (and float32 re-scores)."""
    rows = {
        r["index"]: r
        for f in sorted(partial_dir.glob(f"{task}_{prep.lang}.rank*.jsonl"))
        for r in read_jsonl_tolerant(f)
    }
    missing = [it.index for it in prep.items if it.index not in rows]
    if missing:
        raise PolyalignError(f"{task}/{prep.lang}: {len(missing)} items were not scored; run again to resume")
    if threshold is not None:
        merge(rows, partial_dir, task, prep.lang, threshold, cfg.scoring, world, earlier)
    atomic_write_text(final, samples_text([rows[it.index] for it in prep.items]))
