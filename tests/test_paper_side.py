"""`polyalign paper-side`: the paper's Tables 1, 2 and 8-11 beside a run's per-item results, on a
synthetic run store and PCA folder whose answers are known."""

from __future__ import annotations

import json

import numpy as np
import pytest

from polyalign.cli.commands import main
from polyalign.reports.calibrated import calibrate_run
from polyalign.reports.paper_numbers import paper_table
from polyalign.reports.paper_side import average_rows, language_gains, pca_pairs
from polyalign.reports.run_data import load_run
from polyalign.study.store import Store

N = 100
MODEL = "org/small"
CONDITION = ("emotion", "english", "prefix")


def rows_for(right: list[bool]) -> list[dict]:
    rows = []
    for i, ok in enumerate(right):
        gold, other = ("positive", "negative") if i % 2 else ("negative", "positive")
        scores = {gold: 0.8 if ok else 0.2, other: 0.2 if ok else 0.8}
        rows.append({"idx": i, "gold": gold, "pred": gold if ok else other, "scores": scores})
    return rows


def fake_study(tmp_path, aligned_gain, aligned=("zh-es_en",)) -> tuple:
    """20 languages x N items: base right on half, each name of `aligned` on half + aligned_gain(lang) points."""
    run_dir = tmp_path / "run"
    t1 = paper_table("table1")
    experiment = {"name": "study", "models": [MODEL], "tasks": ["emotion"], "modes": ["english"], "scoring": "prefix"}
    experiment["alignment"] = [{"name": "zh-es_en", "task": "emotion", "sources": ["zh", "es"], "target": "en"}]
    gains = {}
    with Store(run_dir) as store:
        store.set_meta("experiment", experiment)
        for setting in ("base", *aligned):
            rows = []
            for lang in t1.columns:
                gains[lang] = int(round(aligned_gain(lang)))
                n_right = N // 2 + (gains[lang] if setting != "base" else 0)
                rows += [{"lang": lang, **r} for r in rows_for([i < n_right for i in range(N)])]
            labels = {"model": MODEL, "setting": setting, "task": "emotion", "mode": "english", "scoring": "prefix"}
            store.replace_samples(f"step-{setting}", labels, rows)
    return run_dir, gains


def table1_gain(lang: str) -> float:
    t1 = paper_table("table1")
    return t1.cell("zh/es => en", lang) - t1.cell("base", lang)


def test_per_language_gains_follow_the_paper_when_the_run_does(tmp_path):
    run_dir, planted = fake_study(tmp_path, table1_gain)
    run = load_run(run_dir)
    gains = language_gains(run, calibrate_run(run), MODEL, "zh-es_en", CONDITION)
    assert len(gains.langs) == 20 and gains.paper[gains.langs.index("is")] == pytest.approx(18.0)
    assert list(gains.raw) == pytest.approx([planted[lang] for lang in gains.langs])  # points, exact
    from polyalign.reports.paper_side import profile_correlation

    r = profile_correlation(gains.paper, gains.raw, gains.raw_boot)
    assert r[0] == pytest.approx(np.corrcoef(gains.paper, gains.raw)[0, 1]) and r[0] > 0.99 and r[1] > 0.9
    reversed_run, _ = fake_study(tmp_path / "rev", lambda lang: 10 - table1_gain(lang))
    run = load_run(reversed_run)
    flipped = language_gains(run, calibrate_run(run), MODEL, "zh-es_en", CONDITION)
    assert profile_correlation(flipped.paper, flipped.raw, flipped.raw_boot)[2] < 0  # the CI says so


def test_a_setting_trained_with_seeds_is_the_mean_of_its_adapters(tmp_path):
    """zh-es_en@s0 gains g, zh-es_en@s1 gains g + 4 on the same items: the setting gains g + 2."""
    run_dir, planted = fake_study(tmp_path, table1_gain, aligned=("zh-es_en@s0",))
    with Store(run_dir) as store:  # a second seed, 4 items more right in every language
        t1 = paper_table("table1")
        rows = []
        for lang in t1.columns:
            n_right = N // 2 + planted[lang] + 4
            rows += [{"lang": lang, **r} for r in rows_for([i < n_right for i in range(N)])]
        labels = {"model": MODEL, "setting": "zh-es_en@s1", "task": "emotion", "mode": "english", "scoring": "prefix"}
        store.replace_samples("step-zh-es_en@s1", labels, rows)
    run = load_run(run_dir)
    gains = language_gains(run, calibrate_run(run), MODEL, "zh-es_en", CONDITION)
    assert list(gains.raw) == pytest.approx([planted[lang] + 2 for lang in gains.langs])
    rows_by = {r.setting: r for r in average_rows(run, MODEL, CONDITION)}
    assert rows_by["zh/es => en"].ours[0] == pytest.approx(50 + np.mean([planted[g] for g in gains.langs]) + 2)


def test_table2_row_beside_our_averages(tmp_path):
    run_dir, planted = fake_study(tmp_path, lambda lang: 10)
    rows = {r.setting: r for r in average_rows(load_run(run_dir), MODEL, CONDITION)}
    assert rows["base"].paper == 68.35 and rows["zh/es => en"].paper == 76.13
    assert rows["base"].ours[0] == pytest.approx(50.0) and rows["zh/es => en"].ours[0] == pytest.approx(60.0)
    assert rows["zh/de => en"].ours is None  # the run has no such setting


def fake_pca(folder, base_noise: float, aligned_noise: float):
    """en, de, hi PC1 projections: de and hi = en + noise (less noise after alignment)."""
    rng = np.random.default_rng(0)
    layers, langs = [6, 12, 18], ["en", "de", "hi"]
    folder.mkdir(parents=True)
    files = {}
    for label, noise in (("base", base_noise), ("aligned", aligned_noise)):
        proj = np.zeros((len(layers), len(langs), 200, 2))
        en = rng.normal(size=(len(layers), 200))
        proj[:, 0, :, 0] = en
        for j in (1, 2):
            proj[:, j, :, 0] = en + noise * rng.normal(size=(len(layers), 200))
        files[label] = f"pca_{label}.npz"
        np.savez(folder / files[label], proj=proj, langs=np.array(langs), layers=np.array(layers))
    meta = {"task": "emotion", "layers": layers, "num_layers": 18, "langs": langs}
    meta |= {"models": list(files), "files": files}
    (folder / "pca.json").write_text(json.dumps(meta))


def test_pca_pairs_at_the_papers_relative_depth(tmp_path):
    fake_pca(tmp_path / "pca", base_noise=1.0, aligned_noise=0.2)
    pairs = pca_pairs(tmp_path / "pca")
    assert {p.pair for p in pairs} == {"en-de", "en-hi", "de-hi"}  # the Tables 8-11 pairs the folder holds
    l20 = next(p for p in pairs if p.pair == "en-hi" and p.paper_column == "Mistral-7B L20")
    assert (l20.paper_base, l20.paper_aligned, l20.our_layer) == (0.9268, 0.9526, 12)  # 20/32 ~ 12/18
    assert l20.our_base[0] == pytest.approx(1 / np.sqrt(2), abs=0.1) and l20.our_change[1] > 0.1


def test_the_command_writes_the_three_sections_and_the_figure(tmp_path):
    run_dir, _ = fake_study(tmp_path, table1_gain)
    fake_pca(tmp_path / "pca", base_noise=1.0, aligned_noise=0.2)
    out = tmp_path / "docs" / "side.md"
    assert main(["paper-side", str(run_dir), "--out", str(out), "--pca", str(tmp_path / "pca")]) == 0
    text = out.read_text()
    assert f"polyalign paper-side {run_dir} --out {out} --pca" in text
    assert "| is | +18.0 | +18.0 [" in text and "Pearson r +1.00 [" in text
    assert "| base | 68.35 | 50.0 [" in text and "| en-hi | Mistral-7B L20 | 0.9268 → 0.9526 (+0.0258) | 12 |" in text
    assert (tmp_path / "docs" / "side_table1_gains.png").stat().st_size > 1000
    assert main(["paper-side", str(run_dir), "--out", str(out), "--setting", "zh-fr_en"]) == 2  # one line, no table
