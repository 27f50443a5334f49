"""bf16 scoring at several batch overheads, each a whole `polyalign eval` process, rotated round by round.

Why: plan_batches' `overhead` (polyalign.engine.scoring.batch_overhead) is what one more forward
costs, in tokens. For bf16 weights on a native-bf16 CPU it is 512, measured on an AMX Xeon, where a
bf16 forward pays more per forward (oneDNN builds kernels for each new shape) and little per token.
On a CPU whose bf16 matmuls gain less, the padding that fewer, longer batches bring costs more. A
whole process is measured because the per-shape cost is paid once per process. Each process gets
the overhead patched in before the scorer is built; every overhead must give the same predictions
as the others up to bf16's batch-dependent rounding, and the bench prints how many differ from the
first overhead's.

    OMP_NUM_THREADS=2 python bench/bf16_batch_overhead.py [--overheads 32,128,512] [--rounds 3]
        [--langs en,zh,es,ru,hi] [--items 80:200]
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_report  # noqa: E402
import precision_processes  # noqa: E402

# Run in the child: patch the bf16 overhead, then polyalign's own CLI.
CHILD = """
import sys, torch
from polyalign.engine import scoring
fixed, default = int(sys.argv[1]), scoring.batch_overhead
scoring.batch_overhead = lambda device, dtype: fixed if dtype == torch.bfloat16 else default(device, dtype)
from polyalign.cli.commands import main
sys.exit(main(sys.argv[2:]))
"""


def run_process(args, overhead: int, out: Path) -> dict:
    """One bf16 `polyalign eval --no-verify` process at `overhead`: its scoring timing and predictions."""
    options = ["--dtype", "bfloat16", "--no-verify"]
    command = precision_processes.eval_command(args, ["-c", CHILD, str(overhead)], out, options)
    done = subprocess.run(
        command, env=precision_processes.eval_env(args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"overhead {overhead}: polyalign eval failed:\n{done.stderr[-2000:]}")
    timing = json.loads((out / "results.json").read_text())["timing"]
    preds = precision_processes.predictions(out, args.langs.split(","))
    return {"items_per_second": timing["items_per_second"], "seconds": timing["seconds"], "preds": preds}


def main(argv: list[str] | None = None) -> int:
    p = bench_report.parser(__doc__.splitlines()[0], rounds=3)
    p.add_argument("--overheads", default="32,128,512")
    p.add_argument("--langs", default="en,zh,es,ru,hi")
    p.add_argument("--items", default="80:200")
    p.add_argument("--data-dir")
    p.set_defaults(scoring="prefix")  # the rule, as precision_processes.eval_command reads it
    args = bench_report.parse(p, argv)
    from polyalign.engine.precision import cpu_description

    overheads = [int(x) for x in args.overheads.split(",")]
    rates: dict[int, list[float]] = {o: [] for o in overheads}
    differing: dict[int, int] = {}
    first: list[str] | None = None
    for number in range(args.rounds):
        order = overheads[number % len(overheads) :] + overheads[: number % len(overheads)]
        for overhead in order:
            with tempfile.TemporaryDirectory(prefix="polyalign-overhead-") as tmp:
                got = run_process(args, overhead, Path(tmp) / "eval")
            rates[overhead].append(got["items_per_second"])
            first = first if first is not None else got["preds"]
            differing[overhead] = max(differing.get(overhead, 0), sum(a != b for a, b in zip(got["preds"], first)))
            print(f"round {number + 1}: overhead {overhead}: {got['items_per_second']} items/s", flush=True)
    report = {
        "cpu": cpu_description(),
        "threads": args.threads,
        "workload": f"{args.model}, emotion {args.langs} x {args.items}, prefix, bf16 --no-verify",
        "items_per_second": rates,
        "median": {o: statistics.median(v) for o, v in rates.items()},
        "predictions_differing_from_first_run": differing,
    }
    bench_report.emit(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
