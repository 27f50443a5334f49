"""Verified reduced precision (polyalign.evaluation.verify): bf16 scores, float32 re-scores under the threshold."""

import json
import math

import pytest

import helpers
from helpers import PAPER_PACK
from polyalign.cli import main
from polyalign.core.errors import PolyalignError
from polyalign.engine import scoring
from polyalign.engine.models import load_model
from polyalign.evaluation import evaluate
from polyalign.evaluation.eval_config import check_config
from polyalign.evaluation.evaluate import prepare_language, run_eval
from polyalign.evaluation.results import SampleLog
from polyalign.evaluation.verify import margin, threshold_in_effect
from polyalign.evaluation.verify_plan import score_shift

LANGS = ("en", "zh")


def cfg_for(model_dir, data_dir, **kw):
    """helpers.cfg_for on emotion in LANGS (the languages these tests read back)."""
    return helpers.cfg_for(model_dir, data_dir, **{"task": "emotion", "langs": ",".join(LANGS), **kw})


def rows_of(out):
    return {
        lang: [json.loads(line) for line in (out / "samples" / f"emotion_{lang}.jsonl").read_text().splitlines()]
        for lang in LANGS
    }


def plain(row):
    return {k: v for k, v in row.items() if k != "fast"}


class Loads:
    """The float32 reference loader, counting its calls."""

    def __init__(self, model_dir):
        self.model_dir, self.calls = model_dir, 0

    def __call__(self):
        self.calls += 1
        return load_model(str(self.model_dir), dtype="float32")[0]


@pytest.fixture(scope="module")
def runs(tiny_gemma, data_dir, tmp_path_factory):
    """Unverified bf16 and fp32 runs of both rules, and the bf16 model."""
    tmp = tmp_path_factory.mktemp("runs")
    fast, _ = load_model(str(tiny_gemma), dtype="bfloat16")
    full, tok = load_model(str(tiny_gemma), dtype="float32")
    for rule in ("exact", "prefix"):
        run_eval(
            cfg_for(tiny_gemma, data_dir, scoring=rule, verify=False), fast, tok, tmp / f"bf16_{rule}", progress=False
        )
        run_eval(cfg_for(tiny_gemma, data_dir, scoring=rule), full, tok, tmp / f"fp32_{rule}", progress=False)
    return tmp, fast, tok


def tokens_of(cfg, tok, lang):
    """Item index -> the tokens scoring feeds the decoder after the shared prefix, counted from the
    prepared items: the suffix once, or (exact rule, a multi-token label) once per class with that
    label's tokens but its last."""
    _, pack, _ = check_config(cfg)
    prep = prepare_language(cfg, pack, tok, lang)
    counted = {}
    for item in prep.items:
        suffix, labels = len(item.ids) - prep.shared, list(item.continuations.values())
        multi = cfg.scoring == "exact" and any(len(label) > 1 for label in labels)
        counted[item.index] = sum(suffix + len(label) - 1 for label in labels) if multi else suffix
    return counted


def middle_threshold(rows, rule):
    """A threshold between two distinct margins near the median: some items re-scored, some not."""
    margins = sorted({margin(r["scores"], rule) for lang in LANGS for r in rows[lang]})
    k = len(margins) // 2
    return (margins[k - 1] + margins[k]) / 2


def test_margin_and_threshold_in_effect():
    assert margin({"a": -1.0, "b": -1.5}, "exact") == pytest.approx(0.5)
    assert margin({"a": 0.2, "b": 0.1}, "prefix") == pytest.approx(math.log(2))
    assert margin({"a": 0.3, "b": 0.3, "c": 0.1}, "prefix") == 0.0
    assert margin({"a": 0.3, "b": 0.0}, "prefix") == math.inf
    assert threshold_in_effect(None, None, "float32") is None and threshold_in_effect(True, 1.0, "float32") is None
    assert threshold_in_effect(None, 0.3, "bfloat16") == 0.3 and threshold_in_effect(False, 0.3, "float16") is None
    assert threshold_in_effect(None, None, "bfloat16") == "auto"  # the default: measured on the run
    with pytest.raises(PolyalignError, match="'auto' or a margin >= 0"):
        threshold_in_effect(True, -1.0, "bfloat16")


@pytest.mark.slow
@pytest.mark.parametrize("rule", ["exact", "prefix"])
def test_items_under_the_threshold_are_rescored_in_float32(runs, tiny_gemma, data_dir, rule):
    tmp, fast, tok = runs
    bf16, fp32 = rows_of(tmp / f"bf16_{rule}"), rows_of(tmp / f"fp32_{rule}")
    threshold = middle_threshold(bf16, rule)
    loads = Loads(tiny_gemma)
    cfg = cfg_for(tiny_gemma, data_dir, scoring=rule, verify_threshold=threshold)
    results = run_eval(
        cfg,
        fast,
        tok,
        tmp / f"verified_{rule}",
        progress=False,
        load_reference=loads,
    )
    verified = rows_of(tmp / f"verified_{rule}")
    assert loads.calls == 1  # loaded once, for the first language that needed it
    total = total_tokens = 0
    for lang in LANGS:
        under = {r["index"] for r in bf16[lang] if margin(r["scores"], rule) < threshold}
        assert {r["index"] for r in verified[lang] if "fast" in r} == under
        for v, b, f in zip(verified[lang], bf16[lang], fp32[lang]):
            if v["index"] in under:  # the float32 row (other batch companions: equal up to fp32 rounding)
                assert v["pred"] == f["pred"] and v["fast"] == {
                    "dtype": "bfloat16",
                    "pred": b["pred"],
                    "margin": margin(b["scores"], rule),
                    "shift": score_shift(b["scores"], v["scores"], rule),
                }
                assert all(v["scores"][c] == pytest.approx(f["scores"][c], abs=1e-5) for c in f["scores"])
            else:  # the bf16 row, bit for bit
                assert v == b
        entry = results["languages"][lang]["verify"]
        changed = sum(v["fast"]["pred"] != v["pred"] for v in verified[lang] if "fast" in v)
        assert {k: entry[k] for k in ("rescored", "changed")} == {"rescored": len(under), "changed": changed}
        assert entry["smallest_kept_margin"] >= threshold
        tokens = tokens_of(cfg, tok, lang)
        assert entry["tokens"] == sum(tokens.values()) and entry["rescored_tokens"] == sum(tokens[i] for i in under)
        total += len(under)
        total_tokens += entry["rescored_tokens"]
    assert 0 < total < 12  # the threshold sends some items, not all, back to float32
    summary = results["verify"]
    assert summary["threshold"] == threshold and summary["rescored"] == total and summary["dtype"] == "bfloat16"
    assert 0 < summary["rescored_tokens"] == total_tokens < summary["tokens"]
    assert summary["items"] == 12 and summary["per_language"]["en"] == results["languages"]["en"]["verify"]
    assert summary["covers"].startswith("raw predictions")  # calibrated ones are not verified: it says so
    assert results["runtime"]["dtype"] == "bfloat16"


@pytest.mark.slow
def test_infinite_threshold_reproduces_float32_and_zero_loads_nothing(runs, tiny_gemma, data_dir):
    tmp, fast, tok = runs
    loads = Loads(tiny_gemma)
    results = run_eval(
        cfg_for(tiny_gemma, data_dir, verify_threshold=math.inf),
        fast,
        tok,
        tmp / "inf",
        progress=False,
        load_reference=loads,
    )
    assert results["verify"]["rescored"] == 12
    fp32 = rows_of(tmp / "fp32_exact")
    assert {lang: [plain(r) for r in rows] for lang, rows in rows_of(tmp / "inf").items()} == fp32  # bit for bit
    none = Loads(tiny_gemma)
    results = run_eval(
        cfg_for(tiny_gemma, data_dir, verify_threshold=0.0),
        fast,
        tok,
        tmp / "zero",
        progress=False,
        load_reference=none,
    )
    assert none.calls == 0 and results["verify"]["rescored"] == 0
    assert rows_of(tmp / "zero") == rows_of(tmp / "bf16_exact")


@pytest.mark.slow
def test_interrupted_verification_resumes_to_identical_files(runs, tiny_gemma, data_dir, tmp_path, monkeypatch):
    tmp, fast, tok = runs
    monkeypatch.setattr(scoring, "UNEMBED_POSITIONS", 1)  # save after every batch
    cfg = cfg_for(
        tiny_gemma, data_dir, verify_threshold=middle_threshold(rows_of(tmp / "bf16_exact"), "exact"), batch_size=2
    )
    whole = run_eval(cfg, fast, tok, tmp_path / "whole", progress=False)
    original = SampleLog.append
    calls = {"n": 0}

    def dying_append(self, rows):
        original(self, rows)
        if "fp32" in self.path.parts:
            calls["n"] += 1
            if calls["n"] == 1:
                raise KeyboardInterrupt  # killed in the middle of a float32 pass

    monkeypatch.setattr(SampleLog, "append", dying_append)
    with pytest.raises(KeyboardInterrupt):
        run_eval(cfg, fast, tok, tmp_path / "resumed", progress=False)
    assert not (tmp_path / "resumed" / "results.json").exists()
    monkeypatch.setattr(SampleLog, "append", original)
    saved = sum(len(p.read_text().splitlines()) for p in (tmp_path / "resumed/samples/.partial/fp32").glob("*"))
    assert 0 < saved < whole["verify"]["rescored"]
    again = run_eval(cfg, fast, tok, tmp_path / "resumed", progress=False)
    assert rows_of(tmp_path / "whole") == rows_of(tmp_path / "resumed")
    assert again["languages"] == whole["languages"] and again["verify"]["rescored"] == whole["verify"]["rescored"]
    assert not (tmp_path / "resumed" / "samples" / ".partial").exists()
    # a finished run run again writes the same results (its counts come from the samples files)
    assert run_eval(cfg, fast, tok, tmp_path / "resumed", progress=False)["verify"] == {
        **again["verify"],
        "seconds": 0.0,
    }


@pytest.mark.slow
def test_sharded_verified_run_rescores_each_process_share(runs, tiny_gemma, data_dir, tmp_path, monkeypatch):
    """Two processes, one after the other: each re-scores its own items; rank 0 merges both logs."""
    tmp, fast, tok = runs
    fp32 = rows_of(tmp / "fp32_exact")
    threshold = middle_threshold(rows_of(tmp / "bf16_exact"), "exact")
    cfg = cfg_for(tiny_gemma, data_dir, verify_threshold=threshold)
    for rank in (1, 0):
        monkeypatch.setattr(evaluate, "_distributed", lambda rank=rank: (rank, 2, lambda: None))
        results = run_eval(cfg, fast, tok, tmp_path / "s", progress=False)
    assert results is not None
    for lang, rows in rows_of(tmp_path / "s").items():
        for row, ref in zip(rows, fp32[lang]):
            if "fast" in row:
                assert row["fast"]["margin"] < threshold and row["pred"] == ref["pred"]
            else:
                assert margin(row["scores"], "exact") >= threshold
    assert results["verify"]["rescored"] == sum("fast" in r for rows in rows_of(tmp_path / "s").values() for r in rows)


@pytest.mark.slow
def test_cli_verifies_bf16_by_default_and_ignores_verify_for_fp32(tiny_gemma, data_dir, tmp_path):
    base = [
        "eval",
        "--model",
        str(tiny_gemma),
        "--task",
        "emotion",
        "--langs",
        "en",
        "--limit",
        "4",
        "--data-dir",
        str(data_dir),
        "--prompts",
        str(PAPER_PACK),
    ]
    assert main(base + ["--dtype", "bfloat16", "--verify-threshold", "inf", "--out", str(tmp_path / "b")]) == 0
    verified = json.loads((tmp_path / "b" / "results.json").read_text())["verify"]
    assert verified["rescored"] == 4 and verified["threshold"] == math.inf
    assert verified["reference"]["method"] == "layer-wise float32 view" and verified["reference"]["exact"]
    assert main(base + ["--dtype", "bfloat16", "--no-verify", "--out", str(tmp_path / "n")]) == 0
    assert json.loads((tmp_path / "n" / "results.json").read_text())["verify"] is None
    assert main(base + ["--dtype", "float32", "--verify", "--out", str(tmp_path / "f")]) == 0
    assert json.loads((tmp_path / "f" / "results.json").read_text())["verify"] is None
