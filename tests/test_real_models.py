"""Checks on the real packaged models (gemma-3-270m, smollm2-135m) and real benchmark items."""

import json

import pytest

from helpers import PAPER_PACK, naive_scores
from polyalign.cli import main
from polyalign.core.prompts import PromptPack
from polyalign.engine.models import load_model
from polyalign.engine.scoring import Scorer
from polyalign.evaluation.evaluate import EvalConfig, prepare_language

pytestmark = pytest.mark.slow


def test_gemma_cached_scores_equal_naive_forward_on_real_prompts(gemma_dir, data_dir):
    model, tok = load_model(str(gemma_dir))
    cfg = EvalConfig(
        model=str(gemma_dir), task="snli", langs="de", limit=3, data_dir=str(data_dir), prompts=str(PAPER_PACK)
    )
    prep = prepare_language(cfg, PromptPack.load(PAPER_PACK), tok, "de")
    got = Scorer(model, tok).score(prep.items, prep.shared, "exact", None, batch_size=3)
    from polyalign.core.tasks import load_task, load_test_records

    task = load_task("snli")
    records = load_test_records(task, "de", data_dir)
    for i in range(3):
        prompt = PromptPack.load(PAPER_PACK).render(task, "de", "english", records[i])
        want = naive_scores(model, tok, prompt, prep.words, "exact")
        assert got[i] == pytest.approx(want, abs=1e-3)


def test_gemma_emotion_eval_on_real_data(gemma_dir, data_dir, tmp_path):
    out = tmp_path / "g"
    assert (
        main(
            [
                "eval",
                "--model",
                "gemma-3-270m",
                "--task",
                "emotion",
                "--langs",
                "en,zh,sw",
                "--limit",
                "20",
                "--prompts",
                str(PAPER_PACK),
                "--data-dir",
                str(data_dir),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    results = json.loads((out / "results.json").read_text())
    # Deterministic: the 270M base model reads English reviews better than chance.
    assert results["languages"]["en"]["accuracy"] >= 0.6
    assert results["languages"]["en"]["label_tokens"]["positive"]["tokens"] == ["positive"]
    assert results["package"].startswith("gemma3-270m")


def test_smollm_prefix_scoring_on_own_pack(smollm_dir, data_dir, tmp_path):
    out = tmp_path / "s"
    assert (
        main(
            [
                "eval",
                "--model",
                "smollm2-135m",
                "--task",
                "paws",
                "--langs",
                "en,fr",
                "--mode",
                "native",
                "--scoring",
                "prefix",
                "--limit",
                "6",
                "--data-dir",
                str(data_dir),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    results = json.loads((out / "results.json").read_text())
    words = results["languages"]["fr"]["label_words"]
    assert set(words) == {"paraphrase", "not_paraphrase"} and words["paraphrase"] != "same"
    for lang in ("en", "fr"):
        sets = results["languages"][lang]["label_tokens"]
        assert sets["paraphrase"]["ids"] != sets["not_paraphrase"]["ids"]
