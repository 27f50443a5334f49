"""LLaMA-Factory's own code tokenizes polyalign's export into polyalign's training ids and labels.

Runs LLaMA-Factory's template (the one the exported settings name), its alpaca converter and its
supervised processor on `polyalign data build --format llamafactory` output, for the packaged
tokenizers, and compares with polyalign.alignment.training_data.tokenize_pairs; the bare texts
(the export before it carried the special tokens) are shown for contrast. Only the tokenization
path runs, so where `datasets` or `torchaudio` are not installed they are replaced by empty
modules. Not part of the test suite (LLaMA-Factory is not a dependency):

    pip install --no-deps --target /tmp/lf llamafactory==0.9.5
    PYTHONPATH=src:tests:/tmp/lf .venv/bin/python scripts/llamafactory_parity.py
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import shutil
import sys
import tempfile
import types
from pathlib import Path


def stub_missing(*names: str) -> None:
    """Empty stand-ins for packages LLaMA-Factory imports at module level but this path never uses."""
    for name in names:
        if importlib.util.find_spec(name) is not None:
            continue
        module = types.ModuleType(name)
        module.__spec__ = importlib.machinery.ModuleSpec(name, None)
        placeholder = type("Unused", (), {})

        def attribute(attr: str, placeholder=placeholder):
            if attr.startswith("__"):
                raise AttributeError(attr)
            return placeholder

        module.__getattr__ = attribute  # type: ignore[method-assign]
        sys.modules[name] = module


class DataArguments:
    """The fields LLaMA-Factory's template, converter and processor read, at its defaults."""

    def __init__(self, template: str, cutoff_len: int, train_on_prompt: bool):
        self.template, self.cutoff_len, self.train_on_prompt = template, cutoff_len, train_on_prompt
        self.default_system, self.enable_thinking, self.mask_history, self.media_dir = None, True, False, None
        self.neat_packing, self.preserve_thinking, self.tool_format, self.streaming = False, False, None, False


def llamafactory_tokens(folder: Path, rows: list[dict], info: dict, cfg: dict) -> dict:
    """LLaMA-Factory's input_ids and labels for alpaca rows, as its training would build them."""
    from llamafactory.data.converter import AlpacaDatasetConverter
    from llamafactory.data.parser import DatasetAttr
    from llamafactory.data.processor.supervised import SupervisedDatasetProcessor
    from llamafactory.data.template import get_template_and_fix_tokenizer
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    data_args = DataArguments(cfg["template"], cfg["cutoff_len"], cfg["train_on_prompt"])
    template = get_template_and_fix_tokenizer(tokenizer, data_args)
    attr = DatasetAttr("file", dataset_name=cfg["dataset"])
    for column, key in info["columns"].items():
        setattr(attr, column, key)
    examples = [AlpacaDatasetConverter(dataset_attr=attr, data_args=data_args)(row) for row in rows]
    batch = {key: [e[key] for e in examples] for key in examples[0]}
    processor = SupervisedDatasetProcessor(template=template, tokenizer=tokenizer, processor=None, data_args=data_args)
    return processor.preprocess_dataset(batch)


def main() -> int:
    import yaml
    from transformers import AutoTokenizer

    from helpers import DATA, packaged_tokenizer
    from polyalign.alignment.alignment_data import PairRequest, build_pairs, write_pairs
    from polyalign.alignment.training_data import tokenize_pairs
    from polyalign.core.prompts import PromptPack

    stub_missing("datasets", "torchaudio")
    pairs = build_pairs(PairRequest("snli", ["zh", "sw"], "en", 3, 0, DATA, PromptPack.load()))
    for alias in ("gemma-3-270m", "smollm2-135m"):
        tmp = Path(tempfile.mkdtemp())
        folder = tmp / alias
        shutil.copytree(packaged_tokenizer(alias), folder)
        (folder / "config.json").write_text("{}")
        write_pairs(pairs, tmp / "mix.jsonl", "llamafactory", str(folder))
        cfg = yaml.safe_load((tmp / "mix.llamafactory.yaml").read_text())
        info = json.loads((tmp / "dataset_info.json").read_text())["mix"]
        ours = tokenize_pairs(AutoTokenizer.from_pretrained(folder), pairs, cfg["cutoff_len"])
        exported = json.loads((tmp / "mix.alpaca.json").read_text())
        bare = [{"instruction": p["prompt"], "input": "", "output": p["completion"]} for p in pairs]
        for what, rows in (("the export", exported), ("the bare texts", bare)):
            theirs = llamafactory_tokens(folder, rows, info, cfg)
            same = all(
                ids == mine["input_ids"] and labels == mine["labels"]
                for ids, labels, mine in zip(theirs["input_ids"], theirs["labels"], ours)
            )
            print(f"{alias}: {what} with template {cfg['template']}: ids and labels equal polyalign's: {same}")
        shutil.rmtree(tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
