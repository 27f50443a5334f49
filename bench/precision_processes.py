"""fp32, bf16 and verified bf16 evaluation side by side, each a whole `polyalign eval` process.

Why whole processes: what verification costs is not only the re-scored items but everything it
loads (it used to load a second, float32 model), so each variant runs as its own process and is
measured from start to exit: wall time (model load included), peak RSS (os.wait4's ru_maxrss of
that process alone), scoring items/s (results.json's timing), predictions equal to fp32's, share
of items re-scored and the seconds re-scoring took (results.json verify.seconds), and the threshold
in effect with its measured guarantee. Beside them, before and after the runs, bf16's speed-up over
fp32 on one matmul of the model's MLP shape: it bounds what bf16 scoring can gain, and on a shared
machine it drifts (3.2x to 7.1x on one AMX Xeon).

    python bench/precision_processes.py [--model gemma-3-270m] [--langs en,zh,es,ru,hi] [--items 80:200]
        [--scoring prefix] [--variants fp32,bf16,bf16-verified] [--rounds 1] [--threads 2] [--out FILE]

Variants not run by default, each patched in before polyalign's CLI:
- `bf16-verified-before`: verified bf16 with the calibration sample used until 2026-12-06, the first 8
  and 2 items by index (polyalign.evaluation.verify_plan): `--variants bf16-verified,bf16-verified-before`
  compares the two;
- `bf16-two-matmul-attention` and `bf16-verified-two-matmul-attention`: bf16 attention as two bf16
  matmuls (`use_two_matmul_attention`), unverified and verified: faster attention, larger shifts.

The defaults are the issue's workload (emotion, paper prompts, prefix rule, 600 items). Runs are
one after another; on a shared machine the ratios of one round are what can be compared. With
--rounds N the variants run N times, each round starting one variant later, and the medians of the
per-round ratios to fp32 are printed beside each round's table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench_report
import torch

from polyalign.core.tasks import resolve_data_dir
from polyalign.engine.precision import cpu_description
from polyalign.engine.precision_calibration import OUT, ROWS, WIDTH, time_matmul

VARIANTS = {
    "fp32": ["--dtype", "float32"],
    "bf16": ["--dtype", "bfloat16", "--no-verify"],
    "bf16-verified": ["--dtype", "bfloat16"],  # the default: verified, threshold auto
    "bf16-verified-before": ["--dtype", "bfloat16"],  # verified with the calibration sample before 2026-12-06
    "bf16-two-matmul-attention": ["--dtype", "bfloat16", "--no-verify"],
    "bf16-verified-two-matmul-attention": ["--dtype", "bfloat16"],
}


def patched(call: str) -> str:
    """A child's code: `call` (a function of this folder's modules) patches polyalign, then its CLI."""
    return f"""
import sys
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
import precision_processes, verify_rounds
{call}
from polyalign.cli.commands import main
sys.exit(main(sys.argv[1:]))
"""


# Variants run through a patch of polyalign before its CLI (each in its own process).
PATCHES = {
    "bf16-verified-before": patched("verify_rounds.use_sample_before()"),
    "bf16-two-matmul-attention": patched("precision_processes.use_two_matmul_attention()"),
    "bf16-verified-two-matmul-attention": patched("precision_processes.use_two_matmul_attention()"),
}


def use_two_matmul_attention() -> None:
    """Patch bf16 CPU attention (polyalign.engine.cpu_attention) to two bf16 matmuls around a float32
    softmax: the attention scores are rounded to bf16 before it, which torch's flash kernel does not
    do. A rejected alternative, kept measurable (docs/benchmarks.md)."""
    import torch

    from polyalign.engine import cpu_attention

    original = cpu_attention.attention

    def attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **options):
        groups = getattr(module, "num_key_value_groups", 1)
        if query.dtype != torch.bfloat16 or attention_mask is None or not cpu_attention.applies(query, groups, options):
            return original(module, query, key, value, attention_mask, dropout, scaling, is_causal, **options)
        batch, heads, queries, width = query.shape
        kv, keys = key.shape[1], key.shape[2]
        grouped = query.reshape(batch, kv, groups * queries, width)  # the query heads of one key head
        scores = torch.matmul(grouped, key.transpose(2, 3)).float().mul_(scaling or width**-0.5)
        scores = scores.view(batch, kv, groups, queries, keys).masked_fill_(~attention_mask[:, :, None], -torch.inf)
        weights = torch.softmax(scores, -1).to(query.dtype).view(batch, kv, groups * queries, keys)
        out = torch.matmul(weights, value).view(batch, heads, queries, width)
        return out.transpose(1, 2).contiguous(), None

    cpu_attention.attention = attention


def eval_command(args: argparse.Namespace, runner: list[str], out: Path, options: list[str]) -> list[str]:
    """`polyalign eval` of the issue's workload (emotion, english labels; model, langs, items, scoring
    and data from `args`) into `out`, started as `python *runner` (["-m", "polyalign"], or ["-c",
    CODE, ...] for a child that patches polyalign before its CLI), with `options` last."""
    data = resolve_data_dir(args.data_dir)
    command = [sys.executable, *runner, "eval", "--model", args.model, "--task", "emotion"]
    command += ["--langs", args.langs, "--items", args.items, "--scoring", args.scoring, "--mode", "english"]
    command += ["--data-dir", str(data), "--prompts", str(data / "prompts.json"), "--out", str(out)]
    return command + ["--overwrite", *options]


def eval_env(args: argparse.Namespace) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1"}


def run_process(args: argparse.Namespace, variant: str, out: Path) -> dict:
    """One `polyalign eval` process: wall seconds, peak RSS and its results.json."""
    runner = ["-c", PATCHES[variant]] if variant in PATCHES else ["-m", "polyalign"]
    command, env = eval_command(args, runner, out, VARIANTS[variant]), eval_env(args)
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"{variant}: polyalign eval failed:\n{process.stderr.read() if process.stderr else ''}")
    results = json.loads((out / "results.json").read_text())
    return {"seconds": seconds, "peak_rss_gb": usage.ru_maxrss / 1024**2, "results": results, "out": out}


def predictions(out: Path, langs: list[str]) -> list[str]:
    return [row["pred"] for lang in langs for row in bench_report.sample_rows(out, "emotion", lang)]


def summarize(runs: dict[str, dict], langs: list[str]) -> list[dict]:
    reference = predictions(runs["fp32"]["out"], langs) if "fp32" in runs else None
    rows = []
    for name, run in runs.items():
        results, verify = run["results"], run["results"].get("verify")
        preds = predictions(run["out"], langs)
        row = {
            "variant": name,
            "items_per_second": results["timing"]["items_per_second"],
            "whole_process_s": round(run["seconds"], 1),
            "peak_rss_gb": round(run["peak_rss_gb"], 3),
            "equal_to_fp32": f"{sum(p == q for p, q in zip(preds, reference))}/{len(preds)}" if reference else "-",
            "rescored": f"{verify['rescored']}/{verify['items']}" if verify else "-",
            "rescoring_s": verify.get("seconds") if verify else None,
            "threshold": verify["threshold"] if verify else None,
            "max_shift": verify.get("max_shift") if verify else None,
            "kept_margin_over_max_shift": verify.get("kept_margin_over_max_shift") if verify else None,
            "reference": (verify.get("reference") or {}).get("method") if verify else None,
        }
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    head = "| variant | items/s (scoring) | whole process | peak RSS | equal to fp32 | re-scored | re-scoring |"
    lines = [head, "|---" * 7 + "|"]
    for r in rows:
        seconds = "-" if r["rescoring_s"] is None else f"{r['rescoring_s']} s"
        lines.append(
            f"| {r['variant']} | {r['items_per_second']} | {r['whole_process_s']} s | {r['peak_rss_gb']:.2f} GB "
            f"| {r['equal_to_fp32']} | {r['rescored']} | {seconds} |"
        )
    return "\n".join(lines)


def medians(rounds: list[list[dict]]) -> list[dict]:
    """Per variant: median items/s and whole seconds, and the medians of each round's ratios to fp32."""
    summary = []
    fp32 = [next((r for r in rows if r["variant"] == "fp32"), None) for rows in rounds]
    for variant in [r["variant"] for r in rounds[0]]:
        mine = [next(r for r in rows if r["variant"] == variant) for rows in rounds]
        row = {
            "variant": variant,
            "items_per_second": statistics.median(r["items_per_second"] for r in mine),
            "whole_process_s": statistics.median(r["whole_process_s"] for r in mine),
        }
        if all(fp32):
            row["items_per_second_vs_fp32"] = round(
                statistics.median(r["items_per_second"] / f["items_per_second"] for r, f in zip(mine, fp32)), 2
            )
            row["whole_process_speedup"] = round(
                statistics.median(f["whole_process_s"] / r["whole_process_s"] for r, f in zip(mine, fp32)), 2
            )
        summary.append(row)
    return summary


def matmul_speedup() -> float:
    """bf16 over fp32 on one Linear of a 270M model's MLP shape, now, on the bench's threads (set by
    bench_report.parse): about the most bf16 scoring can gain, since the rest of a forward gains less
    than its matmuls."""
    return round(time_matmul(torch.float32, repeats=20) / time_matmul(torch.bfloat16, repeats=20), 2)


def main(argv: list[str] | None = None) -> int:
    p = bench_report.parser(__doc__.splitlines()[0], rounds=1)
    p.add_argument("--langs", default="en,zh,es,ru,hi")
    p.add_argument("--items", default="80:200")
    p.add_argument("--scoring", default="prefix")
    p.add_argument("--variants", default="fp32,bf16,bf16-verified")
    p.add_argument("--data-dir")
    args = bench_report.parse(p, argv)
    langs = args.langs.split(",")
    print(f"CPU: {cpu_description()}; {args.threads} threads; {args.model}, emotion {args.langs} x {args.items}")
    ceiling = [matmul_speedup()]  # the machine drifts: measured before and after each round
    variants, rounds = args.variants.split(","), []
    for number in range(args.rounds):
        order = variants[number % len(variants) :] + variants[: number % len(variants)]
        with tempfile.TemporaryDirectory(prefix="polyalign-precision-") as tmp:
            runs = {v: run_process(args, v, Path(tmp) / v) for v in order}
            rounds.append(summarize({v: runs[v] for v in variants}, langs))
        ceiling.append(matmul_speedup())
        print_round(number, rounds[-1], ceiling[-2:])
    summary = medians(rounds) if args.rounds > 1 else None
    if summary:
        print(json.dumps(summary, indent=1))
    if args.out:
        report = {"cpu": cpu_description(), "matmul_bf16_speedup": ceiling, "rounds": rounds, "medians": summary}
        Path(args.out).write_text(json.dumps(report, indent=2, default=str))
    return 0


def print_round(number: int, rows: list[dict], ceiling: list[float]) -> None:
    print(f"round {number + 1}:")
    print(table(rows))
    shape = f"Linear {ROWS}x{WIDTH} -> {OUT}"
    print(f"bf16 matmul speed-up over fp32 ({shape}), before / after: {ceiling[0]} / {ceiling[1]}")
    for r in rows:
        if r["threshold"] is not None:
            print(
                f"{r['variant']}: threshold {r['threshold']}, largest measured shift {r['max_shift']:.4f}, "
                f"smallest kept margin / largest shift {r['kept_margin_over_max_shift']:.2f}, via {r['reference']}"
            )


if __name__ == "__main__":
    sys.exit(main())
