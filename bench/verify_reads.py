"""Float32 re-scoring through the layer-wise view: checkpoint tensors copied vs used where mapped.

Why: a verified bf16 run re-scores its near ties in float32 through polyalign.engine.float32_view,
which reads the checkpoint's float32 tensors one module at a time, once per forward (1.07 GB for
gemma-3-270m, 671 MB of it the output head). This times the same items re-scored three ways, in
one process, alternated round by round, so every ratio is measured under one machine state:

- `copied`: every tensor copied out of the mapped file into fresh memory (as before 2026-12-06);
- `mapped`: float32 tensors used in place, a view of the mapping (polyalign.engine.checkpoint_tensors);
- `native`: a separately loaded float32 model with the same batches, the baseline, whose scores the
  two others must equal bit for bit.

With --rescored-in VERIFIED_DIR only the items that verified evaluation re-scored in --lang are
timed (its model, task, items and prompts), the set a verified run gives the view.

    OMP_NUM_THREADS=2 python bench/verify_reads.py [--model gemma-3-270m] [--items 80:104] [--rounds 3]
        [--lang en] [--rescored-in VERIFIED_DIR]
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_report  # noqa: E402


def rescore(view, scorer, prep, batch_size: int, copied: bool) -> tuple[float, dict]:
    """Seconds and scores of `prep`'s items re-scored through the view, its tensors copied or mapped."""
    from polyalign.engine import checkpoint_tensors

    saved = checkpoint_tensors.ALIGN
    checkpoint_tensors.ALIGN = 1 << 62 if copied else saved  # no offset qualifies: every read copies
    try:
        start = time.perf_counter()
        with view:
            scores = scorer.score(prep.items, prep.shared, "prefix", prep.token_sets, batch_size)
        return time.perf_counter() - start, scores
    finally:
        checkpoint_tensors.ALIGN = saved


def time_view(args, tokenizer, prep, batch_size: int) -> tuple[dict, dict, int]:
    """(seconds per variant, last scores per variant, the view scorer's batch overhead), alternated."""
    from polyalign.engine.float32_view import Float32View
    from polyalign.engine.models import load_model
    from polyalign.engine.scoring import Scorer
    from polyalign.evaluation.verify import reference_checkpoint

    model, _ = load_model(args.model, dtype="bfloat16")
    view = Float32View(model, reference_checkpoint(args.model, model))
    scorer = Scorer(model, tokenizer)
    rescore(view, scorer, prep, batch_size, False)  # the float32 prefix cache and first shapes, untimed
    seconds: dict[str, list[float]] = {"copied": [], "mapped": []}
    scores = {}
    for round_ in range(args.rounds):
        for variant in ("copied", "mapped") if round_ % 2 == 0 else ("mapped", "copied"):
            spent, scores[variant] = rescore(view, scorer, prep, batch_size, variant == "copied")
            seconds[variant].append(spent)
    return seconds, scores, scorer.batch_overhead


def time_native(args, tokenizer, prep, batch_size: int, overhead: int) -> tuple[list[float], dict]:
    """Seconds per round and scores of a separately loaded float32 model, in the view's batches."""
    from polyalign.engine.models import load_model
    from polyalign.engine.scoring import Scorer

    native, _ = load_model(args.model, dtype="float32")
    baseline = Scorer(native, tokenizer)
    baseline.batch_overhead = overhead  # the view's batches, so the scores compare bit for bit
    baseline.score(prep.items, prep.shared, "prefix", prep.token_sets, batch_size)
    seconds = []
    for _ in range(args.rounds):
        start = time.perf_counter()
        scores = baseline.score(prep.items, prep.shared, "prefix", prep.token_sets, batch_size)
        seconds.append(time.perf_counter() - start)
    return seconds, scores


def main(argv: list[str] | None = None) -> int:
    p = bench_report.parser(__doc__.splitlines()[0], rounds=3)
    p.add_argument("--items", default="80:104", help="emotion items of --lang re-scored in float32")
    p.add_argument("--lang", default="en")
    p.add_argument("--data-dir")
    p.add_argument("--rescored-in", type=Path, help="a verified eval folder: time only the items it re-scored")
    args = bench_report.parse(p, argv)

    from polyalign.core.tasks import resolve_data_dir
    from polyalign.engine.models import load_tokenizer
    from polyalign.engine.precision import cpu_description
    from polyalign.evaluation.eval_config import EvalConfig, check_config
    from polyalign.evaluation.evaluate import prepare_language

    data = resolve_data_dir(args.data_dir)
    cfg = EvalConfig(
        model=args.model,
        task="emotion",
        langs=args.lang,
        items=args.items,
        scoring="prefix",
        data_dir=str(data),
        prompts=str(data / "prompts.json"),
    )
    if args.rescored_in:
        cfg = bench_report.folder_config(args.rescored_in)
        if cfg.scoring != "prefix":
            raise SystemExit("verify_reads: --rescored-in needs a prefix-rule evaluation")
        args.model = cfg.model  # the models time_view and time_native load
    _, pack, _ = check_config(cfg)
    tokenizer = load_tokenizer(cfg.model)
    prep = prepare_language(cfg, pack, tokenizer, args.lang)
    if args.rescored_in:
        prep = dataclasses.replace(
            prep, items=bench_report.rescored_items(args.rescored_in, cfg.task, args.lang, prep.items)
        )
    seconds, scores, overhead = time_view(args, tokenizer, prep, cfg.batch_size)
    seconds["native"], scores["native"] = time_native(args, tokenizer, prep, cfg.batch_size, overhead)
    native_s = statistics.median(seconds["native"])
    report = {
        "cpu": cpu_description(),
        "threads": args.threads,
        "model": args.model,
        "items": f"{cfg.task} {args.lang} {cfg.items} ({len(prep.items)} items, {cfg.scoring} rule)",
        "rescored_in": str(args.rescored_in) if args.rescored_in else None,
        "seconds": {k: [round(v, 3) for v in vs] for k, vs in seconds.items()},
        "median_over_native": {k: round(statistics.median(vs) / native_s, 3) for k, vs in seconds.items()},
        "equal_to_native": {k: scores[k] == scores["native"] for k in ("copied", "mapped")},
    }
    bench_report.emit(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
