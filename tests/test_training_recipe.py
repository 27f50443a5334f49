"""The paper's training choices on tiny models: which weights are kept, and the prompt template."""

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer, TrainerCallback

from helpers import tiny_training
from polyalign.alignment.alignment_data import PairRequest, build_pairs, write_pairs
from polyalign.alignment.train_config import load_config
from polyalign.alignment.training import train
from polyalign.alignment.training_data import IGNORE, tokenize_pairs
from polyalign.core.errors import PolyalignError
from polyalign.core.prompts import PromptPack

STEPS = tiny_training(6, 2, "1e-2", "save_total_limit=none")


class RisingEvalLoss(TrainerCallback):
    """Reports an eval loss that grows with the step, so the best checkpoint (step 2) is not the last."""

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        metrics["eval_loss"] = float(state.global_step)


@pytest.fixture(scope="module")
def pairs_file(data_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    write_pairs(build_pairs(PairRequest("snli", ["zh", "es"], "en", 8, 0, data_dir, PromptPack.load())), path)
    return path


def adapter_weights(folder):
    return load_file(str(folder / "adapter_model.safetensors"))


@pytest.mark.slow
def test_keep_final_keeps_the_last_weights_and_best_the_lowest_eval_loss(tiny_llama, pairs_file, tmp_path):
    runs = {}
    for keep in ("final", "best"):
        out = tmp_path / keep
        summary = train(
            str(tiny_llama), pairs_file, out, load_config(None, STEPS + [f"keep={keep}"]), callbacks=[RisingEvalLoss()]
        )
        assert summary["kept"] == keep and summary["global_step"] == 6
        assert summary["best_checkpoint"].endswith("checkpoint-2")
        runs[keep] = out / "adapter", out / "checkpoints"
    final, checkpoints = runs["final"]
    assert any(
        not torch.equal(a, b)
        for a, b in zip(
            adapter_weights(checkpoints / "checkpoint-2").values(),
            adapter_weights(checkpoints / "checkpoint-6").values(),
        )
    )
    assert_same(adapter_weights(final), adapter_weights(checkpoints / "checkpoint-6"))  # the last weights
    best, checkpoints = runs["best"]
    assert_same(adapter_weights(best), adapter_weights(checkpoints / "checkpoint-2"))  # reloaded best


def assert_same(got: dict, want: dict) -> None:
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)


@pytest.mark.slow
def test_chat_template_puts_the_completion_in_the_assistant_turn(tiny_llama, pairs_file):
    tok = AutoTokenizer.from_pretrained(tiny_llama)  # SmolLM2's tokenizer: ChatML template
    rows = [json.loads(line) for line in pairs_file.read_text().splitlines()][:3]
    for row, item in zip(rows, tokenize_pairs(tok, rows, 2048, "chat")):
        user = [{"role": "user", "content": row["prompt"]}]
        head = tok.apply_chat_template(user, add_generation_prompt=True, tokenize=False)
        n = len(tok(head, add_special_tokens=False)["input_ids"])
        assert tok.decode(item["input_ids"][:n]) == head and row["prompt"] in head
        assert item["labels"][:n] == [IGNORE] * n  # loss on the completion only
        assert tok.decode(item["labels"][n:]) == row["completion"] + "<|im_end|>\n"
    plain = tokenize_pairs(tok, rows, 2048, "none")[0]
    assert tok.decode(plain["input_ids"]) == rows[0]["prompt"] + rows[0]["completion"] + tok.eos_token


@pytest.mark.slow
def test_chat_without_a_template_is_the_plain_format(tiny_gemma, pairs_file):
    tok = AutoTokenizer.from_pretrained(tiny_gemma)  # the packaged Gemma has no chat template
    rows = [json.loads(line) for line in pairs_file.read_text().splitlines()][:2]
    assert not tok.chat_template and tokenize_pairs(tok, rows, 2048, "chat") == tokenize_pairs(tok, rows, 2048)


def test_bad_keep_and_template_are_refused():
    for bad, message in [(["keep=last"], "keep must be final or best"), (["template=alpaca"], "template must be")]:
        with pytest.raises(PolyalignError, match=message):
            load_config(None, bad)
    load_config(None, ["keep=final", "save_steps=3", "eval_steps=2"])  # no best checkpoint to line up
    with pytest.raises(PolyalignError, match="multiple of"):
        load_config(None, ["keep=best", "save_steps=3", "eval_steps=2"])
