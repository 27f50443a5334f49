"""The `polyalign` command line: thin argument parsing over the library modules."""

from __future__ import annotations

import argparse
import errno
import sys
from pathlib import Path

from polyalign import __version__
from polyalign.cli.args import DATA_DIR_HELP, add_analysis_cli, add_data_args, add_items_args, add_model_args
from polyalign.cli.dataclass_args import add_dataclass_arguments
from polyalign.core.config import from_attributes
from polyalign.core.declarations import DEFAULT_MODEL, TRAIN_PRECISIONS, short_precision
from polyalign.core.errors import PolyalignError
from polyalign.evaluation.eval_config import EvalConfig, check_config

# A full disk or quota: one line, not a traceback. Results are written atomically and logs are
# read tolerantly, so what was finished is kept and the same command resumes.
FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def cmd_eval(args: argparse.Namespace) -> int:
    from polyalign.cli.args import placement_args
    from polyalign.engine.models import load_model, pick_device, pick_dtype
    from polyalign.engine.process_device import process_device
    from polyalign.evaluation.eval_folder import check_run_dir, check_verification, clear_run_dir
    from polyalign.evaluation.evaluate import run_eval
    from polyalign.evaluation.verify import threshold_in_effect
    from polyalign.reports.report import accuracy_table

    cfg = from_attributes(EvalConfig, args)  # checked when made: scoring, limit, batch size
    check_config(cfg)  # the leak guard included: a merged model carries its adapter's provenance
    placement = placement_args(args)
    check_run_dir(Path(args.out), cfg.identity(), args.overwrite)  # before the model is loaded
    device = process_device(args.device)  # under accelerate launch: this rank's GPU, before the model loads
    dtype = str(pick_dtype(pick_device(device), args.dtype, args.model)).removeprefix("torch.")
    if check_verification(
        Path(args.out), threshold_in_effect(args.verify, args.verify_threshold, dtype), args.overwrite
    ):
        clear_run_dir(Path(args.out))  # --overwrite: run again with these settings
    model, tokenizer = load_model(args.model, args.adapter, device, args.dtype, args.trust_remote_code, placement)
    results = run_eval(cfg, model, tokenizer, Path(args.out), overwrite=args.overwrite)
    if results is not None:
        print(accuracy_table({args.model + (f" + {args.adapter}" if args.adapter else ""): results}))
        for lang, entry in results.get("unscorable", {}).items():
            print(f"{lang}: not scored: {entry['reason']}")
        print(f"results: {Path(args.out) / 'results.json'}")
        if not results.get("languages"):  # an average of nothing is not a result
            raise PolyalignError(f"no language could be scored (see the reasons above and {args.out}/results.json)")
    return 0


def cmd_prompt(args: argparse.Namespace) -> int:
    from polyalign.core.languages import get_language
    from polyalign.core.prompts import PromptPack
    from polyalign.core.tasks import load_task, load_test_records, resolve_data_dir

    task = load_task(args.task)
    get_language(args.lang)
    records = load_test_records(task, args.lang, resolve_data_dir(args.data_dir))
    if not 0 <= args.index < len(records):
        raise PolyalignError(f"--index {args.index} out of range (0..{len(records) - 1})")
    sys.stdout.write(PromptPack.load(args.prompts).render(task, args.lang, args.mode, records[args.index]))
    sys.stdout.write("\n" if args.newline else "")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from polyalign.cli.demo import run_demo

    return run_demo(Path(args.out), args.data_dir, args.model, args.quick, args.precision)


def _add_demo_cli(sub) -> None:
    p = sub.add_parser("demo", help="the main job: a small real experiment on the default model")
    p.add_argument("--out", default="runs/demo", help="run folder (default: runs/demo; a rerun resumes it)")
    p.add_argument("--data-dir", help=DATA_DIR_HELP)
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"model to align (default: {DEFAULT_MODEL})")
    p.add_argument("--quick", action="store_true", help="fewer items, for a smoke test")
    p.add_argument(
        "--precision",
        default="auto",
        type=short_precision,
        choices=list(TRAIN_PRECISIONS),
        help="training and evaluation precision (auto: bf16 where measured faster on this machine, "
        "evaluation verified in fp32; the choice and why are recorded)",
    )
    p.set_defaults(func=cmd_demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="polyalign", description=__doc__)
    parser.add_argument("-V", "--version", action="version", version=f"polyalign {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("eval", help="few-shot constrained evaluation in many languages")
    add_model_args(p)
    add_data_args(p)
    add_items_args(p)
    # the data and items options above are EvalConfig's too, shared with lens and pca
    add_dataclass_arguments(p, EvalConfig, skip=("model", "adapter", "data_dir", "prompts", "items", "allow_overlap"))
    p.add_argument("--out", required=True, help="output folder (resumes if it holds the same run)")
    p.add_argument("--overwrite", action="store_true", help="replace a folder that holds a different run")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("prompt", help="print the exact prompt of one test item")
    add_data_args(p)
    p.add_argument("--task", required=True)
    p.add_argument("--lang", required=True)
    p.add_argument("--mode", default="english")
    p.add_argument("--index", type=int, default=0)
    p.add_argument("--newline", action="store_true", help="end the output with a newline")
    p.set_defaults(func=cmd_prompt)

    _add_demo_cli(sub)

    from polyalign.cli import claims, experiments, paper_side, report
    from polyalign.cli import data as data_cli
    from polyalign.cli import run as run_cli
    from polyalign.cli import train as train_cli
    from polyalign.cli.descriptions import describe_commands

    data_cli.add_cli(sub)
    train_cli.add_cli(sub)
    add_analysis_cli(sub)
    for module in (run_cli, experiments, report, claims, paper_side):
        module.add_cli(sub)
    describe_commands(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    if (sys.argv[1:] if argv is None else argv) in (["--version"], ["-V"]):
        print(f"polyalign {__version__}")  # before build_parser, which imports torch
        return 0
    parser = build_parser()
    args = parser.parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress bars are the ones that matter
    try:
        if getattr(args, "languages_file", None):
            from polyalign.core.languages import load_languages_file

            load_languages_file(args.languages_file)
        if getattr(args, "out", None):
            from polyalign.core.paths import check_output_path

            # before any model is loaded or anything computed; out_is_file: data build and report
            check_output_path(args.out, folder=not getattr(args, "out_is_file", False))
        return args.func(args)
    except PolyalignError as exc:
        print(f"polyalign: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in FULL:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(
            f"polyalign: error: {where}{exc.strerror or exc}; free space and run the same command again",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print("polyalign: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
