"""Training seeds and shuffled-pairing controls: the derangement, the declarations, the plan (one
train step per seed, keys unchanged without `seeds`), the dry run, and the report's seed and
control tables on a synthetic store; one slow run end to end on a tiny random model."""

from collections import Counter

import pytest

from helpers import write_experiment, write_run_store
from polyalign.alignment.alignment_data import PairRequest, build_pairs, derangement
from polyalign.cli import main
from polyalign.core.errors import PolyalignError
from polyalign.core.prompts import PromptPack
from polyalign.evaluation.stats import sign_test
from polyalign.reports.report import write_report
from polyalign.reports.run_data import load_run
from polyalign.reports.seeds import control_table, seeds_table
from polyalign.reports.tables import build_tables
from polyalign.study.experiment import Runner
from polyalign.study.experiment_spec import load_experiment
from polyalign.study.variants import seeded_name, split_seeded

SETTING = {"task": "emotion", "sources": ["zh", "es"], "target": "en", "items": "250:300", "per_language": 16}
CONTROL = {**SETTING, "name": "ctl", "pairing": "shuffled", "control_of": "al", "seeds": [0, 1]}


def test_derangement_properties():
    for n in range(2, 40):
        items = list(range(100, 100 + n))
        for seed in range(5):
            order = derangement(items, seed)
            assert sorted(order) == items and all(a != b for a, b in zip(items, order))
            assert order == derangement(items, seed)  # seeded: reproducible
    items = list(range(50))
    assert derangement(items, 0) != derangement(items, 1)
    assert derangement(items, "0:zh") == derangement(items, "0:zh") != derangement(items, "0:es")
    for few in ([], [7]):
        with pytest.raises(PolyalignError, match="at least 2 items"):
            derangement(few, 0)
    with pytest.raises(PolyalignError, match="distinct"):
        derangement([1, 1, 2], 0)


def test_shuffled_pairs_keep_every_question(data_dir):
    pack = PromptPack.load(None)
    parallel = build_pairs(PairRequest("emotion", ["zh", "es"], "en", 10, 0, data_dir, pack, items="250:300"))
    shuffled = build_pairs(
        PairRequest("emotion", ["zh", "es"], "en", 10, 0, data_dir, pack, items="250:300", pairing="shuffled")
    )
    assert shuffled == build_pairs(
        PairRequest("emotion", ["zh", "es"], "en", 10, 0, data_dir, pack, items="250:300", pairing="shuffled")
    )
    for field in ("prompt", "completion"):  # same multisets of source texts and of target texts
        assert Counter(r[field] for r in shuffled) == Counter(r[field] for r in parallel)
    by_item = {(r["source_lang"], r["index"]): r["completion"] for r in parallel}
    for row in shuffled:
        assert row["target_index"] != row["index"] and 250 <= row["target_index"] < 300
        assert row["completion"] == by_item[(row["source_lang"], row["target_index"])]
    assert all("target_index" not in r for r in parallel)
    with pytest.raises(PolyalignError, match="at least 2 items"):
        build_pairs(PairRequest("emotion", ["zh"], "en", 1, 0, data_dir, pack, items="250:251", pairing="shuffled"))
    with pytest.raises(PolyalignError, match="unknown pairing"):
        build_pairs(PairRequest("emotion", ["zh"], "en", 2, 0, data_dir, pack, items="250:260", pairing="crossed"))


def _experiment(tmp_path, data_dir, alignment, **top):
    return write_experiment(tmp_path, data_dir, alignment, **top)


def test_declarations_are_checked(tmp_path, data_dir):
    al = {**SETTING, "name": "al", "seeds": [0, 1]}
    load_experiment(_experiment(tmp_path, data_dir, [al, CONTROL]))
    cases = [
        ([{**al, "seeds": [1, 1]}], "distinct"),
        ([{**al, "seeds": []}], "distinct"),
        ([{**al, "name": "a@s1"}], "distinct words"),
        ([al, {**CONTROL, "control_of": None}], "control_of"),
        ([al, {**CONTROL, "control_of": "nope"}], "control_of"),
        ([{**al, "control_of": "ctl"}, CONTROL], "pairing: shuffled"),
        ([al, {**CONTROL, "sources": ["zh"]}], "sources differ"),
        ([al, {**CONTROL, "per_language": 8}], "per_language differ"),
        ([al, {**CONTROL, "pairing": "crossed"}], "alignment 'ctl': invalid pairing 'crossed'"),
        ([al, {**CONTROL, "items": "250:251", "per_language": 1}], "at least 2 items"),
    ]
    for alignment, message in cases:
        with pytest.raises(PolyalignError, match=message):
            load_experiment(_experiment(tmp_path, data_dir, alignment))


def test_plan_one_train_step_per_seed_and_keys_kept_without_seeds(tmp_path, data_dir):
    def plan(alignment):
        exp = load_experiment(_experiment(tmp_path, data_dir, alignment))
        return Runner(exp, None, tmp_path).plan()

    plain = plan([{**SETTING, "name": "al"}])
    seeded = plan([{**SETTING, "name": "al", "seeds": [0, 1, 2], "pairing": "parallel"}, CONTROL])
    kinds = Counter(s.kind for s in seeded)
    assert kinds == {"data": 2, "train": 5, "eval": 6}
    train = {s.label.split(" + ")[1]: s for s in seeded if s.kind == "train"}
    assert list(train) == ["al@s0", "al@s1", "al@s2", "ctl@s0", "ctl@s1"]
    assert len({s.key for s in train.values()}) == 5  # the seed is in each step's identity
    assert [train[f"al@s{k}"].config["train"]["seed"] for k in range(3)] == [0, 1, 2]
    old = {s.kind: s for s in plain}  # the recipe's seed is 0: seeds [0] is the step of no seeds
    assert seeded[0].key == old["data"].key and train["al@s0"].key == old["train"].key
    assert seeded[1].key != seeded[0].key and seeded[1].config["pairing"] == "shuffled"
    assert "pairing" not in seeded[0].config and "seeds" not in seeded[0].config
    evals = [s.config["labels"]["setting"] for s in seeded if s.kind == "eval"]
    assert evals == ["base", "al@s0", "al@s1", "al@s2", "ctl@s0", "ctl@s1"]
    assert [s.config["adapter"] for s in seeded if s.kind == "eval"][1:] == [s.key for s in train.values()]


def test_dry_run_counts_seeds_and_controls(tmp_path, data_dir, capsys):
    path = _experiment(tmp_path, data_dir, [{**SETTING, "name": "al", "seeds": [0, 1, 2]}, CONTROL])
    assert main(["run", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "al: parallel pairing; 3 train (seeds 0, 1, 2): al@s0, al@s1, al@s2" in out
    assert "ctl: control of al (shuffled pairing); 2 train (seeds 0, 1): ctl@s0, ctl@s1" in out
    assert "valid; 2 data, 5 train, 6 eval, 0 lens, 0 pca steps" in out
    assert main(["run", "examples/emotion_study", "--dry-run", "--data-dir", str(data_dir)]) == 0
    assert "valid; 3 data, 6 train, 7 eval" in capsys.readouterr().out


def test_names():
    assert seeded_name("zh-es_en", 2) == "zh-es_en@s2" and seeded_name("zh-es_en", None) == "zh-es_en"
    assert split_seeded("zh-es_en@s12") == ("zh-es_en", 12) and split_seeded("base") == ("base", None)


# right answers per (stored name): items i < RIGHT are correct in every language
RIGHT = {"base": 16, "al@s0": 24, "al@s1": 28, "al@s2": 20, "ctl@s0": 16, "ctl@s1": 18}
N = 40


def fake_run(run_dir):
    experiment = {"name": "seeds", "models": ["org/m"], "tasks": ["emotion"], "modes": ["english"]}
    experiment["alignment"] = [{**SETTING, "name": "al", "seeds": [0, 1, 2]}, CONTROL]
    samples = {
        ("org/m", name, "emotion", "english", "exact"): [
            {"lang": lang, "idx": i, "gold": "joy", "pred": "joy" if i < right else "anger", "scores": None}
            for lang in ("en", "zh", "fr")
            for i in range(N)
        ]
        for name, right in RIGHT.items()
    }
    return write_run_store(run_dir, experiment, samples)


def test_report_groups_seeds_and_compares_the_control(tmp_path):
    run = load_run(fake_run(tmp_path / "run"))
    seeds = seeds_table(run)
    assert [r[0] for r in seeds.rows] == [
        "org/m / al — emotion (english labels, exact)",
        "org/m / ctl — emotion (english labels, exact)",
    ]
    row = dict(zip(seeds.header, seeds.rows[0]))
    assert row["seeds"] == "0,1,2" and row["Δ per seed (pp)"] == "+20.0, +30.0, +10.0"
    assert row["base"] == pytest.approx(0.4) and row["aligned (seed mean)"] == pytest.approx(0.6)
    assert row["Δ mean"] == pytest.approx(0.2) and row["Δ sd"] == pytest.approx(0.1)
    assert row["Δ (pp)"] == pytest.approx(0.2) and row["Δ CI low"] <= 0.2 <= row["Δ CI high"]
    assert (row["pairs better"], row["pairs worse"], row["n pairs"]) == (36, 0, 3 * N)  # items 16:28, 3 languages
    assert (row["items better"], row["items worse"]) == (12, 0) and row["p items"] == sign_test(12, 0)
    assert (0, 8) in seeds.best
    control = control_table(run)
    assert len(control.rows) == 1
    row = dict(zip(control.header, control.rows[0]))
    assert row["model / aligned vs control — condition"].startswith("org/m / al vs ctl")
    assert (row["seeds aligned"], row["seeds control"]) == ("0,1,2", "0,1")
    assert row["control"] == pytest.approx(0.425) and row["Δ control - base"] == pytest.approx(0.025)
    assert row["Δ (pp)"] == pytest.approx(0.6 - 0.425)  # aligned - control, seed means paired by item
    assert row["items better"] == 12 and row["items worse"] == 0
    table = control_table(run, cal=run)  # the raw run in the place of its calibrated copy: same numbers
    hooked = dict(zip(table.header, table.rows[0]))
    assert hooked["Δ calibrated (pp)"] == row["Δ (pp)"] and hooked["p items calibrated"] == row["p items"]
    assert "Δ calibrated (pp)" not in control.header
    tables = {t.name: t for t in build_tables(run)}
    assert tables["seen_unseen"].rows[0][1] == "en,zh"  # a seed's adapter has its setting's languages
    report = write_report(tmp_path / "run", "md").read_text()
    assert "Seeds — aligned vs base" in report and "Control — aligned vs shuffled-pairing control" in report
    assert "Control of al: pairs shuffled across items." in report and "Seeds 0, 1, 2" in report
    assert "raw and batch-calibrated accuracy" in report and "Δ calibrated (pp)" in report


@pytest.mark.slow
def test_seeds_and_control_run_end_to_end(tiny_llama, data_dir, tmp_path):
    train = {"max_steps": 1, "per_device_batch": 2, "val_size": 0.0, "cutoff_len": 256, "save_steps": 1}
    al = {**SETTING, "name": "al", "seeds": [0, 1], "per_language": 4, "train": train}
    path = _experiment(
        tmp_path,
        data_dir,
        [al, {**al, "name": "ctl", "pairing": "shuffled", "control_of": "al", "seeds": [0]}],
        models=[str(tiny_llama)],
        items="0:4",
        batch_size=4,
    )
    assert main(["run", str(path), "--out", str(tmp_path / "run")]) == 0
    pairs = [p.read_text() for p in sorted((tmp_path / "run" / "steps").glob("data-*/pairs.jsonl"))]
    assert len(pairs) == 2 and sum("target_index" in text for text in pairs) == 1
    assert len(list((tmp_path / "run" / "steps").glob("train-*/done.json"))) == 3
    run = load_run(tmp_path / "run")
    assert [v[1] for v in run.variants()] == ["base", "al@s0", "al@s1", "ctl@s0"]
    assert len(seeds_table(run).rows) == 1 and len(control_table(run).rows) == 1
    assert main(["report", str(tmp_path / "run"), "--format", "md"]) == 0
