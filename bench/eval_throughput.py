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
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; never wait on the network

import torch  # noqa: E402

from polyalign.core.errors import PolyalignError  # noqa: E402
from polyalign.core.languages import parse_languages  # noqa: E402
from polyalign.core.prompts import PromptPack  # noqa: E402
from polyalign.core.tasks import gold_labels, load_task, load_test_records, resolve_data_dir  # noqa: E402
from polyalign.engine.model_paths import resolve_model_path  # noqa: E402
from polyalign.engine.models import load_model  # noqa: E402
from polyalign.engine.precision import cpu_description, resolve_precision  # noqa: E402
from polyalign.engine.scoring import prefix_sets  # noqa: E402
from polyalign.evaluation.evaluate import EvalConfig, run_eval  # noqa: E402
from polyalign.evaluation.results import read_samples  # noqa: E402

MODEL = "gemma-3-270m"
TASK, LANG, MODE = "emotion", "en", "english"
TARGETS = {"naive (paper)": 10.0, "lm-eval HFLM": 3.0}  # required speed-up of polyalign
VERIFY_TARGET = 1.3  # bf16+verify over polyalign float32, with fp32's predictions exactly


@dataclass
class Items:
    """The benchmark's items (languages in order, then indices): prompts, label words, golds.

    `words[i]` maps class -> label word of item i's language. Prefix scoring adds, per item, the
    candidate token sets and the shared stem's token ids appended to the prompt (polyalign's rule).
    """

    prompts: list[str]
    words: list[dict[str, str]]
    golds: list[str]
    langs: list[str]
    token_sets: list[dict[str, list[int]]] = field(default_factory=list)
    stems: list[list[int]] = field(default_factory=list)


@dataclass
class Outcome:
    """One method's result: wall time and per-item class scores (summed label log-probs)."""

    name: str
    seconds: float
    scores: list[dict[str, float]]
    preds: list[str | None] = field(init=False)
    verify: dict | None = field(default=None, init=False)  # results.json's verify entry (bf16+verify)

    def __post_init__(self) -> None:
        self.preds = [argmax(s) for s in self.scores]


def argmax(scores: dict[str, float]) -> str | None:
    """Top class; None on an exact tie (polyalign's rule), so ties never count as agreement by luck."""
    best = max(scores.values())
    top = [c for c, v in scores.items() if v == best]
    return top[0] if len(top) == 1 else None


def load_items(data_dir: Path, langs: list[str], count: int) -> Items:
    """Render prompts with polyalign's renderer so every method reads the same bytes."""
    pack = PromptPack.load(data_dir / "prompts.json")
    task = load_task(TASK)
    items = Items([], [], [], [])
    for lang in langs:
        records = load_test_records(task, lang, data_dir)
        n = min(count, len(records))
        items.golds += gold_labels(task, lang, records, data_dir).classes[:n]
        items.prompts += [pack.render(task, lang, MODE, records[i]) for i in range(n)]
        items.words += [pack.label_words(task, lang, MODE)] * n
        items.langs += [lang] * n
    return items


def add_prefix_rule(tokenizer, items: Items) -> None:
    """The prefix rule's candidate sets and stems, per language from its first prompt (as polyalign)."""
    rule: dict[str, tuple] = {}
    for lang, prompt, words in zip(items.langs, items.prompts, items.words):
        if lang not in rule:
            stem_ids, _, sets = prefix_sets(tokenizer, tokenizer(prompt)["input_ids"], prompt, words)
            rule[lang] = (stem_ids, sets)
        items.stems.append(rule[lang][0])
        items.token_sets.append(rule[lang][1])


def label_tokens(tokenizer, prompt_ids: list[int], prompt: str, word: str) -> list[int]:
    """Label tokens as read right after the prompt (tokenize prompt+word, keep the tail)."""
    joint = tokenizer(prompt + word)["input_ids"]
    if joint[: len(prompt_ids)] == prompt_ids and len(joint) > len(prompt_ids):
        return joint[len(prompt_ids) :]
    return tokenizer(word, add_special_tokens=False)["input_ids"]


def run_naive(model, tokenizer, items: Items, scoring: str = "exact") -> Outcome:
    """The paper's loop: batch 1, a full forward per item with no KV reuse, full-vocab softmax.

    Faithful to its scripts' cost: autograd state kept, softmax over all positions.

    Prefix scoring sums the last position's probabilities over each label's candidate set. Exact:
    a single-token label is read from the last position's log-softmax; a multi-token label costs
    one more full forward of prompt+label (the naive way), summing its tokens' log-probs.
    """
    scores = []
    start = time.perf_counter()
    # As the paper's scripts do: autograd left on (no no_grad/inference_mode) and a softmax
    # over every position's full-vocabulary logits, of which only the last row is read.
    with torch.enable_grad():
        for i, prompt in enumerate(items.prompts):
            ids = tokenizer(prompt)["input_ids"] + (items.stems[i] if scoring == "prefix" else [])
            logits = model(torch.tensor([ids], device=model.device)).logits
            probs = torch.softmax(logits.float(), -1)[0, -1].detach()
            if scoring == "prefix":
                scores.append({cls: float(probs[cand].sum()) for cls, cand in items.token_sets[i].items()})
                continue
            last = probs.log()
            item = {}
            for cls, word in items.words[i].items():
                cont = label_tokens(tokenizer, ids, prompt, word)
                if len(cont) == 1:
                    item[cls] = float(last[cont[0]])
                    continue
                full = model(torch.tensor([ids + cont[:-1]], device=model.device)).logits[0].float().log_softmax(-1)
                item[cls] = float(sum(full[len(ids) - 1 + j, t] for j, t in enumerate(cont)))
            scores.append(item)
    return Outcome("naive (paper)", time.perf_counter() - start, scores)


def run_lm_eval(model_path: str, items: Items, device: str = "cpu", dtype: str = "float32") -> Outcome:
    """lm-eval's HF backend on (prompt, label word) loglikelihood requests, batch size 8.

    Loading HFLM (its own copy of the model) is excluded from the timing, as for the others.
    """
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model_path, batch_size=8, device=device, dtype=dtype)
    classes = list(items.words[0])
    requests = [
        Instance(request_type="loglikelihood", doc={}, arguments=(p, w[c]), idx=j)
        for p, w in zip(items.prompts, items.words)
        for j, c in enumerate(classes)
    ]
    with torch.inference_mode():
        lm.loglikelihood(requests[:1], disable_tqdm=True)  # warm-up, untimed (first-call overhead)
        start = time.perf_counter()
        results = lm.loglikelihood(requests, disable_tqdm=True)
        seconds = time.perf_counter() - start
    del lm
    lls = [float(ll) for ll, _greedy in results]
    scores = [dict(zip(classes, lls[i * len(classes) : (i + 1) * len(classes)])) for i in range(len(items.prompts))]
    return Outcome("lm-eval HFLM", seconds, scores)


@dataclass
class Run:
    """How polyalign is run: its rule, languages and items per language, and verification."""

    data_dir: Path
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
        task=TASK,
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
        rows = read_samples(out_dir / "samples" / f"{TASK}_{lang}.jsonl")
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
            verified = Run(run.data_dir, run.langs, run.count, run.scoring, args.model, verify=True)
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


def main(argv: list[str] | None = None) -> int:
    """Run all methods on the same items, print the table and targets, write the JSON."""
    global TASK
    args = parse_args(argv)
    TASK = args.task
    data_dir = resolve_data_dir(args.data_dir)
    pack = PromptPack.load(data_dir / "prompts.json")
    langs = parse_languages(args.langs, pack.languages(TASK))
    items = load_items(data_dir, langs, args.items)
    n = len(items.prompts)
    model, tokenizer = load_model(args.model, device=args.device, dtype=args.dtype)
    if args.scoring == "prefix":
        add_prefix_rule(tokenizer, items)
    model_path = resolve_model_path(args.model)
    with torch.inference_mode():  # untimed warm-up so no method pays torch's first-call cost
        model(torch.tensor([tokenizer(items.prompts[0])["input_ids"]], device=model.device))
    print(
        f"{n} items of {TASK} in {len(langs)} languages ({MODE} labels, {args.scoring} scoring), model "
        f"{args.model} ({args.dtype}) on {model.device}, torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads, CPU {cpu_description()}",
        file=sys.stderr,
    )

    run = Run(data_dir, langs, args.items, args.scoring, args.model)
    with tempfile.TemporaryDirectory(prefix="polyalign-bench-") as tmp:
        ours, golds = run_polyalign(model, tokenizer, run, Path(tmp) / "run", f"polyalign ({args.dtype})")
    if golds != items.golds:
        raise PolyalignError("polyalign's gold labels differ from the benchmark's")
    loads = {ours.name: os.getloadavg()[0]}  # other work on this machine shows up here (timings are wall time)
    naive = run_naive(model, tokenizer, items, args.scoring)
    loads[naive.name] = os.getloadavg()[0]
    variants, baselines = [ours], [naive]
    if args.also_bf16 or args.bf16_verify:
        variants += bf16_variants(args, model, tokenizer, run)
        loads.update({v.name: os.getloadavg()[0] for v in variants[1:]})
    del model
    if not args.skip_lm_eval and args.scoring == "exact":
        baselines.append(run_lm_eval(model_path, items, args.device, args.dtype))
        loads[baselines[-1].name] = os.getloadavg()[0]
    print(f"1-min load average after each method: {loads}", file=sys.stderr)

    rows = summarize(baselines + variants, ours, items.golds)
    print(table(rows))
    ratios = speedups(variants, baselines + [ours])
    for variant, against in ratios.items():
        print(f"{variant}: " + ", ".join(f"{x:.2f}x {b}" for b, x in against.items() if b != variant))
    checks = {}
    for b, need in TARGETS.items():
        if b in ratios[ours.name]:
            got = ratios[ours.name][b]
            checks[b] = {"required": need, "measured": got, "pass": got >= need}
            print(f"{'PASS' if got >= need else 'FAIL'}: {ours.name} >= {need:g}x {b} (measured {got:.2f}x)")
    checks.update(verify_check(variants, ours, ratios))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "task": TASK,
                "langs": langs,
                "mode": MODE,
                "scoring": args.scoring,
                "model": args.model,
                "items_per_language": args.items,
                "items": n,
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
                "load_avg_after": loads,
                "results": rows,
                "speedups": ratios,
                "targets": checks,
                "per_item": {
                    "lang": items.langs,
                    "gold": items.golds,
                    **{o.name: {"pred": o.preds, "scores": o.scores} for o in baselines + variants},
                },
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except PolyalignError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
