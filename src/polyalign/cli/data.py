"""`polyalign data build`: the command line of question-alignment data (polyalign.alignment.alignment_data)."""

from __future__ import annotations

import argparse
from pathlib import Path

from polyalign.alignment.alignment_data import FORMATS, PairRequest, build_pairs, write_pairs
from polyalign.alignment.translation import records_translator
from polyalign.cli.args import add_data_args
from polyalign.core.errors import PolyalignError
from polyalign.core.item_range import parse_items
from polyalign.core.languages import parse_languages
from polyalign.core.paths import slug
from polyalign.core.prompts import PromptPack
from polyalign.core.tasks import load_task


def _pairs_arg(values: list[str] | None, flag: str) -> dict[str, str]:
    out = {}
    for value in values or []:
        key, sep, path = value.partition("=")
        if not sep or not key.strip() or not path.strip():
            raise PolyalignError(f"{flag} expects KEY=VALUE, got '{value}'")
        out[key.strip()] = path.strip()
    return out


def export_config(args: argparse.Namespace):
    """The training config the LLaMA-Factory settings carry (checked before any pair is built)."""
    if args.format != "llamafactory":
        return None
    if not args.model:
        raise PolyalignError("--format llamafactory needs --model: the export carries that tokenizer's BOS/EOS")
    from polyalign.alignment.train_config import load_config

    return load_config(args.train_config)


def cmd_data_build(args: argparse.Namespace) -> int:
    """`polyalign data build`: sample, render and write one alignment mixture."""
    from polyalign.engine.model_paths import cache_dir

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise PolyalignError(f"{out} exists; pass --overwrite to replace it")
    train_config = export_config(args)
    task = load_task(args.task)
    translate = None
    if args.translator:
        codes = _pairs_arg(
            args.translator_lang_codes.split(",") if args.translator_lang_codes else [], "--translator-lang-codes"
        )
        cache = (
            Path(args.translator_cache)
            if args.translator_cache
            else cache_dir() / "translations" / (slug(args.translator) + ".jsonl")
        )
        translate = records_translator(
            args.translator, task.fields, codes, cache, args.translator_batch_size, args.device, announce=True
        )
    request = PairRequest(
        task,
        parse_languages(args.sources),
        args.target,
        args.per_language,
        args.seed,
        args.data_dir,
        PromptPack.load(args.prompts),
        source_files=_pairs_arg(args.pair_file, "--pair-file"),
        target_file=args.target_file,
        translate=translate,
        items=parse_items(args.items),
    )
    pairs = build_pairs(request)
    for path in write_pairs(pairs, out, args.format, args.model, train_config):
        print(f"wrote {path}")
    if pairs and args.items is None and pairs[0].get("items"):
        print(
            f"note: these questions are {pairs[0]['task']} benchmark test items within {pairs[0]['items']}; "
            "an adapter trained on them refuses evaluation there (the leak guard)"
        )
    print(
        f"{len(pairs)} pairs: "
        + ", ".join(
            f"{lang}->{args.target} {sum(p['source_lang'] == lang for p in pairs)}"
            for lang in dict.fromkeys(p["source_lang"] for p in pairs)
        )
    )
    return 0


def add_cli(subparsers) -> None:
    """Register `polyalign data build` on the top-level subparsers."""
    data = subparsers.add_parser("data", help="build question-alignment training data")
    sub = data.add_subparsers(dest="data_command", required=True)
    p = sub.add_parser("build", help="source->target question-translation pairs (JSONL / LLaMA-Factory)")
    p.add_argument("--task", required=True, help="emotion, snli, paws, or a task .yaml file")
    p.add_argument("--sources", required=True, help="comma-separated source languages, e.g. zh,es")
    p.add_argument("--target", default="en", help="target language (default en)")
    p.add_argument("--per-language", type=int, required=True, help="pairs sampled from each source language")
    p.add_argument("--seed", type=int, default=0, help="sampling and shuffling seed")
    p.add_argument("--out", required=True, help="output .jsonl file")
    p.add_argument(
        "--format",
        choices=FORMATS,
        default="jsonl",
        help="llamafactory also writes NAME.alpaca.json, dataset_info.json and NAME.llamafactory.yaml",
    )
    p.add_argument(
        "--model",
        help="llamafactory: the model to train (alias, folder or hub id); its tokenizer's BOS/EOS go in the text",
    )
    p.add_argument(
        "--train-config",
        help="llamafactory: a `polyalign train` config YAML whose values the LLaMA-Factory settings take "
        "(default: polyalign's defaults, the paper's recipe)",
    )
    add_data_args(p)
    p.add_argument(
        "--pair-file",
        action="append",
        metavar="LANG=PATH",
        help="source-language records (JSON/JSONL with the task's fields), item-parallel with the target",
    )
    p.add_argument("--target-file", help="target-language records, item-parallel with the --pair-file files")
    p.add_argument(
        "--items",
        metavar="START:STOP",
        help="take the questions (no answers) of benchmark test items [START, STOP) in every language, "
        "paired by item, e.g. 250:500; evaluate on a disjoint range (eval --items 0:250)",
    )
    p.add_argument(
        "--translator",
        help="seq2seq model (HF id or folder, e.g. NLLB) to translate the target "
        "records into sources that have no file",
    )
    p.add_argument(
        "--translator-lang-codes",
        help="translator language codes per language, e.g. en=eng_Latn,zh=zho_Hans, or src=..,tgt=.. "
        "for the translator's input (the pairs' target) and output; NLLB codes are built in",
    )
    p.add_argument("--translator-batch-size", type=int, default=16)
    p.add_argument("--translator-cache", help="JSONL translation cache (default: under $POLYALIGN_CACHE)")
    p.add_argument("--device", help="torch device for the translator")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=cmd_data_build, out_is_file=True)
