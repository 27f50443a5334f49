"""The leak guard (benchmark provenance, polyalign.core.item_range) sees pairs built from the
benchmark's own test files and merged models evaluated by an experiment or by `run_eval` directly."""

from __future__ import annotations

import json

import pytest

from polyalign.cli import main
from polyalign.core.errors import PolyalignError
from polyalign.core.item_range import check_overlap, parse_items, write_provenance


def test_file(data_dir, lang: str) -> str:
    return str(data_dir / "ap_emotion" / f"emotion_{lang}500_test.json")


test_file.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


def test_pairs_from_the_test_files_carry_the_items_they_took(data_dir, tmp_path, capsys):
    from polyalign.alignment.training import benchmark_provenance, read_pairs

    out = tmp_path / "pairs.jsonl"
    argv = ["data", "build", "--task", "emotion", "--sources", "zh", "--target", "en", "--per-language", "6"]
    argv += ["--pair-file", f"zh={test_file(data_dir, 'zh')}", "--target-file", test_file(data_dir, "en")]
    assert main([*argv, "--data-dir", str(data_dir), "--out", str(out)]) == 0
    assert "note: these questions are emotion benchmark test items within" in capsys.readouterr().out
    rows = read_pairs(out)
    indices = [r["index"] for r in rows]
    span = f"{min(indices)}:{max(indices) + 1}"
    assert {(r["task"], r["items"]) for r in rows} == {("emotion", span)}
    trained = benchmark_provenance(rows)
    assert trained == [{"task": "emotion", "items": span, "pairs": 6}]
    with pytest.raises(PolyalignError, match=f"was trained on emotion items {span}"):
        check_overlap(trained, "emotion", parse_items(f"{min(indices)}:{min(indices) + 1}"), "adapter a", False)


def test_pairs_from_other_files_carry_no_provenance(data_dir, tmp_path):
    from polyalign.alignment.alignment_data import PairRequest, build_pairs
    from polyalign.core.prompts import PromptPack

    files = {}
    for lang in ("zh", "en"):
        records = json.loads(open(test_file(data_dir, lang), encoding="utf-8").read())[:20]
        files[lang] = tmp_path / f"{lang}.json"
        files[lang].write_text(json.dumps([{**r, "input": r["input"] + " (rewritten)"} for r in records]))
    pairs = build_pairs(
        PairRequest("emotion", ["zh"], "en", 4, 0, data_dir, PromptPack.load(None), {"zh": files["zh"]}, files["en"])
    )
    assert not any("items" in r or "task" in r for r in pairs)


def merged_model(tmp_path):
    folder = tmp_path / "merged"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    write_provenance(folder, [{"task": "emotion", "items": "0:50", "pairs": 50}])
    return folder


def test_an_experiment_refuses_a_merged_model_on_its_own_items(tmp_path, data_dir, capsys):
    folder = merged_model(tmp_path)
    path = tmp_path / "e.yaml"
    path.write_text(f"models: [{folder}]\ntasks: [emotion]\nlanguages: [en]\nitems: 40:60\n")
    assert main(["run", str(path), "--dry-run", "--data-dir", str(data_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"model {folder} was trained on emotion items 0:50; evaluating items 40:60 overlaps 40:50" in err, err
    assert main(["run", str(path), "--dry-run", "--data-dir", str(data_dir), "items=50:60"]) == 0
    assert main(["run", str(path), "--dry-run", "--data-dir", str(data_dir), "allow_overlap=true"]) == 0


def test_run_eval_checks_a_merged_models_provenance(tmp_path, data_dir):
    from polyalign.evaluation.evaluate import EvalConfig, check_config

    folder = merged_model(tmp_path)
    cfg = EvalConfig(model=str(folder), task="emotion", langs="en", items="10:12", data_dir=str(data_dir))
    with pytest.raises(PolyalignError, match=f"model {folder} was trained on emotion items 0:50"):
        check_config(cfg)
