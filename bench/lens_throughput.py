"""Logit lens vs evaluation on the same items: what reading every layer costs over scoring.

Why: `polyalign lens` runs the forward an evaluation runs (shared few-shot cache, planned
batches) and adds one unembedding per item and layer; its target is at most 1.3x an
evaluation of the same items with the rule that reads the same position (`--scoring prefix`).
Both run in one process on one loaded model, each timed whole (preparing items, the forwards,
writing files; the lens also draws its figure), after an untimed warm-up of both on 3 items.
Wall and CPU seconds are both reported: on a machine shared with other jobs, CPU time with one
thread (`OMP_NUM_THREADS=1`) is the steadier measure (with more threads than free cores, threads
that wait for a descheduled peer spin, and that spinning counts as CPU time).

    OMP_NUM_THREADS=1 python bench/lens_throughput.py    # emotion en,zh,de x 100 items, native labels
    python bench/lens_throughput.py --limit 30 --repeats 1

Exits 0 whether or not the target is met; non-zero only on errors.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; never wait on the network

import torch  # noqa: E402

from polyalign.analysis.analysis_spec import LensSpec  # noqa: E402
from polyalign.analysis.lens import run_lens  # noqa: E402
from polyalign.core.errors import PolyalignError  # noqa: E402
from polyalign.core.tasks import resolve_data_dir  # noqa: E402
from polyalign.engine.models import load_model  # noqa: E402
from polyalign.engine.precision import cpu_description  # noqa: E402
from polyalign.evaluation.evaluate import EvalConfig, run_eval  # noqa: E402

TARGET = 1.3  # lens time over evaluation time, same items, same run


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m", help="alias, folder or HF id")
    parser.add_argument("--task", default="emotion")
    parser.add_argument("--langs", default="en,zh,de")
    parser.add_argument("--mode", default="native", help="prompt label words: english, native or agnostic")
    parser.add_argument("--limit", type=int, default=100, help="first N items per language (at least 3)")
    parser.add_argument("--batch-size", type=int, default=16, help="both commands' default")
    parser.add_argument("--lens-batch-size", type=int, default=None, help="the lens's, if not --batch-size")
    parser.add_argument("--repeats", type=int, default=2, help="eval then lens, this many times")
    parser.add_argument(
        "--data-dir",
        default=str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "multilingual-learner"),
    )
    parser.add_argument("--prompts", default=None, help="prompt pack (default: the paper's, DATA_DIR/prompts.json)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "lens_throughput.json"))
    args = parser.parse_args(argv)
    if args.limit < 3 or args.repeats < 1:
        parser.error("--limit must be at least 3 and --repeats at least 1")
    return args


def timed(run) -> tuple[float, float]:
    """(wall, CPU) seconds of `run()`."""
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - wall, time.process_time() - cpu


def timed_eval(args, model, tokenizer, limit: int, out: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of one whole `run_eval` with prefix scoring (the lens's answer position)."""
    cfg = EvalConfig(
        model=args.model,
        task=args.task,
        langs=args.langs,
        mode=args.mode,
        scoring="prefix",
        limit=limit,
        data_dir=args.data_dir,
        prompts=args.prompts,
        batch_size=args.batch_size,
        verify=False,
    )
    return timed(lambda: run_eval(cfg, model, tokenizer, out, overwrite=True, progress=False))


def timed_lens(args, model, tokenizer, limit: int, out: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of one whole `run_lens` (every layer, files and figure)."""
    return timed(
        lambda: run_lens(
            model,
            tokenizer,
            LensSpec(args.task, args.langs.split(","), args.mode, limit),
            out,
            args.data_dir,
            args.prompts,
            batch_size=args.lens_batch_size or args.batch_size,
        )
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.data_dir = str(resolve_data_dir(args.data_dir))
    args.prompts = args.prompts or str(Path(args.data_dir) / "prompts.json")
    model, tokenizer = load_model(args.model, device=args.device, dtype=args.dtype)
    cpu = cpu_description()
    print(
        f"{args.task} {args.langs} x {args.limit} items ({args.mode} labels), model {args.model} ({args.dtype}) "
        f"on {args.device}, torch {torch.__version__} with {torch.get_num_threads()} threads, CPU {cpu}",
        file=sys.stderr,
    )
    runs = []
    with tempfile.TemporaryDirectory(prefix="polyalign-bench-") as tmp:
        timed_eval(args, model, tokenizer, 3, Path(tmp) / "warm-eval")  # untimed: first calls, imports
        timed_lens(args, model, tokenizer, 3, Path(tmp) / "warm-lens")
        for k in range(args.repeats):
            eval_s, eval_cpu = timed_eval(args, model, tokenizer, args.limit, Path(tmp) / f"eval{k}")
            eval_load = os.getloadavg()[0]
            lens_s, lens_cpu = timed_lens(args, model, tokenizer, args.limit, Path(tmp) / f"lens{k}")
            runs.append(
                {"eval_s": round(eval_s, 2), "lens_s": round(lens_s, 2), "ratio": round(lens_s / eval_s, 3)}
                | {"eval_cpu_s": round(eval_cpu, 2), "lens_cpu_s": round(lens_cpu, 2)}
                | {"cpu_ratio": round(lens_cpu / eval_cpu, 3)}
                | {"load_after_eval": eval_load, "load_after_lens": os.getloadavg()[0]}
            )
            print(f"repeat {k + 1}: {runs[-1]}", file=sys.stderr)
    ratio = sum(r["lens_s"] for r in runs) / sum(r["eval_s"] for r in runs)
    cpu_ratio = sum(r["lens_cpu_s"] for r in runs) / sum(r["eval_cpu_s"] for r in runs)
    ok = ratio <= TARGET
    print(f"CPU: {cpu}, {torch.get_num_threads()} thread(s)")
    print(
        f"{'PASS' if ok else 'FAIL'}: lens / eval = {ratio:.2f}x wall ({cpu_ratio:.2f}x CPU time) over "
        f"{len(runs)} repeat(s) (target <= {TARGET}x)"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {**vars(args), "cpu": cpu, "torch": torch.__version__, "threads": torch.get_num_threads()}
    record |= {"runs": runs, "ratio": round(ratio, 3), "cpu_ratio": round(cpu_ratio, 3), "target": TARGET, "pass": ok}
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except PolyalignError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
