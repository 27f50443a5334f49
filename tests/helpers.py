"""Helpers shared by several test modules (test modules never import each other)."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from polyalign.engine.scoring import Item, continuation_ids, prefix_token_ids

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("POLYALIGN_DATA", REPO.parent / "shared" / "data" / "multilingual-learner"))
PAPER_PACK = DATA / "prompts.json"  # the paper's prompt pack, shipped with the benchmark
PREFIX = (
    "A long shared few-shot block that is longer than the sliding window of the tiny model, "
    "so that the cached prefix crosses it.\nText: "
)
QUERIES = [
    "short one",
    "a somewhat longer query with more words in it than the first",
    "mid length query here",
    "x",
    "another query that ends",
    "we need a few more of these items",
    "seven",
    "the eighth and last query of the small set used for the checks",
]
WORDS = {"yes": "positive", "no": "negative overall", "maybe": "neutral ground"}


def naive_scores(model, tokenizer, prompt, words, rule):
    """One full forward per label with no cache, the paper's way."""
    ids = tokenizer(prompt)["input_ids"]
    out = {}
    with torch.inference_mode():
        logits = model(torch.tensor([ids], device=model.device)).logits[0].float()
        for cls, word in words.items():
            if rule == "prefix":
                out[cls] = float(logits[-1].softmax(-1)[prefix_token_ids(tokenizer, word)].sum())
                continue
            cont = continuation_ids(tokenizer, ids, prompt, word)
            full = model(torch.tensor([ids + cont], device=model.device)).logits[0].float().log_softmax(-1)
            out[cls] = float(sum(full[len(ids) - 1 + j, t] for j, t in enumerate(cont)))
    return out


def make_items(tokenizer, words):
    items = []
    for i, q in enumerate(QUERIES):
        prompt = PREFIX + q + '\nAnswer: "'
        ids = tokenizer(prompt)["input_ids"]
        items.append(Item(i, ids, {c: continuation_ids(tokenizer, ids, prompt, w) for c, w in words.items()}))
    shared = len(tokenizer(PREFIX)["input_ids"]) - 1
    return items, shared


def packaged_tokenizer(alias: str) -> Path:
    """Only the tokenizer of a packaged alias, as an HF folder in the cache: no weights are converted.

    Copied from the converted model folder when that exists, else read once from the GGUF's metadata
    (seconds); later calls return the cached folder at once.
    """
    from transformers import AutoTokenizer

    from polyalign.core.model_names import ALIASES
    from polyalign.engine.model_paths import cache_dir, packaged_gguf, save_tokenizer

    spec = ALIASES[alias]
    name = f"{alias}-{spec.sha256[:12]}"
    target = cache_dir() / "tokenizers" / name
    if (target / "tokenizer_config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{alias}-") as tmp:
        converted = cache_dir() / "models" / name
        if (converted / "polyalign-source.json").is_file() and (converted / "tokenizer_config.json").is_file():
            tokenizer = AutoTokenizer.from_pretrained(converted)
        else:
            gguf = packaged_gguf(alias, spec, Path(tmp))
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        out = Path(tmp) / "tokenizer"
        save_tokenizer(tokenizer, out)
        if target.exists():
            shutil.rmtree(target)
        os.replace(out, target)
    return target


def random_lora(model_dir: Path, folder: Path, seed: int = 1) -> Path:
    """A LoRA adapter with random (non-zero) A and B, so the adapted model really differs from the base."""
    from peft import LoraConfig, get_peft_model

    from polyalign.engine.models import load_model

    base, _ = load_model(str(model_dir))
    torch.manual_seed(seed)
    peft = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft.save_pretrained(folder)
    return folder


def two_cpu_processes(*polyalign_args: str) -> list[str]:
    """`accelerate launch` of polyalign's CLI on two processes. On a CPU-only machine `--multi_gpu` is
    what makes accelerate start them (via torchrun); `--cpu --num_processes 2` silently starts one."""
    launch = "--multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no"
    return [sys.executable, "-m", "accelerate.commands.launch", *launch.split(), "-m", "polyalign.cli", *polyalign_args]


def write_experiment(tmp_path: Path, data_dir: Path, alignment: list[dict], **top) -> Path:
    """A small experiment file (gemma alias, emotion, en and zh, items 0:8) with `top` overriding."""
    import yaml

    spec = {
        "models": ["gemma-3-270m"],
        "alignment": alignment,
        "tasks": ["emotion"],
        "languages": ["en", "zh"],
        "items": "0:8",
        "data_dir": str(data_dir),
        **top,
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


def one_line_error(capsys, argv: list[str], match: str) -> str:
    """Run the CLI on `argv`: it must exit 2 with one stderr line, `polyalign: error: ...` naming `match`."""
    from polyalign.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("polyalign: error: ") and match in err, err
    return err


def run_cli(add_cli, argv: list[str]):
    """Parse `argv` with only the commands `add_cli` registers and run the chosen one."""
    import argparse

    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


NO_MODEL = "/nonexistent/model"  # loading it would fail with another message: a check must come first
CONFIG_ONLY_HIDDEN = 32  # hidden size of `config_only_model`


def config_only_model(folder: Path, tokenizer_dir: Path) -> Path:
    """A model folder with a config and a tokenizer but no weights: loading it would fail, so a check
    that must come before loading is seen to."""
    from transformers import LlamaConfig

    shutil.copytree(tokenizer_dir, folder)
    LlamaConfig(
        vocab_size=64,
        hidden_size=CONFIG_ONLY_HIDDEN,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
    ).save_pretrained(folder)
    return folder


def cfg_for(model_dir, data_dir, **kw):
    """An EvalConfig of a small snli run on three languages (6 items each), `kw` overriding."""
    from polyalign.evaluation.evaluate import EvalConfig

    base = dict(
        model=str(model_dir),
        task="snli",
        langs="en,ja,no",
        mode="english",
        scoring="exact",
        limit=6,
        data_dir=str(data_dir),
        prompts=str(PAPER_PACK),
        batch_size=4,
    )
    base.update(kw)
    return EvalConfig(**base)


SAMPLE_KEY = ("model", "setting", "task", "mode", "scoring")


def write_run_store(
    run_dir: Path,
    experiment: dict,
    samples: dict[tuple[str, str, str, str, str], list[dict]],
    plan: list[dict] | None = None,
    step: str | None = None,
) -> Path:
    """A run folder's store, as `polyalign run` leaves it: the experiment (and the step plan, when
    given) and, per (model, setting, task, mode, scoring), its sample rows (lang, idx, gold, pred,
    scores), stored under `step` (the key of the plan's step) or a name of their own. What the
    report, claims and store tests build their runs with."""
    from polyalign.study.store import Store

    with Store(run_dir) as store:
        store.set_meta("experiment", experiment)
        if plan is not None:
            store.set_meta("plan", plan)
        for key, rows in samples.items():
            store.replace_samples(step or "step-" + "-".join(key), dict(zip(SAMPLE_KEY, key)), rows)
    return run_dir


def tiny_training(max_steps: int = 4, batch: int = 2, learning_rate: str = "1e-3", *extra: str) -> list[str]:
    """Training overrides (key=value) for a run of seconds on a tiny model: a step of `batch` pairs,
    an eval and a checkpoint every 2 steps, a quarter of the pairs held out, then `extra`."""
    return [
        f"max_steps={max_steps}",
        f"per_device_batch={batch}",
        "grad_accum=1",
        "eval_steps=2",
        "save_steps=2",
        "logging_steps=1",
        "val_size=0.25",
        f"learning_rate={learning_rate}",
        "cutoff_len=256",
        *extra,
    ]


# files every `polyalign pca` run writes, whatever its models (the .npz and CSV names depend on them)
PCA_OUTPUTS = (
    "pca.json",
    "pca_correlations.md",
    "pca_alignment.csv",
    "pca_scatter.png",
    "pca_scatter.pdf",
    "pca_alignment.png",
    "pca_alignment.pdf",
)
