"""Held-out benchmark items: data build --items, eval --items, and the leak guard."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from polyalign.alignment.alignment_data import PairRequest, build_pairs
from polyalign.alignment.training import benchmark_provenance
from polyalign.cli import main
from polyalign.core.errors import PolyalignError
from polyalign.core.item_range import (
    ItemRange,
    check_overlap,
    evaluated_range,
    parse_items,
    read_provenance,
    write_provenance,
)
from polyalign.core.prompts import PromptPack
from polyalign.core.tasks import load_task, load_test_records


def test_parse_items_and_overlap():
    assert parse_items("250:500") == ItemRange(250, 500) and len(ItemRange(250, 500)) == 250
    assert parse_items(None) is None
    assert ItemRange(0, 250).overlap(ItemRange(250, 500)) is None
    assert ItemRange(0, 300).overlap(ItemRange(250, 500)) == ItemRange(250, 300)
    assert evaluated_range(None, 20, 500) == ItemRange(0, 20)
    assert evaluated_range(ItemRange(100, 200), 20, 500) == ItemRange(100, 120)
    assert evaluated_range(None, None, 500) == ItemRange(0, 500)
    for bad, message in (
        ("500:250", "start must be below stop"),
        ("a:b", "expected START:STOP"),
        ("3", "expected START:STOP"),
        ("-1:4", "expected START:STOP"),
        ("5:5", "below stop"),
    ):
        with pytest.raises(PolyalignError, match=message):
            parse_items(bad)


@pytest.mark.parametrize("task", ["emotion", "snli", "paws"])
def test_pairs_from_held_out_items_are_the_same_item_in_both_languages(data_dir, task):
    spec, pack = load_task(task), PromptPack.load(None)
    pairs = build_pairs(PairRequest(spec, ["zh", "sw"], "en", 40, 0, data_dir, pack, items="250:500"))
    assert len(pairs) == 80
    english = load_test_records(spec, "en", data_dir)
    sources = {lang: load_test_records(spec, lang, data_dir) for lang in ("zh", "sw")}
    for row in pairs:
        assert 250 <= row["index"] < 500 and row["task"] == spec.name and row["items"] == "250:500"
        i, lang = row["index"], row["source_lang"]
        assert row["prompt"].startswith(pack.query(spec, lang, sources[lang][i]))
        assert row["completion"] == pack.query(spec, "en", english[i])
        assert spec.answer_field not in row and english[i][spec.answer_field] not in row["completion"].split()[-1:]
    # per language: distinct items; any target language among the 20 works too
    assert len({(r["source_lang"], r["index"]) for r in pairs}) == 80
    other = build_pairs(PairRequest(spec, ["de"], "ja", 5, 0, data_dir, pack, items="0:10"))
    assert all(
        r["completion"] == pack.query(spec, "ja", load_test_records(spec, "ja", data_dir)[r["index"]]) for r in other
    )


def test_provenance_is_carried_from_pairs_to_the_adapter(data_dir, tmp_path):
    pairs = build_pairs(
        PairRequest("emotion", ["zh", "es"], "en", 10, 0, data_dir, PromptPack.load(None), items="250:500")
    )
    records = benchmark_provenance(pairs + [{"prompt": "p", "completion": "c"}])
    assert records == [{"task": "emotion", "items": "250:500", "pairs": 20}]
    write_provenance(tmp_path, records)
    assert read_provenance(tmp_path) == [{"task": "emotion", "items": "250:500"}]
    check_overlap(read_provenance(tmp_path), "emotion", ItemRange(0, 250), "adapter", allow=False)
    check_overlap(read_provenance(tmp_path), "snli", ItemRange(0, 600), "adapter", allow=False)  # other task
    with pytest.raises(PolyalignError, match="overlaps 250:260"):
        check_overlap(read_provenance(tmp_path), "emotion", ItemRange(0, 260), "adapter", allow=False)
    (tmp_path / "polyalign_provenance.json").write_text("{not json")
    with pytest.raises(PolyalignError, match="malformed provenance"):
        read_provenance(tmp_path)


def data_build(data_dir: Path, out: Path, *options: str) -> int:
    """`polyalign data build --task emotion OPTIONS` on the benchmark, into `out`."""
    return main(["data", "build", "--task", "emotion", *options, "--data-dir", str(data_dir), "--out", str(out)])


@pytest.mark.parametrize(
    "items,message",
    [
        ("500:250", "start must be below stop"),
        ("0:9999", "out of range"),
        ("a:b", "expected START:STOP"),
    ],
)
def test_data_build_bad_ranges_one_line(data_dir, tmp_path, capsys, items, message):
    out = tmp_path / "p.jsonl"
    code = data_build(data_dir, out, "--sources", "zh,es", "--items", items, "--per-language", "5")
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1 and not out.exists()


def test_data_build_without_items_says_the_task_ships_no_questions(data_dir, tmp_path, capsys):
    code = data_build(data_dir, tmp_path / "p.jsonl", *"--sources zh --per-language 5".split())
    err = capsys.readouterr().err
    assert code == 2 and "ships no emotion training questions" in err and "--items" in err


def test_data_build_cli_with_items(data_dir, tmp_path, capsys):
    out = tmp_path / "p.jsonl"
    assert data_build(data_dir, out, *"--sources zh,es --items 250:500 --per-language 250".split()) == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 500 and {r["index"] for r in rows} == set(range(250, 500))
    too_many = "--sources zh --items 250:300 --per-language 51".split()
    assert data_build(data_dir, tmp_path / "q.jsonl", *too_many) == 2
    assert "more than the 50 parallel records available in items 250:300" in capsys.readouterr().err


def _eval(model: Path, data_dir: Path, out: Path, *extra: str) -> int:
    return main(
        [
            "eval",
            "--model",
            str(model),
            "--task",
            "emotion",
            "--langs",
            "en,zh",
            "--data-dir",
            str(data_dir),
            "--out",
            str(out),
            *extra,
        ]
    )


@pytest.mark.slow
def test_eval_items_scores_exactly_that_range(tiny_gemma, data_dir, tmp_path):
    assert _eval(tiny_gemma, data_dir, tmp_path / "a", "--items", "100:106") == 0
    results = json.loads((tmp_path / "a" / "results.json").read_text())
    assert results["items"] == "100:106" and results["languages"]["zh"]["n"] == 6
    rows = [json.loads(line) for line in (tmp_path / "a" / "samples" / "emotion_zh.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(100, 106))
    english = load_test_records(load_task("emotion"), "en", data_dir)
    assert [r["gold"] for r in rows] == [english[i]["answer"] for i in range(100, 106)]
    # --limit keeps meaning "the first N" (of the range, when both are given)
    assert _eval(tiny_gemma, data_dir, tmp_path / "b", "--items", "100:106", "--limit", "2") == 0
    rows = (tmp_path / "b" / "samples" / "emotion_en.jsonl").read_text().splitlines()
    assert [json.loads(r)["index"] for r in rows] == [100, 101]


@pytest.mark.slow
@pytest.mark.parametrize(
    "items,message",
    [
        ("500:250", "start must be below stop"),
        ("0:9999", "out of range"),
        ("a:b", "expected START:STOP"),
    ],
)
def test_eval_bad_ranges_one_line(tiny_gemma, data_dir, tmp_path, capsys, items, message):
    assert _eval(tiny_gemma, data_dir, tmp_path / "o", "--items", items) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and not (tmp_path / "o").exists()


def _adapter(base: Path, folder: Path, task: str, items: str) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    net = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base),
        LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    net.save_pretrained(folder)
    write_provenance(folder, [{"task": task, "items": items, "pairs": 10}])
    return folder


@pytest.mark.slow
def test_leak_guard_refuses_overlap_unless_allowed(tiny_gemma, data_dir, tmp_path, capsys):
    adapter = _adapter(tiny_gemma, tmp_path / "adapter", "emotion", "250:500")
    out = tmp_path / "o"
    assert _eval(tiny_gemma, data_dir, out, "--adapter", str(adapter), "--items", "240:260") == 2
    err = capsys.readouterr().err.strip()
    assert "trained on emotion items 250:500" in err and "overlaps 250:260" in err and len(err.splitlines()) == 1
    assert not out.exists()
    # the whole test set (no range, no limit) overlaps too
    assert _eval(tiny_gemma, data_dir, out, "--adapter", str(adapter)) == 2
    assert "overlaps 250:500" in capsys.readouterr().err
    assert _eval(tiny_gemma, data_dir, out, "--adapter", str(adapter), "--items", "240:260", "--limit", "3") == 0
    assert (
        _eval(tiny_gemma, data_dir, tmp_path / "p", "--adapter", str(adapter), "--items", "248:252", "--allow-overlap")
        == 0
    )
    results = json.loads((tmp_path / "p" / "results.json").read_text())
    assert results["trained_on"] == [{"task": "emotion", "items": "250:500"}]


@pytest.mark.slow
@pytest.mark.parametrize("command", ["lens", "pca"])
def test_leak_guard_in_lens_and_pca(tiny_gemma, data_dir, tmp_path, capsys, command):
    adapter = _adapter(tiny_gemma, tmp_path / "adapter", "emotion", "0:50")
    args = [
        command,
        "--model",
        str(tiny_gemma),
        "--compare-adapter",
        str(adapter),
        "--task",
        "emotion",
        "--langs",
        "en,zh",
        "--limit",
        "3",
        "--data-dir",
        str(data_dir),
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(args) == 2
    assert "overlaps 0:3" in capsys.readouterr().err and not (tmp_path / "o").exists()
    assert main(args + ["--items", "50:53"]) == 0


def _experiment(tmp_path: Path, **top) -> Path:
    import yaml

    spec = {
        "models": ["gemma-3-270m"],
        "tasks": ["emotion"],
        "alignment": [
            {"name": "zh-es", "task": "emotion", "sources": ["zh", "es"], "items": "250:500", "per_language": 250}
        ],
        **top,
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


def test_experiment_guard_and_dry_run(data_dir, tmp_path, capsys):
    from polyalign.study.experiment_spec import load_experiment

    assert load_experiment(_experiment(tmp_path, items="0:250")).alignment[0].items == "250:500"
    with pytest.raises(PolyalignError, match="trained on emotion items 250:500.*overlaps 250:500"):
        load_experiment(_experiment(tmp_path))  # every item: overlaps
    with pytest.raises(PolyalignError, match="overlaps 250:260"):
        load_experiment(
            _experiment(
                tmp_path, items="0:250", analyses={"lens": {"task": "emotion", "langs": ["zh"], "items": "240:260"}}
            )
        )
    load_experiment(_experiment(tmp_path, allow_overlap=True))
    with pytest.raises(PolyalignError, match="items a:b: expected START:STOP"):
        load_experiment(_experiment(tmp_path, items="a:b"))
    path = _experiment(tmp_path, items="0:250", data_dir=str(data_dir))
    assert main(["run", str(path), "--dry-run"]) == 0
    assert main(["run", str(path), "--dry-run", "items=600:9999"]) == 2
    assert "out of range" in capsys.readouterr().err
