"""What a verified run's float32 re-scoring costs: its share of the items, of the tokens, of fp32's time.

Why: results.json states the share of items a verified bf16 run re-scored, but re-scoring costs
what float32 costs per token, and the near ties need not be average items (on gemma-3-270m's
emotion prompts, the Russian and Hindi near ties were the longest texts). This reads a verified
evaluation and a float32 evaluation of the same items, tokenizes the items as the run did (no model
is loaded), and prints per language the items and the scored tokens re-scored, then:

- `cost_over_token_share`: re-scoring seconds over (share of tokens x fp32's scoring seconds): what a
  re-scored token costs against one of the float32 run's (the layer-wise view, and each round's own
  prefix cache and output-head pass, put it above 1);
- the scoring speed-up the verified run reached over fp32, and the one bf16 alone reached;
- `rescoring_allowed_for`: how many re-scoring seconds a target speed-up (--target, 2 by default)
  leaves at this bf16 speed (negative: no re-scoring at all reaches it).

Scoring seconds are results.json's `timing.seconds` (model load excluded); a verified run's include
its re-scoring (`verify.seconds`).

    polyalign eval ... --dtype bfloat16 --out VERIFIED_DIR ; polyalign eval ... --dtype float32 --out FP32_DIR
    python bench/rescoring_cost.py VERIFIED_DIR FP32_DIR [--target 2] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_report  # noqa: E402


def scored_tokens(cfg, lang: str, tokenizer) -> dict[int, int]:
    """Item index -> tokens the scorer computes for it after the shared prefix, as the run built them
    (a verified run's results.json states the totals since 2026-12-06; older folders do not)."""
    from polyalign.engine.scoring import scored_tokens as count
    from polyalign.evaluation.eval_config import check_config
    from polyalign.evaluation.evaluate import prepare_language

    _, pack, _ = check_config(cfg)
    prep = prepare_language(cfg, pack, tokenizer, lang)
    return count(prep.items, prep.shared, cfg.scoring)


def language_cost(rows: list[dict], rule: str, tokens: dict[int, int]) -> dict:
    """A language's items, and the items and scored tokens re-scored, as results.json counts them."""
    from polyalign.evaluation.verify import language_stats

    stats = language_stats(rows, rule, tokens)
    return {"items": len(rows), **{k: stats[k] for k in ("rescored", "tokens", "rescored_tokens")}}


def summarize(per: dict[str, dict], verified: dict, fp32: dict, target: float) -> dict:
    """Totals, the cost of a re-scored token against fp32's, and the speed-ups (see the docstring)."""
    items, tokens = sum(v["items"] for v in per.values()), sum(v["tokens"] for v in per.values())
    rescored_tokens = sum(v["rescored_tokens"] for v in per.values())
    rescoring_s, verified_s = verified["verify"]["seconds"], verified["timing"]["seconds"]
    fp32_s, bf16_s = fp32["timing"]["seconds"], verified_s - rescoring_s
    token_share = rescored_tokens / tokens
    return {
        "items": items,
        "rescored": verified["verify"]["rescored"],
        "item_share": round(verified["verify"]["rescored"] / items, 4),
        "token_share": round(token_share, 4),
        "rescoring_s": rescoring_s,
        "fp32_scoring_s": fp32_s,
        "bf16_scoring_s": round(bf16_s, 3),
        "cost_over_token_share": round(rescoring_s / (token_share * fp32_s), 3),
        "verified_scoring_speedup": round(fp32_s / verified_s, 3),
        "bf16_scoring_speedup": round(fp32_s / bf16_s, 3),
        "target": target,
        "rescoring_allowed_for": round(fp32_s / target - bf16_s, 3),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("verified", type=Path, help="a verified bf16 eval folder")
    p.add_argument("fp32", type=Path, help="a float32 eval folder of the same items")
    p.add_argument("--target", type=float, default=2.0, help="scoring speed-up over fp32 to budget for")
    p.add_argument("--out", help="JSON file for the figures")
    args = p.parse_args(argv)
    from polyalign.engine.models import load_tokenizer

    cfg, fp32_cfg = bench_report.folder_config(args.verified), bench_report.folder_config(args.fp32)
    verified, fp32 = (json.loads((folder / "results.json").read_text()) for folder in (args.verified, args.fp32))
    if cfg != fp32_cfg or verified.get("prompts_sha256") != fp32.get("prompts_sha256") or not verified.get("verify"):
        raise SystemExit("rescoring_cost: needs a verified bf16 folder and an fp32 folder of the same items")
    tokenizer = load_tokenizer(cfg.model)
    per = {}
    for lang in cfg.langs.split(","):
        tokens = scored_tokens(cfg, lang, tokenizer)
        per[lang] = language_cost(bench_report.sample_rows(args.verified, cfg.task, lang), cfg.scoring, tokens)
    report = {"per_language": per, "total": summarize(per, verified, fp32, args.target)}
    bench_report.emit(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
