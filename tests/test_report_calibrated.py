"""The report's calibrated views on a synthetic store whose 'aligned' model only shifts the label
prior: raw accuracy jumps, calibrated accuracy and AUC do not; and on a real (tiny-model) eval,
the report recomputes from the store exactly what results.json says."""

import json
import math
from pathlib import Path

import pytest

from helpers import PAPER_PACK, write_run_store
from polyalign.cli.demo import print_headline
from polyalign.evaluation.calibration import roc_auc
from polyalign.reports.calibrated import auc_of, calibrate_run, headline_table, with_calibration
from polyalign.reports.report import build_tables, load_run, write_report
from polyalign.study.store import Store

N = 40
LANGS = ("en", "de", "fr")


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def gold(i: int) -> str:
    return "positive" if i % 2 == 0 else "negative"


def margin(i: int) -> float:
    """The model's log-odds of positive: right by 3 on every item but 0 and 1 (wrong by 1)."""
    sign = 1.0 if gold(i) == "positive" else -1.0
    return -sign if i in (0, 1) else 3.0 * sign


def shift_run(run_dir: Path, unscored: tuple = ()) -> Path:
    """base = the same model with +4 on the positive log-odds (answers positive everywhere),
    aligned 'qa' without it: same ranking of the items, only the prior moved."""
    experiment = {"name": "shift", "models": ["m"], "tasks": ["emotion"], "modes": ["english"]}
    experiment["alignment"] = [{"name": "qa", "task": "emotion", "sources": ["de"], "target": "en"}]
    samples = {}
    for setting, bias in (("base", 4.0), ("qa", 0.0)):
        rows = []
        for lang in LANGS:
            for i in range(N):
                odds = margin(i) + bias
                scores = {"positive": log_sigmoid(odds), "negative": log_sigmoid(-odds)}
                if (setting, lang, i) in unscored:
                    scores = None
                pred = "positive" if odds > 0 else "negative"
                rows.append({"lang": lang, "idx": i, "gold": gold(i), "pred": pred, "scores": scores})
        samples[("m", setting, "emotion", "english", "exact")] = rows
    return write_run_store(run_dir, experiment, samples)


def test_a_prior_shift_is_a_raw_gain_only(tmp_path):
    run = load_run(shift_run(tmp_path / "run"))
    tables = {t.name: t for t in with_calibration(run, build_tables(run))}
    names = [t.name for t in with_calibration(run, build_tables(run))]
    assert names[:2] == ["per_language", "headline"] and names[-4:] == [
        "significance_calibrated",
        "pooled_calibrated",
        "auc",
        "label_distribution_calibrated",
    ]
    t1 = tables["per_language"]
    assert t1.header == ["language", "m / base", "m / qa", "m / base cal", "m / qa cal", "m / base AUC", "m / qa AUC"]
    # base: every negative wrong; calibrated only item 1 (p 0.993 over the mean 0.870) stays wrong;
    # qa calibrated misses items 0 and 1; AUC (20 x 20 pairs, one lost: item 0 under item 1) the same
    assert t1.rows[0][1:] == pytest.approx([0.5, 38 / 40, 39 / 40, 38 / 40, 399 / 400, 399 / 400])
    assert t1.rows[0][0] == "en †" and t1.rows[-1][0] == "average"
    head = {r[1]: r for r in tables["headline"].rows}
    assert list(head) == ["seen", "unseen", "all"]
    row = head["all"]
    assert row[2] == pytest.approx(0.45) and row[3] == pytest.approx(2 * 21 / 2**20)  # 19 items better, 1 worse
    assert row[4] == pytest.approx(-0.025) and row[5] == 1.0  # calibrated: one item lost per language
    assert row[6:9] == [0.0, 0.0, 0.0]  # ΔAUC and its CI: the ranking did not move
    assert row[9:] == ["positive", 0.5, 1.0, 0.5, pytest.approx(21 / 40), 0.5]
    cal = {r[1]: r for r in tables["significance_calibrated"].rows}
    assert [cal[lang][8:10] for lang in LANGS] == [[0, 1]] * 3
    pooled = {r[1]: r for r in tables["pooled_calibrated"].rows}
    assert pooled["all"][9:11] == [0, 3] and pooled["all"][12:14] == [0, 1]
    assert tables["pooled_calibrated"].title.startswith("Table C2 — batch-calibrated: aligned vs base pooled")
    auc = {r[1]: r for r in tables["auc"].rows}
    assert auc["fr"][2:] == [N, pytest.approx(0.9975), pytest.approx(0.9975), 0.0, 0.0, 0.0]
    assert auc["pooled: all"][2] == 3 * N
    dist = {r[0]: r for r in tables["label_distribution_calibrated"].rows}
    assert dist["all languages — m / base"][2] == pytest.approx(21 / 40)


def test_unscored_items_count_wrong_and_leave_the_auc(tmp_path):
    run = load_run(shift_run(tmp_path / "run", unscored=(("qa", "en", 2), ("base", "de", 4))))
    cal = calibrate_run(run)
    assert cal.labels[("m", "qa", "emotion", "english", "exact")]["en"][2] == ("positive", None)
    assert not cal.correct[("m", "qa", "emotion", "english", "exact")]["en"][2]
    assert cal.accuracy(("m", "qa"), ("emotion", "english", "exact"), "en") == pytest.approx(37 / 40)
    # 19 positives x 20 negatives, one pair lost
    assert auc_of(run, ("m", "qa"), ("emotion", "english", "exact"), "en") == pytest.approx(379 / 380)
    auc = {r[1]: r for r in headline_table(run).rows}
    assert auc["all"][6] == 0.0  # item 4 of de left out of both models: the same ranking still
    md = write_report(run.run_dir, "md").read_text()
    assert "## Headline — aligned vs base" in md and "## Table C3 — ROC-AUC" in md


def test_demo_headline_prints_raw_calibrated_and_delta_auc(tmp_path, capsys):
    print_headline(shift_run(tmp_path / "run"))
    out = capsys.readouterr().out
    assert "| Δ raw (pp) | p items raw | Δ cal (pp) | p items cal | ΔAUC |" in out
    assert "| m / qa — emotion (english labels, exact) | all | +45.0 |" in out
    assert "aligned vs base pooled over languages" in out


@pytest.mark.slow
@pytest.mark.parametrize("rule", ["prefix", "exact"])
def test_real_eval_results_json_and_report_agree(tiny_gemma, data_dir, tmp_path, rule):
    """A real evaluation's results.json holds calibrated accuracy and AUC; a store filled from its
    samples alone (a run made before this change) gives the same numbers in the report."""
    from polyalign.engine.models import load_model
    from polyalign.evaluation.evaluate import EvalConfig, run_eval

    model, tok = load_model(str(tiny_gemma))
    cfg = EvalConfig(str(tiny_gemma), "emotion", "en,zh", "english", rule, limit=12, data_dir=str(data_dir))
    cfg.prompts, cfg.batch_size = str(PAPER_PACK), 4
    results = run_eval(cfg, model, tok, tmp_path / "eval", progress=False)
    assert results is not None
    run_dir = tmp_path / "run"
    with Store(run_dir) as store:
        store.set_meta("experiment", {"models": ["t"], "tasks": ["emotion"], "modes": ["english"]})
        rows = []
        for lang in ("en", "zh"):
            for line in (tmp_path / "eval" / "samples" / f"emotion_{lang}.jsonl").read_text().splitlines():
                r = json.loads(line)
                rows.append(
                    {"lang": lang, "idx": r["index"], "gold": r["gold"], "pred": r["pred"], "scores": r["scores"]}
                )
        labels = {"model": "t", "setting": "base", "task": "emotion", "mode": "english", "scoring": rule}
        store.replace_samples("s", labels, rows)
    run = load_run(run_dir)
    cal, condition = calibrate_run(run), ("emotion", "english", rule)
    for lang, entry in results["languages"].items():
        assert entry["calibrated_accuracy"] == cal.accuracy(("t", "base"), condition, lang)
        assert entry["auc"] == auc_of(run, ("t", "base"), condition, lang) and entry["calibration_unscored"] == 0
        samples = [r for r in rows if r["lang"] == lang]
        if rule == "prefix":
            odds = [math.log(r["scores"]["positive"] / r["scores"]["negative"]) for r in samples]
        else:
            odds = [r["scores"]["positive"] - r["scores"]["negative"] for r in samples]
        assert entry["auc"] == pytest.approx(roc_auc(odds, [r["gold"] == "positive" for r in samples]))
    assert results["average_auc"] == pytest.approx(sum(v["auc"] for v in results["languages"].values()) / 2)
    t1 = next(t for t in with_calibration(run, build_tables(run)) if t.name == "per_language")
    assert t1.header == ["language", "t / base", "t / base cal", "t / base AUC"]
    assert t1.rows[-1][2] == pytest.approx(results["average_calibrated_accuracy"])
