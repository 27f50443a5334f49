"""Evaluation throughput: the paper's naive loop vs lm-evaluation-harness vs polyalign.

Why: polyalign claims its prefix-KV-cached, position-restricted scorer is much faster than
both the paper's original evaluation (batch 1, full forward, full-vocabulary logits at every
position) and lm-eval's HF backend, while giving the same predictions. This benchmark scores
byte-identical prompts (rendered by polyalign from the paper's pack) with all three methods
in one run, on the same items, and reports time, agreement and accuracy.

    python bench/eval_throughput.py --items 40 [--task snli] [--also-bf16] [--data-dir D] [--out FILE]
    python bench/eval_throughput.py --model DIR --device cuda --dtype bfloat16 --skip-lm-eval   # a GPU
    python bench/eval_throughput.py --langs all --items 20 --scoring prefix --bf16-verify --skip-lm-eval

--langs takes `all` (every language of the task in the paper's pack) or codes; --items is per
language. --bf16-verify adds `bf16+verify`: polyalign with bfloat16 weights and float32
re-scoring (layer-wise, from the same weights) of the items under the threshold (default auto); its
target is fp32's predictions exactly and at least 1.3x polyalign float32 in the same run.
lm-eval scores log-likelihoods only: it runs with --scoring exact.

Exits 0 whether or not the speed targets are met; non-zero only on errors.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; never wait on the network
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_report  # noqa: E402
import torch  # noqa: E402
from eval_baselines import MODE, Items, Outcome, add_prefix_rule, load_items, run_lm_eval, run_naive  # noqa: E402

from polyalign.core.errors import PolyalignError  # noqa: E402
from polyalign.core.languages import parse_languages  # noqa: E402
from polyalign.core.prompts import PromptPack  # noqa: E402
from polyalign.core.tasks import resolve_data_dir  # noqa: E402
from polyalign.engine.model_paths import resolve_model_path  # noqa: E402
from polyalign.engine.models import load_model  # noqa: E402
from polyalign.engine.precision import cpu_description, resolve_precision  # noqa: E402
from polyalign.evaluation.evaluate import EvalConfig, run_eval  # noqa: E402

MODEL = "gemma-3-270m"
TASK, LANG = "emotion", "en"
TARGETS = {"naive (paper)": 10.0, "lm-eval HFLM": 3.0}  # required speed-up of polyalign
VERIFY_TARGET = 1.3  # bf16+verify over polyalign float32, with fp32's predictions exactly


@dataclass
class Run:
    """How polyalign is run: its rule, languages and items per language, and verification."""

    data_dir: Path
    task: str
    langs: list[str]
    count: int
    scoring: str = "exact"
    model: str = MODEL
    verify: bool = False
    load_reference: Callable[[], object] | None = None


def run_polyalign(model, tokenizer, run: Run, out_dir: Path, name: str = "polyalign") -> tuple[Outcome, list[str]]:
    """polyalign's own run_eval, timed whole (it renders and tokenizes, then scores)."""
    cfg = EvalConfig(
        model=run.model,
        task=run.task,
        langs=",".join(run.langs),
        mode=MODE,
        scoring=run.scoring,
        limit=run.count,
        prompts=str(run.data_dir / "prompts.json"),
        data_dir=str(run.data_dir),
        batch_size=16,
        verify=run.verify,
    )
    start = time.perf_counter()
    with torch.inference_mode():
        results = run_eval(
            cfg, model, tokenizer, out_dir, overwrite=True, progress=False, load_reference=run.load_reference
        )
    seconds = time.perf_counter() - start
    scores, golds = [], []
    for lang in run.langs:
        rows = bench_report.sample_rows(out_dir, run.task, lang)
        if [r["index"] for r in rows] != list(range(len(rows))):
            raise PolyalignError(
                f"polyalign samples of {lang}: indices {[r['index'] for r in rows][:5]}..., not 0..{len(rows) - 1}"
            )
        scores += [r["scores"] for r in rows]
        golds += [r["gold"] for r in rows]
    outcome = Outcome(name, seconds, scores)
    outcome.verify = (results or {}).get("verify")
    return outcome, golds


def summarize(outcomes: list[Outcome], ref: Outcome, golds: list[str]) -> list[dict]:
    """Per-method row: throughput, polyalign's speed-up, agreement with polyalign, accuracy."""
    n = len(golds)
    rows = []
    for o in outcomes:
        diffs = [abs(o.scores[i][c] - ref.scores[i][c]) for i in range(n) for c in ref.scores[i]]
        rows.append(
            {
                "method": o.name,
                "items": n,
                "seconds": round(o.seconds, 3),
                "items_per_s": round(n / o.seconds, 3),
                "polyalign_speedup": round(o.seconds / ref.seconds, 2),
                "agreement": round(sum(p == q for p, q in zip(o.preds, ref.preds)) / n, 4),
                "accuracy": round(sum(p == g for p, g in zip(o.preds, golds)) / n, 4),
                "max_abs_score_diff": max(diffs),
                "disagreements": [i for i in range(n) if o.preds[i] != ref.preds[i]],
                **({"rescored": o.verify["rescored"], "threshold": o.verify["threshold"]} if o.verify else {}),
            }
        )
    return rows


def table(rows: list[dict]) -> str:
    """Markdown table of the summary rows."""
    lines = [
        "| method | items | seconds | items/s | polyalign speed-up | agreement w/ polyalign | accuracy "
        "| max abs score diff |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['items']} | {r['seconds']:.2f} | {r['items_per_s']:.2f} "
            f"| {r['polyalign_speedup']:.2f}x | {r['agreement']:.3f} | {r['accuracy']:.3f} "
            f"| {r['max_abs_score_diff']:.2e} |"
        )
    return "\n".join(lines)


def speedups(variants: list[Outcome], baselines: list[Outcome]) -> dict[str, dict[str, float]]:
    """How many times faster each polyalign variant is than each baseline (same items, same run)."""
    return {v.name: {b.name: round(b.seconds / v.seconds, 2) for b in baselines} for v in variants}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=40, help="items per language (the first N)")
    parser.add_argument("--langs", default=LANG, help="'all' (the task's languages in the pack) or codes en,zh,...")
    parser.add_argument("--scoring", default="exact", choices=["exact", "prefix"])
    parser.add_argument(
        "--task",
        default=TASK,
        choices=["emotion", "snli", "paws"],
        help="emotion is the target's task; snli shows a long shared few-shot block",
    )
    parser.add_argument(
        "--data-dir",
        default=str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "multilingual-learner"),
    )
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "eval_throughput.json"))
    parser.add_argument("--model", default=MODEL, help="alias, folder or HF id (default: the embedded gemma-3-270m)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16"],
        help="weights of every method (the targets are for float32 on CPU)",
    )
    parser.add_argument(
        "--also-bf16",
        action="store_true",
        help="add a polyalign row with bfloat16 weights (inexact: agreement is reported)",
    )
    parser.add_argument(
        "--bf16-verify",
        action="store_true",
        help="add bf16+verify: bfloat16 weights, float32 re-scoring under the default threshold (auto)",
    )
    parser.add_argument("--skip-lm-eval", action="store_true", help="where lm-eval is not installed")
    args = parser.parse_args(argv)
    if args.items < 1:
        parser.error("--items must be at least 1")
    if args.bf16_verify and args.dtype != "float32":
        parser.error("--bf16-verify compares with float32: use --dtype float32")
    return args


def bf16_variants(args, model, tokenizer, run: Run) -> list[Outcome]:
    """polyalign on the same model cast to bfloat16 (after the float32 methods), plain and verified."""
    resolve_precision("bf16", torch.device(args.device).type)  # one line where bf16 is not native
    model.to(torch.bfloat16)
    with torch.inference_mode():  # untimed warm-up of the bf16 kernels
        model(torch.tensor([tokenizer("warm up")["input_ids"]], device=model.device))
    out = []
    with tempfile.TemporaryDirectory(prefix="polyalign-bench-") as tmp:
        if args.also_bf16:
            out.append(run_polyalign(model, tokenizer, run, Path(tmp) / "bf16", "polyalign (bfloat16)")[0])
        if args.bf16_verify:
            # float32 re-scores through the layer-wise view of these weights (polyalign.engine.float32_view),
            # reading the fp32 checkpoint's own tensors: no second model is loaded
            verified = Run(run.data_dir, run.task, run.langs, run.count, run.scoring, args.model, verify=True)
            out.append(run_polyalign(model, tokenizer, verified, Path(tmp) / "verify", "bf16+verify")[0])
    return out


def verify_check(variants: list[Outcome], ref: Outcome, ratios: dict) -> dict:
    """bf16+verify's target: fp32's predictions on every item and VERIFY_TARGET x polyalign fp32."""
    found = [v for v in variants if v.name == "bf16+verify"]
    if not found:
        return {}
    v = found[0]
    same = sum(p == q for p, q in zip(v.preds, ref.preds))
    speed = ratios[v.name][ref.name]
    ok = same == len(ref.preds) and speed >= VERIFY_TARGET
    print(
        f"{'PASS' if ok else 'FAIL'}: bf16+verify gives fp32's predictions on {same}/{len(ref.preds)} items "
        f"(rescored {v.verify['rescored'] if v.verify else '?'}) at {speed:.2f}x {ref.name} "
        f"(required: all, {VERIFY_TARGET}x)"
    )
    return {
        "bf16+verify": {
            "required": {"agreement": 1.0, "speedup_vs_fp32": VERIFY_TARGET},
            "measured": {"agreement": same / len(ref.preds), "speedup_vs_fp32": speed},
            "pass": ok,
        }
    }


@dataclass
class Measured:
    """Every method's outcome on the same items, and the machine's load after each."""

    items: Items
    langs: list[str]
    ours: Outcome  # polyalign in --dtype: the reference of agreement and speed-ups
    baselines: list[Outcome]
    variants: list[Outcome]  # ours first, then the bf16 rows
    loads: dict[str, float]


def measure(args: argparse.Namespace) -> Measured:
    """Load the model once and time every method on the same items, polyalign first."""
    data_dir = resolve_data_dir(args.data_dir)
    langs = parse_languages(args.langs, PromptPack.load(data_dir / "prompts.json").languages(args.task))
    items = load_items(data_dir, args.task, langs, args.items)
    model, tokenizer = load_model(args.model, device=args.device, dtype=args.dtype)
    if args.scoring == "prefix":
        add_prefix_rule(tokenizer, items)
    with torch.inference_mode():  # untimed warm-up so no method pays torch's first-call cost
        model(torch.tensor([tokenizer(items.prompts[0])["input_ids"]], device=model.device))
    print(
        f"{len(items.prompts)} items of {args.task} in {len(langs)} languages ({MODE} labels, {args.scoring} "
        f"scoring), model {args.model} ({args.dtype}) on {model.device}, torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads, CPU {cpu_description()}",
        file=sys.stderr,
    )
    run = Run(data_dir, args.task, langs, args.items, args.scoring, args.model)
    with tempfile.TemporaryDirectory(prefix="polyalign-bench-") as tmp:
        ours, golds = run_polyalign(model, tokenizer, run, Path(tmp) / "run", f"polyalign ({args.dtype})")
    if golds != items.golds:
        raise PolyalignError("polyalign's gold labels differ from the benchmark's")
    loads = {ours.name: os.getloadavg()[0]}  # other work on this machine shows up here (timings are wall time)
    baselines, variants = [run_naive(model, tokenizer, items, args.scoring)], [ours]
    loads[baselines[0].name] = os.getloadavg()[0]
    if args.also_bf16 or args.bf16_verify:
        variants += bf16_variants(args, model, tokenizer, run)
        loads.update({v.name: os.getloadavg()[0] for v in variants[1:]})
    del model
    if not args.skip_lm_eval and args.scoring == "exact":
        baselines.append(run_lm_eval(resolve_model_path(args.model), items, args.device, args.dtype))
        loads[baselines[-1].name] = os.getloadavg()[0]
    print(f"1-min load average after each method: {loads}", file=sys.stderr)
    return Measured(items, langs, ours, baselines, variants, loads)


def target_checks(measured: Measured, ratios: dict[str, dict[str, float]]) -> dict:
    """Print and return each target's verdict: polyalign against the baselines, bf16+verify against it."""
    ours = measured.ours
    checks = {}
    for baseline, need in TARGETS.items():
        if baseline in ratios[ours.name]:
            got = ratios[ours.name][baseline]
            checks[baseline] = {"required": need, "measured": got, "pass": got >= need}
            print(f"{'PASS' if got >= need else 'FAIL'}: {ours.name} >= {need:g}x {baseline} (measured {got:.2f}x)")
    checks.update(verify_check(measured.variants, ours, ratios))
    return checks


def report(args: argparse.Namespace, measured: Measured, rows: list[dict], ratios: dict, checks: dict) -> dict:
    """The JSON the bench writes: settings, versions, summary rows, verdicts and every item's scores."""
    items = measured.items
    return {
        "task": args.task,
        "langs": measured.langs,
        "mode": MODE,
        "scoring": args.scoring,
        "model": args.model,
        "items_per_language": args.items,
        "items": len(items.prompts),
        "label_words": dict(zip(items.langs, items.words)),
        "versions": {
            "torch": torch.__version__,
            "cpu": cpu_description(),
            "transformers": version("transformers"),
            "lm_eval": None if args.skip_lm_eval else version("lm_eval"),
        },
        "model_arg": args.model,
        "device": args.device,
        "dtype": args.dtype,
        "torch_threads": torch.get_num_threads(),
        "load_avg_after": measured.loads,
        "results": rows,
        "speedups": ratios,
        "targets": checks,
        "per_item": {
            "lang": items.langs,
            "gold": items.golds,
            **{o.name: {"pred": o.preds, "scores": o.scores} for o in measured.baselines + measured.variants},
        },
    }


def main(argv: list[str] | None = None) -> int:
    """Run all methods on the same items, print the table and targets, write the JSON."""
    args = parse_args(argv)
    measured = measure(args)
    rows = summarize(measured.baselines + measured.variants, measured.ours, measured.items.golds)
    print(table(rows))
    ratios = speedups(measured.variants, measured.baselines + [measured.ours])
    for variant, against in ratios.items():
        print(f"{variant}: " + ", ".join(f"{x:.2f}x {b}" for b, x in against.items() if b != variant))
    checks = target_checks(measured, ratios)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report(args, measured, rows, ratios, checks), indent=2) + "\n")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except PolyalignError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
