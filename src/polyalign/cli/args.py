"""Command-line arguments shared by several commands, and the `lens` and `pca` commands.

Why a module of its own: the options of `eval`, `lens` and `pca` are declared once, and
building the parser (`polyalign --help`) imports no torch: the engines (polyalign.analysis.lens,
polyalign.analysis.pca, polyalign.engine.models) are imported only when a command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from polyalign.analysis.analysis_spec import LensSpec, PcaSpec
from polyalign.cli.dataclass_args import add_dataclass_arguments
from polyalign.core.config import from_attributes
from polyalign.core.declarations import (
    DEFAULT_MODEL,
    DTYPE_CHOICES,
    check_analysis_limit,
    dtype_name,
)
from polyalign.core.errors import PolyalignError
from polyalign.evaluation.inputs import check_inputs


def add_model_args(parser: argparse.ArgumentParser, compare: bool = False) -> None:
    """--model, --adapter (and --compare-adapter for the analyses), --device, --dtype, --trust-remote-code."""
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="Hugging Face id, local folder, or packaged alias (gemma-3-270m, smollm2-135m)",
    )
    parser.add_argument("--adapter", help="LoRA adapter folder applied on top of the model")
    if compare:
        parser.add_argument(
            "--compare-adapter", help="a second LoRA adapter on the same model, drawn in the same figure"
        )
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument(
        "--dtype",
        type=dtype_name,
        choices=list(DTYPE_CHOICES),
        help="weights dtype: auto, float32 (fp32), bfloat16 (bf16) or float16 (fp16) (default: POLYALIGN_DTYPE, "
        "else auto: bf16 where a GPU supports it or a CPU measured a layer of the model's family faster in it, "
        "verified in fp32; float32 elsewhere)",
    )
    parser.add_argument("--trust-remote-code", action="store_true", help="allow model code from the hub (off)")
    add_placement_args(parser)


def add_placement_args(parser: argparse.ArgumentParser) -> None:
    """--device-map, --max-memory, --offload-folder: a model larger than one device (polyalign.engine.placement)."""
    parser.add_argument(
        "--device-map",
        help="spread the model over devices: auto (GPUs, then CPU, then disk), balanced, sequential "
        "(default: one device)",
    )
    parser.add_argument("--max-memory", help="with --device-map: 70GB for every GPU, or 0=70GB,1=70GB,cpu=200GB")
    parser.add_argument("--offload-folder", help="with --device-map: where weights that fit no device wait on disk")


def placement_args(args: argparse.Namespace):
    from polyalign.engine.placement import placement_of

    return placement_of(args.device_map, args.max_memory, args.offload_folder)


DATA_DIR_HELP = (
    "benchmark folder (default: $POLYALIGN_DATA; in a source checkout ../shared/data/multilingual-learner beside it)"
)


def add_data_args(parser: argparse.ArgumentParser) -> None:
    """--data-dir, --prompts, --languages-file."""
    parser.add_argument("--data-dir", help=DATA_DIR_HELP)
    parser.add_argument("--prompts", help="prompt pack JSON (default: polyalign's own pack)")
    parser.add_argument("--languages-file", help="JSON list of extra languages {code, name, native, script}")


def add_items_args(parser: argparse.ArgumentParser) -> None:
    """--items / --allow-overlap, shared by eval, lens and pca."""
    parser.add_argument(
        "--items",
        metavar="START:STOP",
        help="benchmark item indices [START, STOP) per language, e.g. 0:250 (with --limit N: the first N of them)",
    )
    parser.add_argument(
        "--allow-overlap",
        action="store_true",
        help="use items whose questions an adapter was trained on (refused by default)",
    )


def add_analysis_args(p: argparse.ArgumentParser, spec: type[LensSpec] | type[PcaSpec]) -> None:
    """Model, data and output options shared by `lens` and `pca`, and their spec's (--task, --langs,
    --mode, --limit, --pooling) from its fields; --layers and --items are read as text, then checked."""
    add_model_args(p, compare=True)
    add_data_args(p)
    add_dataclass_arguments(p, spec, skip=("layers", "items"))
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--batch-size", type=int, default=16, help="most prompts per forward; batches are cut to minimize padding"
    )
    add_items_args(p)


def parse_layers(spec: str | None) -> list[int | str] | None:
    """'12,18,last' -> [12, 18, 'last'] (checked against the model when it is loaded)."""
    if spec is None:
        return None
    layers: list[int | str] = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        if part == "last":
            layers.append("last")
        elif part.lstrip("-").isdigit():
            layers.append(int(part))
        else:
            raise PolyalignError(f"--layers: '{part}' is not a layer number or 'last'")
    return layers


def check_analysis_args(args: argparse.Namespace, what: str) -> list[int | str] | None:
    """The checks `lens` and `pca` make before loading any model; returns the parsed --layers."""
    check_analysis_limit(args.limit, what)
    for adapter in (args.adapter, args.compare_adapter, None):  # each adapter is checked for leaked items
        if adapter or adapter is None:
            check_inputs(
                args.task,
                args.langs,
                args.mode,
                args.items,
                args.limit,
                args.data_dir,
                args.prompts,
                adapter,
                args.allow_overlap,
                None if adapter else args.model,  # a merged model's provenance
            )
    return parse_layers(args.layers)


def load_models(args: argparse.Namespace) -> tuple:
    """(model, tokenizer, label, compare) from the shared options, after cheap checks pass."""
    from polyalign.engine.models import load_model

    placement = placement_args(args)
    model, tokenizer = load_model(args.model, args.adapter, args.device, args.dtype, args.trust_remote_code, placement)
    label = Path(args.adapter).name or "adapter" if args.adapter else "base"
    compare = []
    if args.compare_adapter:
        other, _ = load_model(
            args.model, args.compare_adapter, args.device, args.dtype, args.trust_remote_code, placement
        )
        other_label = Path(args.compare_adapter).name or "adapter"
        compare.append((other_label if other_label != label else other_label + "-2", other))
    return model, tokenizer, label, compare


def cmd_lens(args: argparse.Namespace) -> int:
    from polyalign.analysis.lens import run_lens

    layers = check_analysis_args(args, "the lens")
    spec = from_attributes(LensSpec, args, layers=layers)
    model, tokenizer, label, compare = load_models(args)
    meta = run_lens(
        model,
        tokenizer,
        spec,
        args.out,
        data_dir=args.data_dir,
        prompts=args.prompts,
        label=label,
        compare=compare,
        batch_size=args.batch_size,
    )
    for lang, info in meta["languages"].items():
        print(f"{lang}: {info['n_items']} items, {info['overlap']['count']} tokens shared with English labels")
    print(f"lens: {Path(args.out) / 'lens.json'}")
    return 0


def cmd_pca(args: argparse.Namespace) -> int:
    from polyalign.analysis.pca import run_pca

    layers = check_analysis_args(args, "PCA")
    spec = from_attributes(PcaSpec, args, layers=layers)  # checks pooling
    model, tokenizer, label, compare = load_models(args)
    meta = run_pca(
        model,
        tokenizer,
        spec,
        args.out,
        data_dir=args.data_dir,
        prompts=args.prompts,
        label=label,
        compare=compare,
        batch_size=args.batch_size,
    )
    print(
        f"pca: {meta['n_items']} items x {len(meta['langs'])} languages, layers {meta['layers']}; "
        f"{Path(args.out) / 'pca_correlations.md'}"
    )
    return 0


def add_analysis_cli(subparsers) -> None:
    """Register `polyalign lens` and `polyalign pca`."""
    p = subparsers.add_parser("lens", help="logit lens: input-language vs English answer over layers")
    add_analysis_args(p, LensSpec)
    p.add_argument("--layers", help="comma-separated layers to read (default: all; 'last' allowed)")
    p.set_defaults(func=cmd_lens)

    p = subparsers.add_parser("pca", help="PCA of intermediate representations across languages")
    add_analysis_args(p, PcaSpec)
    p.add_argument("--layers", default="last", help="comma-separated layers, e.g. 12,18,last (default: last)")
    p.set_defaults(func=cmd_pca)
