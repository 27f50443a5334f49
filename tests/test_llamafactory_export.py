"""The LLaMA-Factory export trains what polyalign trains: an exported row, tokenized the way the
exported settings say, gives `polyalign train`'s input ids and labels (packaged tokenizers only)."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from transformers import AutoTokenizer

from helpers import packaged_tokenizer
from polyalign.alignment.alignment_data import PairRequest, build_pairs, write_pairs
from polyalign.alignment.train_config import load_config
from polyalign.alignment.training_data import IGNORE, tokenize_pairs
from polyalign.core.errors import PolyalignError
from polyalign.core.prompts import PromptPack


def model_folder(tmp_path, alias: str):
    """A folder LLaMA-Factory and polyalign would load: the packaged tokenizer (no weights needed)."""
    folder = tmp_path / alias
    shutil.copytree(packaged_tokenizer(alias), folder)
    (folder / "config.json").write_text(json.dumps({"model_type": "placeholder"}))
    return folder


def empty_template_tokens(tokenizer, row: dict, cfg: dict) -> dict:
    """LLaMA-Factory's supervised rule, written out: the alpaca prompt is instruction, then "\\n" and
    input when input is not empty; template `empty` wraps neither turn (no BOS, no EOS, no role text);
    each turn is encoded with add_special_tokens=False; the prompt's labels are ignored unless
    train_on_prompt; pairs within cutoff_len are not cut."""
    assert cfg["template"] == "empty" and cfg["train_on_prompt"] is False
    prompt = row["instruction"] + ("\n" + row["input"] if row["input"] else "")
    source = tokenizer.encode(prompt, add_special_tokens=False)
    target = tokenizer.encode(row["output"], add_special_tokens=False)
    assert len(source) + len(target) <= cfg["cutoff_len"]
    return {"input_ids": source + target, "labels": [IGNORE] * len(source) + target}


@pytest.mark.parametrize("alias", ["gemma-3-270m", "smollm2-135m"])
def test_an_exported_row_tokenized_as_its_settings_say_is_polyalign_training_row(data_dir, tmp_path, alias):
    rows = build_pairs(PairRequest("snli", ["zh", "sw"], "en", 2, 0, data_dir, PromptPack.load()))
    folder = model_folder(tmp_path, alias)
    out = tmp_path / "mix.jsonl"
    write_pairs(rows, out, "llamafactory", str(folder))
    exported = json.loads((tmp_path / "mix.alpaca.json").read_text())
    cfg = yaml.safe_load((tmp_path / "mix.llamafactory.yaml").read_text())
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    assert info["mix"]["file_name"] == "mix.alpaca.json" and cfg["dataset"] == "mix"
    assert cfg["dataset_dir"] == str(tmp_path.resolve()) and cfg["model_name_or_path"] == str(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ours = tokenize_pairs(tokenizer, rows, cfg["cutoff_len"])
    for row, mine in zip(exported, ours):
        theirs = empty_template_tokens(tokenizer, row, cfg)
        assert theirs["input_ids"] == mine["input_ids"] and theirs["labels"] == mine["labels"]
    assert exported[0]["output"] == rows[0]["completion"] + tokenizer.eos_token
    # the stock empty template on the bare texts (the old export) drops polyalign's EOS, and gemma's BOS
    bare = empty_template_tokens(
        tokenizer, {"instruction": rows[0]["prompt"], "input": "", "output": rows[0]["completion"]}, cfg
    )
    assert bare["input_ids"] != ours[0]["input_ids"]


def test_the_settings_carry_polyalign_values_where_llamafactory_defaults_differ(data_dir, tmp_path):
    rows = build_pairs(PairRequest("snli", ["zh"], "en", 1, 0, data_dir, PromptPack.load()))
    config = tmp_path / "recipe.yaml"
    config.write_text("max_steps: 10\nlearning_rate: 2.0e-3\nval_size: 0.0\nkeep: best\n")
    write_pairs(
        rows, tmp_path / "p.jsonl", "llamafactory", str(model_folder(tmp_path, "gemma-3-270m")), load_config(config)
    )
    cfg = yaml.safe_load((tmp_path / "p.llamafactory.yaml").read_text())
    assert cfg["lora_target"] == "q_proj,v_proj" and cfg["warmup_ratio"] == 0.1 and cfg["group_by_length"] is True
    assert cfg["max_steps"] == 10 and cfg["learning_rate"] == 2e-3 and cfg["disable_gradient_checkpointing"] is True
    assert cfg["val_size"] == 0.0 and "eval_strategy" not in cfg and cfg["load_best_model_at_end"] is True
    with pytest.raises(PolyalignError, match="needs --model"):
        write_pairs(rows, tmp_path / "q.jsonl", "llamafactory")


def test_with_template_chat_the_export_writes_the_chat_templates_text(data_dir):
    from polyalign.alignment.llamafactory import export_pairs

    tokenizer = AutoTokenizer.from_pretrained(packaged_tokenizer("smollm2-135m"))
    assert tokenizer.chat_template  # SmolLM2 ships one
    rows = build_pairs(PairRequest("snli", ["zh"], "en", 2, 0, data_dir, PromptPack.load()))
    cfg = {"template": "empty", "train_on_prompt": False, "cutoff_len": 2048}
    for row, pair, mine in zip(
        rows, export_pairs(tokenizer, rows, "chat"), tokenize_pairs(tokenizer, rows, 2048, "chat")
    ):
        assert "<|im_start|>user" in pair.instruction and row["prompt"] in pair.instruction
        exported = {"instruction": pair.instruction, "input": "", "output": pair.output}
        assert empty_template_tokens(tokenizer, exported, cfg) == {
            "input_ids": mine["input_ids"],
            "labels": mine["labels"],
        }
