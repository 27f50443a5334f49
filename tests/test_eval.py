"""`polyalign eval` end to end on real benchmark files: outputs, resume, sharding, bad input."""

import json
import os
import subprocess

import pytest

from helpers import PAPER_PACK, cfg_for, two_cpu_processes
from polyalign.cli import main
from polyalign.engine import scoring
from polyalign.engine.models import load_model
from polyalign.evaluation.evaluate import run_eval
from polyalign.evaluation.results import SampleLog


def files_of(out):
    return {p.name: p.read_text() for p in sorted((out / "samples").glob("*.jsonl"))}


@pytest.mark.slow
def test_eval_writes_results_and_samples(tiny_gemma, data_dir, tmp_path):
    out = tmp_path / "e"
    code = main(
        [
            "eval",
            "--model",
            str(tiny_gemma),
            "--task",
            "emotion",
            "--langs",
            "en,zh,th",
            "--mode",
            "english",
            "--scoring",
            "prefix",
            "--limit",
            "5",
            "--data-dir",
            str(data_dir),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["languages"]) == {"en", "zh", "th"}
    for lang, entry in results["languages"].items():
        assert entry["n"] == 5 and 0 <= entry["ci95"][0] <= entry["accuracy"] <= entry["ci95"][1] <= 1
        rows = [json.loads(l) for l in (out / "samples" / f"emotion_{lang}.jsonl").read_text().splitlines()]
        assert [r["index"] for r in rows] == list(range(5))
        assert all(set(r["scores"]) == {"positive", "negative"} for r in rows)
        assert sum(r["pred"] == r["gold"] for r in rows) / 5 == entry["accuracy"]
    assert results["timing"]["items_per_second"] > 0
    assert not (out / "samples" / ".partial").exists()


@pytest.mark.slow
def test_results_do_not_depend_on_batch_size(tiny_gemma, data_dir, tmp_path):
    model, tok = load_model(str(tiny_gemma))
    one = run_eval(cfg_for(tiny_gemma, data_dir, batch_size=1), model, tok, tmp_path / "b1", progress=False)
    many = run_eval(cfg_for(tiny_gemma, data_dir, batch_size=16), model, tok, tmp_path / "b16", progress=False)
    for name, text in files_of(tmp_path / "b1").items():
        a = [json.loads(l) for l in text.splitlines()]
        b = [json.loads(l) for l in files_of(tmp_path / "b16")[name].splitlines()]
        assert [r["pred"] for r in a] == [r["pred"] for r in b]
        for x, y in zip(a, b):
            assert all(abs(x["scores"][c] - y["scores"][c]) < 1e-4 for c in x["scores"])
    assert one["average"] == many["average"]


@pytest.mark.slow
def test_killed_run_resumes_to_identical_files(tiny_gemma, data_dir, tmp_path, monkeypatch):
    model, tok = load_model(str(tiny_gemma))
    cfg = cfg_for(tiny_gemma, data_dir, batch_size=2)
    monkeypatch.setattr(scoring, "UNEMBED_POSITIONS", 3)  # save every few batches, as a long run does
    run_eval(cfg, model, tok, tmp_path / "whole", progress=False)

    original = SampleLog.append
    calls = {"n": 0}

    def dying_append(self, rows):
        original(self, rows)
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt  # killed in the middle of the second language

    monkeypatch.setattr(SampleLog, "append", dying_append)
    with pytest.raises(KeyboardInterrupt):
        run_eval(cfg, model, tok, tmp_path / "resumed", progress=False)
    assert not (tmp_path / "resumed" / "results.json").exists()
    partial = tmp_path / "resumed" / "samples" / ".partial"
    saved = sum(len(p.read_text().splitlines()) for p in partial.glob("*.jsonl"))
    assert 0 < saved < 18
    monkeypatch.setattr(SampleLog, "append", original)
    scored = []
    monkeypatch.setattr(SampleLog, "append", lambda self, rows: (scored.extend(rows), original(self, rows)))
    run_eval(cfg, model, tok, tmp_path / "resumed", progress=False)
    assert files_of(tmp_path / "whole") == files_of(tmp_path / "resumed")
    assert len(scored) == 18 - saved  # only what was missing was scored again


@pytest.mark.slow
def test_folder_with_a_different_run_is_refused(tiny_gemma, data_dir, tmp_path, capsys):
    args = [
        "eval",
        "--model",
        str(tiny_gemma),
        "--task",
        "paws",
        "--langs",
        "en",
        "--limit",
        "2",
        "--data-dir",
        str(data_dir),
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(args) == 0
    assert main(args[:-4] + ["--limit", "3", "--out", str(tmp_path / "o")]) == 2
    assert "holds a different run" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra,message",
    [
        (["--langs", "en,xx"], "unknown language 'xx'"),
        (["--task", "nope"], "unknown task 'nope'"),
        (["--mode", "loud"], "unknown mode 'loud'"),
        (["--scoring", "vibes"], "unknown scoring 'vibes'"),
        (["--mode", "native", "--prompts", str(PAPER_PACK), "--task", "snli"], "no few-shot block for mode 'native'"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(tiny_gemma, data_dir, tmp_path, capsys, extra, message):
    args = [
        "eval",
        "--model",
        str(tiny_gemma),
        "--task",
        "emotion",
        "--limit",
        "2",
        "--data-dir",
        str(data_dir),
        "--out",
        str(tmp_path / "o"),
    ] + extra
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o" / "results.json").exists()


def test_unreadable_model_folder(tmp_path, capsys, data_dir):
    (tmp_path / "m").mkdir()
    assert main(["eval", "--model", str(tmp_path / "m"), "--task", "emotion", "--out", str(tmp_path / "o")]) == 2
    assert "not a model folder" in capsys.readouterr().err


@pytest.mark.slow
def test_missing_data_dir_says_where_to_get_it(tiny_gemma, tmp_path, capsys):
    assert (
        main(
            [
                "eval",
                "--model",
                str(tiny_gemma),
                "--task",
                "emotion",
                "--data-dir",
                str(tmp_path / "none"),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "Shimao-Zhang/LLM-Multilingual-Learner" in capsys.readouterr().err


def test_prompt_command_prints_the_exact_prompt(data_dir, capsys):
    assert (
        main(
            [
                "prompt",
                "--task",
                "snli",
                "--lang",
                "zh",
                "--mode",
                "english",
                "--index",
                "3",
                "--prompts",
                str(PAPER_PACK),
                "--data-dir",
                str(data_dir),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert out.startswith("前提: 孩子们对着镜头微笑并挥手") and out.endswith('答案: "')


@pytest.mark.slow  # launches two processes
def test_accelerate_launch_shards_and_gathers(tiny_gemma, data_dir, tmp_path):
    model, tok = load_model(str(tiny_gemma))
    run_eval(cfg_for(tiny_gemma, data_dir), model, tok, tmp_path / "single", progress=False)
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")  # CPU processes (gloo)
    cmd = two_cpu_processes(
        "eval",
        "--model",
        str(tiny_gemma),
        "--task",
        "snli",
        "--langs",
        "en,ja,no",
        "--limit",
        "6",
        "--batch-size",
        "4",
        "--data-dir",
        str(data_dir),
        "--prompts",
        str(PAPER_PACK),
        "--out",
        str(tmp_path / "multi"),
    )
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("results:") == 1  # only the main process writes and reports
    timing = json.loads((tmp_path / "multi" / "results.json").read_text())["timing"]
    assert timing["items_scored"] == 9  # rank 0 scored its half of 3 languages x 6 items
    single = files_of(tmp_path / "single")
    multi = files_of(tmp_path / "multi")
    assert single.keys() == multi.keys()
    for name in single:
        a = [json.loads(l) for l in single[name].splitlines()]
        b = [json.loads(l) for l in multi[name].splitlines()]
        assert [r["pred"] for r in a] == [r["pred"] for r in b]
        assert all(abs(x["scores"][c] - y["scores"][c]) < 1e-4 for x, y in zip(a, b) for c in x["scores"])


@pytest.mark.slow
def test_labels_with_a_shared_stem_are_scored_after_the_stem(tiny_gemma, data_dir):
    """Thai native labels share 'เชิง' on Gemma: the prompt is extended by the stem's tokens and the
    prefix rule applies to the remainders (the paper's Thai case), checked against a plain forward."""
    import torch

    from polyalign.core.prompts import PromptPack
    from polyalign.engine.scoring import Scorer, prefix_token_ids
    from polyalign.evaluation.evaluate import prepare_language

    model, tok = load_model(str(tiny_gemma))
    cfg = cfg_for(tiny_gemma, data_dir, task="emotion", langs="th", mode="native", scoring="prefix", limit=3)
    plain = prepare_language(
        cfg_for(tiny_gemma, data_dir, task="emotion", langs="th", mode="native", limit=3),
        PromptPack.load(PAPER_PACK),
        tok,
        "th",
    )
    prep = prepare_language(cfg, PromptPack.load(PAPER_PACK), tok, "th")
    stem = prep.info["stem"]
    assert stem["text"] == "เชิง" and stem["scored_words"] == {"positive": "บวก", "negative": "ลบ"}
    assert prep.token_sets == {"positive": prefix_token_ids(tok, "บวก"), "negative": prefix_token_ids(tok, "ลบ")}
    scores = Scorer(model, tok).score(prep.items, prep.shared, "prefix", prep.token_sets, batch_size=2)
    for item, before in zip(prep.items, plain.items):
        assert item.ids == before.ids + stem["ids"]
        with torch.inference_mode():
            probs = model(torch.tensor([item.ids])).logits[0, -1].float().softmax(-1)
        for cls, ids in prep.token_sets.items():
            assert scores[item.index][cls] == pytest.approx(float(probs[ids].sum()), abs=1e-5)
    english = [
        prepare_language(
            cfg_for(tiny_gemma, data_dir, task="emotion", langs="th", scoring=rule, limit=3),
            PromptPack.load(PAPER_PACK),
            tok,
            "th",
        )
        for rule in ("prefix", "exact")
    ]
    assert "stem" not in english[0].info and english[0].items[0].ids == english[1].items[0].ids  # no stem: unchanged


@pytest.mark.slow
def test_a_language_that_cannot_be_scored_is_reported_not_fatal(tiny_llama, data_dir, tmp_path, capsys):
    """SmolLM's byte-level vocabulary leaves Thai's remainders บวก / ลบ the same single candidate: th is
    recorded with its reason while the other languages are scored."""
    out = tmp_path / "u"
    code = main(
        [
            "eval",
            "--model",
            str(tiny_llama),
            "--task",
            "emotion",
            "--langs",
            "en,th,zh",
            "--mode",
            "native",
            "--scoring",
            "prefix",
            "--limit",
            "3",
            "--data-dir",
            str(data_dir),
            "--prompts",
            str(PAPER_PACK),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["languages"]) == {"en", "zh"} and set(results["unscorable"]) == {"th"}
    assert "collide" in results["unscorable"]["th"]["reason"] and "th: not scored" in capsys.readouterr().out
    assert not (out / "samples" / "emotion_th.jsonl").exists()
    assert results["average"] == pytest.approx(sum(v["accuracy"] for v in results["languages"].values()) / 2)


@pytest.mark.slow
def test_run_identity_is_recorded_and_a_resume_keeps_dtype_and_device(tiny_gemma, data_dir, tmp_path):
    import torch

    from polyalign.core.errors import PolyalignError

    model, tok = load_model(str(tiny_gemma))
    out = tmp_path / "r"
    cfg = cfg_for(tiny_gemma, data_dir, langs="en", limit=3, batch_size=2)
    results = run_eval(cfg, model, tok, out, progress=False)
    want = {"dtype": "float32", "device": "cpu", "cpu_kernels": [], "batch_size": 2, "world_size": 1}
    assert results["runtime"] == want
    assert json.loads((out / "run.json").read_text())["runtime"] == want | {"verify_threshold": None}  # fp32: none
    again = run_eval(
        cfg_for(tiny_gemma, data_dir, langs="en", limit=3, batch_size=8), model, tok, out, progress=False
    )  # another batch size resumes (nothing left to score)
    assert again["runtime"]["batch_size"] == 8 and again["languages"] == results["languages"]
    moved = r"was evaluated with dtype float32, verify_threshold None; resuming with dtype bfloat16"
    with pytest.raises(PolyalignError, match=moved) as e:
        run_eval(cfg, model.to(torch.bfloat16), tok, out, progress=False)
    assert "\n" not in str(e.value)
    assert run_eval(cfg, model, tok, out, overwrite=True, progress=False)["runtime"]["dtype"] == "bfloat16"
