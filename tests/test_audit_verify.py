"""Issue 18, item 6: verification edge cases (NaN scores, threshold 0) and the NaN-safe prediction."""

from __future__ import annotations

import json
import math

import pytest

from polyalign.core.errors import PolyalignError
from polyalign.evaluation.results import predict, summarize
from polyalign.evaluation.verify import margin, merge, rounds_of, under

NAN = math.nan


@pytest.mark.parametrize("rule", ["exact", "prefix"])
def test_a_nan_or_infinite_score_has_no_margin_and_is_rescored(rule):
    scores = {"a": NAN, "b": 0.2 if rule == "prefix" else -1.0}
    assert math.isnan(margin(scores, rule)) and math.isnan(margin(dict(reversed(scores.items())), rule))
    assert under(scores, rule, 0.5) and under(scores, rule, 0.0)
    assert math.isnan(margin({"a": math.inf, "b": -1.0}, "exact"))
    assert margin({"a": -math.inf, "b": -1.0}, "exact") == math.inf  # a label of probability 0 is a real score
    assert not under({"a": 0.0, "b": -1.0}, "exact", 0.5)


def test_threshold_zero_still_rescores_ties():
    assert under({"a": -1.0, "b": -1.0}, "exact", 0.0)
    assert not under({"a": -1.0, "b": -1.001}, "exact", 0.0)
    fast = {
        0: {"scores": {"a": -2.0, "b": -2.0}},
        1: {"scores": {"a": NAN, "b": -2.0}},
        2: {"scores": {"a": 0.0, "b": -2.0}},
    }
    assert rounds_of([0, 1, 2], fast, {}, 0.0, "exact") == ([[0, 1]], None)  # a tie and a NaN, not the gap


def test_merge_requires_float32_rows_for_nan_items(tmp_path):
    rows = {0: {"index": 0, "scores": {"a": NAN, "b": -1.0}}, 1: {"index": 1, "scores": {"a": -1.0, "b": -9.0}}}
    with pytest.raises(PolyalignError, match="1 items were not re-scored in float32"):
        merge(dict(rows), tmp_path, "t", "en", 0.5, "exact")
    (tmp_path / "fp32").mkdir()
    fixed = {"index": 0, "scores": {"a": -3.0, "b": -1.0}, "pred": "b", "fast": {"pred": None}}
    (tmp_path / "fp32" / "t_en.rank0.jsonl").write_text(json.dumps(fixed) + "\n")
    merged = dict(rows)
    merge(merged, tmp_path, "t", "en", 0.5, "exact")
    assert merged[0] == fixed and merged[1] == rows[1]


def test_a_nan_score_predicts_nothing_whatever_the_order():
    assert predict({"a": NAN, "b": -1.0}) == (None, ["a", "b"])
    assert predict({"b": -1.0, "a": NAN}) == (None, ["b", "a"])
    rows = [
        {"gold": "a", "pred": None, "scores": {"a": NAN, "b": -1.0}},
        {"gold": "a", "pred": "a", "scores": {"a": -0.1, "b": -1.0}},
    ]
    stats = summarize(rows)
    assert stats["nan_scores"] == 1 and stats["accuracy"] == 0.5


def finished(out, verify) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"verify": verify}))


def test_a_rerun_with_other_verification_is_refused_or_redone(tmp_path):
    from polyalign.evaluation.eval_folder import check_verification

    out = tmp_path / "run"
    assert check_verification(out, 0.5, False) is False  # nothing finished
    finished(out, None)
    assert check_verification(out, None, False) is False
    with pytest.raises(PolyalignError, match="finished without float32 verification; this run would be verified"):
        check_verification(out, 0.5, False)
    assert check_verification(out, 0.5, True) is True
    finished(out, {"threshold": 0.5})
    with pytest.raises(PolyalignError, match="verified at threshold 0.5; this run would be verified at threshold 0.0"):
        check_verification(out, 0.0, False)


def test_the_cli_refuses_before_loading_the_model(tmp_path, data_dir, capsys):
    from polyalign.cli import main
    from polyalign.evaluation.eval_folder import claim_run_dir
    from polyalign.evaluation.evaluate import EvalConfig

    out = tmp_path / "run"
    cfg = EvalConfig(model="/nonexistent/model", task="emotion", langs="en", limit=2, data_dir=str(data_dir))
    claim_run_dir(out, cfg.identity(), False, 0, {"dtype": "bfloat16", "device": "cpu"})
    finished(out, None)  # finished with --no-verify
    argv = ["eval", "--model", cfg.model, "--task", "emotion", "--langs", "en", "--limit", "2", "--dtype", "bfloat16"]
    assert main([*argv, "--data-dir", str(data_dir), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after a possible slow-bf16 warning
    assert "finished without float32 verification" in err, err
    assert main([*argv, "--no-verify", "--data-dir", str(data_dir), "--out", str(out)]) == 2
    err = capsys.readouterr().err  # the same settings: on to loading the model, missing here
    assert "model folder not found" in err and "verification" not in err, err


BF16 = {"dtype": "bfloat16", "device": "cpu", "batch_size": 2, "world_size": 1}


def test_the_threshold_in_effect_is_part_of_the_folders_identity(tmp_path):
    """run_eval (so an experiment's eval step too) records the threshold in run.json: resuming an
    unfinished --no-verify run with verification is refused, or with --overwrite redone."""
    from polyalign.evaluation.eval_folder import claim_run_dir

    out, ident = tmp_path / "run", {"model": "m", "task": "emotion"}
    claim_run_dir(out, ident, False, 0, {**BF16, "verify_threshold": None})
    assert json.loads((out / "run.json").read_text())["runtime"]["verify_threshold"] is None
    (out / "samples").mkdir()
    (out / "samples" / "emotion_en.jsonl").write_text("{}\n")  # a language finished, not verified
    with pytest.raises(PolyalignError, match="with verify_threshold None; resuming with verify_threshold 0.5"):
        claim_run_dir(out, ident, False, 0, {**BF16, "verify_threshold": 0.5})
    claim_run_dir(out, ident, False, 0, {**BF16, "verify_threshold": None})  # the same settings resume
    assert (out / "samples" / "emotion_en.jsonl").exists()
    claim_run_dir(out, ident, True, 0, {**BF16, "verify_threshold": 0.5})
    assert not (out / "samples").exists()
    assert json.loads((out / "run.json").read_text())["runtime"]["verify_threshold"] == 0.5


def test_run_eval_checks_a_finished_folder_written_before_run_json_held_the_threshold(tmp_path):
    from polyalign.evaluation.eval_folder import claim_run_dir

    out, ident = tmp_path / "run", {"model": "m", "task": "emotion"}
    claim_run_dir(out, ident, False, 0, BF16)  # an older run.json: no threshold in it
    finished(out, None)
    with pytest.raises(PolyalignError, match="finished without float32 verification"):
        claim_run_dir(out, ident, False, 0, {**BF16, "verify_threshold": 0.5})
    claim_run_dir(out, ident, True, 0, {**BF16, "verify_threshold": 0.5})
    assert not (out / "results.json").exists()
