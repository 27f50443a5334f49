"""`polyalign train` / `merge` on a tiny random model: config, target-only loss, best checkpoint, resume, merge."""

import dataclasses
import json

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

from helpers import run_cli, tiny_training, two_cpu_processes
from polyalign.alignment.alignment_data import PairRequest, build_pairs, write_pairs
from polyalign.alignment.merge import merge
from polyalign.alignment.train_config import TrainConfig, load_config
from polyalign.alignment.training import train
from polyalign.alignment.training_data import IGNORE, PadCollator, tokenize_pairs
from polyalign.cli.train import add_cli
from polyalign.core.errors import PolyalignError
from polyalign.core.prompts import PromptPack
from polyalign.engine.model_paths import lists_added_tokens
from polyalign.engine.models import load_model

TINY = tiny_training(4, 2, "1e-3", "keep=best")


@pytest.fixture(scope="module")
def pairs_file(data_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    write_pairs(build_pairs(PairRequest("snli", ["zh", "es"], "en", 8, 0, data_dir, PromptPack.load())), path)
    return path


def test_defaults_are_the_paper_recipe_declared_once():
    assert dataclasses.asdict(load_config()) == dataclasses.asdict(TrainConfig())
    assert all(f.metadata.get("help") for f in dataclasses.fields(TrainConfig))  # every key says what it is
    cfg = load_config()
    assert (cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout, cfg.target_modules) == (8, 16, 0.0, ["q_proj", "v_proj"])
    assert (cfg.epochs, cfg.learning_rate, cfg.lr_scheduler, cfg.warmup_ratio) == (3.0, 5e-5, "cosine", 0.1)
    assert cfg.per_device_batch * cfg.grad_accum == 16 and cfg.val_size == 0.05 and cfg.cutoff_len == 2048
    assert (cfg.keep, cfg.template) == ("final", "none")  # the paper's runs kept their last weights


def test_config_file_and_typed_overrides(tmp_path):
    user = tmp_path / "my.yaml"
    user.write_text("lora_rank: 16\nlearning_rate: 1e-4\n")
    cfg = load_config(
        user,
        [
            "target_modules=q_proj,k_proj,v_proj",
            "group_by_length=false",
            "epochs=1",
            "save_total_limit=none",
            "warmup_ratio=0",
        ],
    )
    assert cfg.lora_rank == 16 and cfg.learning_rate == 1e-4 and cfg.lora_alpha == 16
    assert cfg.target_modules == ["q_proj", "k_proj", "v_proj"] and cfg.group_by_length is False
    assert cfg.epochs == 1.0 and isinstance(cfg.epochs, float) and cfg.save_total_limit is None
    for bad, message in [
        (["lora_rnak=4"], "unknown key"),
        (["lora_rank=big"], "not a valid int"),
        (["group_by_length=maybe"], "not a valid bool"),
        (["keep=best", "save_steps=3"], "multiple of"),
        (["val_size=1"], "val_size"),
        (["lora_rank"], "key=value"),
    ]:
        with pytest.raises(PolyalignError, match=message):
            load_config(None, bad)
    user.write_text("bogus: 1\n")
    with pytest.raises(PolyalignError, match="unknown key"):
        load_config(user)
    user.write_text("keep: best\nsave_steps: 3\n")  # checked once the overrides are in, not file by file
    assert load_config(user, ["save_steps=200"]).save_steps == 200
    with pytest.raises(PolyalignError, match="keep must be final or best"):
        TrainConfig(keep="last")  # a config is checked whenever it is made


@pytest.mark.slow
def test_labels_mask_exactly_the_prompt(tiny_llama, pairs_file):
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    rows = [json.loads(line) for line in pairs_file.read_text().splitlines()][:4]
    items = tokenize_pairs(tok, rows, 2048)
    for row, item in zip(rows, items):
        n_prompt = len(tok(row["prompt"])["input_ids"])
        completion = tok(row["completion"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        assert item["labels"][:n_prompt] == [IGNORE] * n_prompt
        assert item["labels"][n_prompt:] == completion == item["input_ids"][n_prompt:]
    batch = PadCollator(tok.pad_token_id)(items)
    for i, item in enumerate(items):
        n = len(item["input_ids"])
        assert batch["attention_mask"][i].sum() == n and (batch["labels"][i, n:] == IGNORE).all()
    short = tokenize_pairs(tok, rows[:1], 40)[0]  # over-long: both sides keep tokens
    assert len(short["input_ids"]) == 40 and IGNORE in short["labels"] and short["labels"][-1] != IGNORE


class Interrupt(TrainerCallback):
    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == 3:
            raise KeyboardInterrupt  # killed after step 3 was logged, with checkpoint-2 the last saved


@pytest.fixture(scope="module")
def run(tiny_llama, pairs_file, tmp_path_factory):
    """A tiny run killed at step 3, then resumed through the CLI to its end (step 4)."""
    out = tmp_path_factory.mktemp("run") / "r"
    with pytest.raises(KeyboardInterrupt):
        train(str(tiny_llama), pairs_file, out, load_config(None, TINY), callbacks=[Interrupt()])
    assert (out / "checkpoints" / "checkpoint-2").is_dir() and not (out / "adapter").exists()
    assert 3 in [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    with pytest.raises(PolyalignError, match="--resume"):
        train(str(tiny_llama), pairs_file, out, load_config(None, TINY))
    assert (
        run_cli(
            add_cli,
            ["train", "--model", str(tiny_llama), "--data", str(pairs_file), "--out", str(out), "--resume", *TINY],
        )
        == 0
    )
    return out


@pytest.mark.slow
def test_resume_continues_and_keeps_the_best_checkpoint(run):
    summary = json.loads((run / "summary.json").read_text())
    assert summary["resumed_from"].endswith("checkpoint-2") and summary["global_step"] == 4
    assert summary["n_val"] == 4 and summary["n_train"] == 12
    assert summary["cpu_kernels"] == [] or "softmax_xent_bf16" in summary["cpu_kernels"]  # bf16 on a CPU only
    assert summary["precision"] == "bf16" or summary["cpu_kernels"] == []
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4]  # no step logged twice across the kill
    evals = {r["step"]: r["eval_loss"] for r in log if "eval_loss" in r}
    assert set(evals) == {2, 4}
    best = min(evals, key=evals.get)
    assert summary["best_checkpoint"].endswith(f"checkpoint-{best}") and summary["best_eval_loss"] == evals[best]
    assert (run / "loss.png").stat().st_size > 0
    assert yaml.safe_load((run / "config.yaml").read_text())["max_steps"] == 4
    state = json.loads((run / "checkpoints" / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4


@pytest.mark.slow
def test_run_folder_guards(run, tiny_llama, pairs_file):
    with pytest.raises(PolyalignError, match="differs in learning_rate"):
        train(str(tiny_llama), pairs_file, run, load_config(None, TINY + ["learning_rate=2e-3"]))
    with pytest.raises(PolyalignError, match="already finished"):
        train(str(tiny_llama), pairs_file, run, load_config(None, TINY))
    assert train(str(tiny_llama), pairs_file, run, load_config(None, TINY), resume=True)["global_step"] == 4


@pytest.mark.slow
def test_adapter_loads_and_merge_matches_it(run, tiny_llama, pairs_file, tmp_path):
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    assert not [p.name for p in (run / "adapter").iterdir() if p.suffix in (".bin", ".pt", ".pkl", ".pth")]
    base, tok = load_model(str(tiny_llama))
    tuned, _ = load_model(str(tiny_llama), adapter=str(run / "adapter"))
    ids = tok(json.loads(pairs_file.read_text().splitlines()[0])["prompt"], return_tensors="pt").to(base.device)
    with torch.no_grad():
        want = tuned(**ids).logits
        assert not torch.allclose(base(**ids).logits, want)  # the adapter changes the model
    merged_dir = merge(str(tiny_llama), run / "adapter", tmp_path / "merged")
    assert list(merged_dir.glob("*.safetensors")) and (merged_dir / "tokenizer.json").exists()
    assert lists_added_tokens(merged_dir)  # loads skip a second parse of tokenizer.json
    merged, merged_tok = load_model(str(merged_dir))
    assert merged_tok.backend_tokenizer.to_str() == tok.backend_tokenizer.to_str()
    with torch.no_grad():
        torch.testing.assert_close(merged(**ids).logits, want, atol=1e-4, rtol=0)
    with pytest.raises(PolyalignError, match="--overwrite"):
        run_cli(
            add_cli, ["merge", "--model", str(tiny_llama), "--adapter", str(run / "adapter"), "--out", str(merged_dir)]
        )


@pytest.mark.slow
def test_target_only_logits_keep_loss_and_gradients(tiny_gemma, pairs_file):
    """The collator's logits_to_keep/shift_labels trick changes cost, not the loss or its gradient."""
    tok = AutoTokenizer.from_pretrained(tiny_gemma)
    items = tokenize_pairs(tok, [json.loads(line) for line in pairs_file.read_text().splitlines()][:3], 2048)
    model = AutoModelForCausalLM.from_pretrained(tiny_gemma)
    losses, grads = [], []
    for targets_only in (False, True):
        model.zero_grad()
        batch = PadCollator(tok.pad_token_id, targets_only=targets_only)(items)
        out = model(**batch)
        out.loss.backward()
        losses.append(out.loss.detach())
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
        if targets_only:
            assert out.logits.shape[1] == len(batch["logits_to_keep"]) < batch["input_ids"].shape[1]
    assert torch.allclose(losses[0], losses[1], atol=1e-5)
    assert len(grads[0]) == len(grads[1]) and all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads))


@pytest.mark.slow  # launches two processes
def test_accelerate_launch_trains_on_two_processes(tiny_llama, pairs_file, tmp_path):
    """No code change for several processes: 2 CPU processes (gloo) train one adapter together."""
    import os
    import subprocess

    out = tmp_path / "ddp"
    cmd = two_cpu_processes(
        "train",
        "--model",
        str(tiny_llama),
        "--data",
        str(pairs_file),
        "--out",
        str(out),
        "max_steps=2",
        "per_device_batch=2",
        "grad_accum=1",
        "eval_steps=1",
        "save_steps=1",
        "logging_steps=1",
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")  # CPU processes (gloo), GPU or not
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["effective_batch"] == 4 and summary["global_step"] == 2
    assert (out / "adapter" / "adapter_config.json").exists()


@pytest.mark.slow
def test_a_rerun_gives_the_same_adapter_and_the_seed_changes_it(tiny_llama, pairs_file, tmp_path):
    """LoRA's A matrices are drawn when the adapter is attached, before the Trainer seeds anything:
    polyalign seeds that draw from `seed`, so a rerun reproduces the adapter bit for bit."""
    from safetensors.torch import load_file

    def adapter(name: str, seed: int, global_seed: int) -> dict:
        overrides = ["max_steps=2", "per_device_batch=2", "grad_accum=1", "val_size=0", f"seed={seed}"]
        torch.manual_seed(global_seed)  # whatever ran before in the process must not matter
        train(str(tiny_llama), pairs_file, tmp_path / name, load_config(overrides=overrides))
        return load_file(tmp_path / name / "adapter" / "adapter_model.safetensors")

    first, rerun, other = adapter("first", 0, 1), adapter("rerun", 0, 2), adapter("other", 1, 1)
    assert first.keys() == rerun.keys() and any("lora_A" in k for k in first)
    assert all(torch.equal(first[k], rerun[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)
