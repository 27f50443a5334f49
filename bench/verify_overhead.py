"""The float32 view's batch overhead: one verified run's re-scored items, re-scored at several overheads.

Why: plan_batches trades padding against forwards by `overhead`, what one more forward costs in
tokens. The view computes in float32 from bf16 weights, so neither the float32 model's value (32)
nor the bf16 model's (512 on a native-bf16 CPU) is its own. This takes the items a verified run
re-scored (its samples' rows marked `fast`, every language, in its order), re-scores them through
the view at each overhead, alternated round by round (the first round a warm-up, not counted), and
prints the median seconds per overhead and the batches each plans. Every overhead must give the
run's float32 predictions.

    polyalign eval ... --dtype bfloat16 --out RUN        # verified (the default)
    OMP_NUM_THREADS=2 python bench/verify_overhead.py RUN [--overheads 32,128,512] [--rounds 4]
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_report  # noqa: E402


def predictions(run: Path, task: str, lang: str) -> dict[int, str]:
    """The run's predictions of the items it re-scored: float32's."""
    return {row["index"]: row["pred"] for row in bench_report.sample_rows(run, task, lang) if "fast" in row}


def plan_count(items: list, shared: int, rule: str, batch_size: int, overhead: int) -> int:
    """Batches plan_batches cuts `items` into."""
    from polyalign.engine.scoring import plan_batches, score_rows

    lengths = sorted((len(r[2]) for r in score_rows(items, shared, rule)), reverse=True)
    return len(plan_batches(lengths, batch_size, overhead, None, shared))


def main(argv: list[str] | None = None) -> int:
    p = bench_report.parser(__doc__.splitlines()[0], rounds=4)
    p.add_argument("run", type=Path, help="a finished verified bf16 evaluation folder (emotion)")
    p.add_argument("--overheads", default="32,128,512")
    args = bench_report.parse(p, argv)

    from polyalign.engine.float32_view import Float32View
    from polyalign.engine.models import load_model
    from polyalign.engine.precision import cpu_description
    from polyalign.engine.scoring import Scorer
    from polyalign.evaluation.eval_config import check_config
    from polyalign.evaluation.evaluate import prepare_language, sample_row
    from polyalign.evaluation.verify import reference_checkpoint

    cfg = bench_report.folder_config(args.run)
    _, pack, langs = check_config(cfg)
    model, tokenizer = load_model(cfg.model, dtype="bfloat16")
    prepared = {lang: prepare_language(cfg, pack, tokenizer, lang) for lang in langs}
    items = {lang: bench_report.rescored_items(args.run, cfg.task, lang, prepared[lang].items) for lang in langs}
    view = Float32View(model, reference_checkpoint(cfg.model, model))
    scorers = {lang: Scorer(model, tokenizer) for lang in langs}  # each keeps its language's prefix cache
    overheads = [int(v) for v in args.overheads.split(",")]
    seconds: dict[int, list[float]] = {o: [] for o in overheads}
    equal = dict.fromkeys(overheads, True)
    for round_ in range(args.rounds):
        for overhead in overheads if round_ % 2 == 0 else overheads[::-1]:
            start = time.perf_counter()
            for lang in langs:
                prep, scorer = prepared[lang], scorers[lang]
                scorer.batch_overhead = overhead
                with view:
                    got = scorer.score(items[lang], prep.shared, cfg.scoring, prep.token_sets, cfg.batch_size)
                ours = {i: sample_row(i, "", scores)["pred"] for i, scores in got.items()}
                equal[overhead] = equal[overhead] and ours == predictions(args.run, cfg.task, lang)
            if round_ > 0:
                seconds[overhead].append(time.perf_counter() - start)
    batches = {
        o: sum(plan_count(items[lang], prepared[lang].shared, cfg.scoring, cfg.batch_size, o) for lang in langs)
        for o in overheads
    }
    report = {
        "cpu": cpu_description(),
        "threads": args.threads,
        "run": str(args.run),
        "items": {lang: len(v) for lang, v in items.items()},
        "seconds": {o: [round(s, 2) for s in v] for o, v in seconds.items()},
        "median_seconds": {o: round(statistics.median(v), 2) for o, v in seconds.items() if v},
        "batches": batches,
        "predictions_equal_to_the_run": equal,
    }
    bench_report.emit(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
