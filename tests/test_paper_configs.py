"""configs/paper/*.yaml: one experiment per result of the paper, validated with the loader that
`polyalign run` uses (and checked against the benchmark data), without running anything."""
from pathlib import Path

import pytest

from polyalign.experiment import validate_experiment
from polyalign.languages import PAPER_LANGUAGES
from polyalign.training import TrainConfig

PAPER = Path(__file__).resolve().parents[1] / "configs" / "paper"
FILES = sorted(PAPER.glob("*.yaml"))
EXPECTED = {"table1_emotion", "table2_model_sizes", "table3_tasks", "table4_target_language", "table5_cross_task",
            "table6_output_types", "figure1_lens", "figure2_pca"}


def load(name, data_dir, monkeypatch):
    monkeypatch.setenv("POLYALIGN_DATA", str(data_dir))
    return validate_experiment(PAPER / f"{name}.yaml", data=True)


def test_one_file_per_result():
    assert {p.stem for p in FILES} == EXPECTED


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_paper_config_is_valid(path, data_dir, monkeypatch):
    exp, notes = load(path.stem, data_dir, monkeypatch)
    assert exp.models and all(isinstance(m, str) and "/" in m for m in exp.models)  # hub ids
    assert exp.limit is None and exp.prompts == "prompts.json"
    for s in exp.alignment:
        assert s.per_language == 10000
        assert set(s.train) <= set(TrainConfig.__dataclass_fields__)
    # the only inputs a GPU user must add are the emotion training questions (not in the benchmark)
    assert all("emotion_en10k_train.jsonl" in n for n in notes)
    assert bool(notes) == any(s.task == "emotion" for s in exp.alignment)


def test_paper_settings(data_dir, monkeypatch):
    exp = {name: load(name, data_dir, monkeypatch)[0] for name in EXPECTED}
    t1 = exp["table1_emotion"]
    assert t1.tasks == ["emotion"] and t1.modes == ["english"] and t1.languages == ["all"]
    assert len(PAPER_LANGUAGES) == 20
    assert [(s.sources, s.target) for s in t1.alignment] == [(["zh", "es"], "en")]
    assert any("Qwen1.5" in m for m in t1.models) and "mistralai/Mistral-7B-v0.1" in t1.models
    assert exp["table2_model_sizes"].models == ["Qwen/Qwen1.5-1.8B", "Qwen/Qwen1.5-4B", "Qwen/Qwen1.5-14B",
                                                "mistralai/Mistral-7B-v0.1"]
    t3 = exp["table3_tasks"]
    assert t3.tasks == ["emotion", "snli", "paws"] and [(s.task, s.tasks) for s in t3.alignment] == \
        [("emotion", ["emotion"]), ("snli", ["snli"]), ("paws", ["paws"])]
    assert {(tuple(s.sources), s.target) for s in exp["table4_target_language"].alignment} >= \
        {(("zh", "es"), "it"), (("ja", "it"), "zh")}
    t5 = exp["table5_cross_task"]
    assert [s.task for s in t5.alignment] == ["snli"] and {"emotion", "paws"} <= set(t5.tasks)
    assert exp["table6_output_types"].modes == ["english", "native", "agnostic"]
    lens = exp["figure1_lens"].analyses.lens[0]
    assert lens.mode == "native" and lens.langs[:3] == ["zh", "ja", "ru"]
    pca = exp["figure2_pca"].analyses.pca[0]
    assert pca.langs == ["en", "de", "fr", "hi", "th", "sw", "ms"]
