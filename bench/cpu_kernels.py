"""bf16 scoring with and without the fused CPU kernels (polyalign.engine.cpu_kernels), beside fp32, in one process.

Why one process: on a shared 2-core machine two whole-process runs of the same variant differ by
up to 1.3x, more than the kernels gain, so this loads the model once per dtype and alternates the
variants round by round: fp32, bf16 eager, bf16 with the kernels (the default). It reports scoring
items/s per round and their medians, the ratios to fp32, and each bf16 variant's agreement with fp32
(predictions equal; the per-item shift of the top-two margin, polyalign.evaluation.verify_plan's
score_shift: mean, p99, max), which is what sets a verified run's threshold.

    python bench/cpu_kernels.py [--model gemma-3-270m] [--langs en,zh,es,ru,hi] [--items 80:200]
        [--rounds 2] [--threads 2] [--out FILE.json]

Not verified (--no-verify): this measures the scoring itself. Exits 0 whatever it finds.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import bench_report  # noqa: E402

from polyalign.core.tasks import resolve_data_dir  # noqa: E402
from polyalign.engine import cpu_kernels  # noqa: E402
from polyalign.engine.models import load_model  # noqa: E402
from polyalign.engine.precision import cpu_description  # noqa: E402
from polyalign.evaluation.evaluate import EvalConfig, run_eval  # noqa: E402
from polyalign.evaluation.verify_plan import score_shift  # noqa: E402

ELIGIBLE = cpu_kernels.eligible


def score(cfg: EvalConfig, net, tokenizer, out: Path, kernels: bool) -> tuple[float, dict]:
    """(scoring items/s, rows by (language, index)) of one run, with the kernels on or off."""
    cpu_kernels.eligible = ELIGIBLE if kernels else (lambda x: False)
    shutil.rmtree(out, ignore_errors=True)
    run_eval(cfg, net, tokenizer, out, progress=False)
    rows = {}
    for lang in cfg.langs.split(","):
        for line in (out / "samples" / f"emotion_{lang}.jsonl").read_text().splitlines():
            row = json.loads(line)
            rows[(lang, row["index"])] = row
    return json.loads((out / "results.json").read_text())["timing"]["items_per_second"], rows


def agreement(rows: dict, reference: dict, rule: str) -> dict:
    shifts = sorted(score_shift(rows[k]["scores"], reference[k]["scores"], rule) for k in reference)
    return {
        "equal_to_fp32": sum(rows[k]["pred"] == reference[k]["pred"] for k in reference),
        "items": len(reference),
        "shift_mean": round(statistics.fmean(shifts), 4),
        "shift_p99": round(shifts[int(0.99 * (len(shifts) - 1))], 4),
        "shift_max": round(shifts[-1], 4),
    }


def main(argv: list[str] | None = None) -> int:
    p = bench_report.parser(__doc__.splitlines()[0], rounds=2)
    p.add_argument("--langs", default="en,zh,es,ru,hi")
    p.add_argument("--items", default="80:200")
    p.add_argument("--data-dir")
    args = bench_report.parse(p, argv)
    data = resolve_data_dir(args.data_dir)
    cfg = EvalConfig(
        model=args.model, task="emotion", langs=args.langs, mode="english", scoring="prefix", items=args.items,
        data_dir=str(data), prompts=str(data / "prompts.json"), verify=False,
    )  # fmt: skip
    full, tokenizer = load_model(args.model, dtype="float32")
    fast, _ = load_model(args.model, dtype="bfloat16")
    variants = {"fp32": (full, False), "bf16 eager": (fast, False), "bf16 kernels": (fast, True)}
    speeds: dict[str, list[float]] = {name: [] for name in variants}
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for name, (net, kernels) in variants.items():
                speed, rows[name] = score(cfg, net, tokenizer, Path(tmp) / "run", kernels)
                speeds[name].append(speed)
                print(f"{name}: {speed:.2f} items/s", flush=True)
    median = {name: statistics.median(s) for name, s in speeds.items()}
    report = {
        "cpu": cpu_description(),
        "threads": args.threads,
        "workload": f"{args.model}, emotion {args.langs} x {args.items}, prefix rule, paper prompts",
        "kernels": cpu_kernels.in_use(fast),
        "items_per_second": speeds,
        "median_vs_fp32": {name: round(m / median["fp32"], 2) for name, m in median.items()},
        "agreement": {name: agreement(rows[name], rows["fp32"], "prefix") for name in variants if name != "fp32"},
    }
    bench_report.emit(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
