"""Claims rules that mean nothing are refused at load; a part with no evidence is never supported;
a claims block edited after the results is said so in CLAIMS.md."""

import pytest
import yaml

from helpers import write_run_store
from polyalign.core.config import build
from polyalign.core.errors import PolyalignError
from polyalign.reports.claims import evaluate_claims
from polyalign.reports.claims_report import write_claims
from polyalign.reports.run_data import load_run
from polyalign.study.claims_history import record_claims_change
from polyalign.study.claims_spec import ClaimsSpec
from polyalign.study.experiment_spec import load_experiment
from polyalign.study.store import Store

PART = {"name": "gain", "treatment": {"setting": "al"}, "reference": {"setting": "base"}}
BASE = {
    "models": ["gemma-3-270m"],
    "alignment": [{"name": "al", "task": "emotion", "sources": ["zh"], "target": "en", "items": "250:500"}],
    "languages": ["en", "de"],
    "items": "0:50",
    "analyses": {"pca": [{"task": "emotion", "langs": ["en", "de"]}]},
}


def load_with_part(tmp_path, **change):
    claim = {"id": "1", "statement": "s", "paper": "T1", "comparison": "c", "parts": [{**PART, **change}]}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({**BASE, "claims": {"claims": [claim]}}))
    return load_experiment(path)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"test": "equivalence", "margin": float("inf")}, "margin inf must be a number in (0, 1]"),
        ({"test": "equivalence", "margin": 5.0}, "margin 5.0 must be a number in (0, 1] (a fraction"),
        ({"min_effect": 2.0}, "min_effect 2.0 must be a number in [0, 1]"),
        ({"min_effect": float("nan")}, "min_effect nan must be a number"),
        ({"min_effect": float("inf")}, "min_effect inf must be a number"),
        ({"measure": "pca", "test": "bootstrap", "min_effect": 2.5}, "min_effect 2.5 must be a number in [0, 2]"),
        ({"measure": "pca", "test": "equivalence", "margin": 0.1}, "pca part tests Pearson r by bootstrap"),
        ({"test": "equivalence", "margin": 0.05, "min_effect": 0.02}, "min_effect is for a claimed gain"),
        ({"measure": "lens", "quantity": []}, "a lens part names at least one quantity"),
        ({"reference": {"setting": "al"}}, "treatment and reference are the same arm"),
        ({"treatment": {"setting": "base"}, "mode": "english"}, "treatment and reference are the same arm"),
    ],
)
def test_meaningless_rules_are_refused_at_load(tmp_path, change, message):
    with pytest.raises(PolyalignError) as err:
        load_with_part(tmp_path, **change)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert str(err.value).startswith("claim 1, part 'gain'")


@pytest.mark.parametrize(
    "change",
    [
        {"test": "equivalence", "margin": 1.0},  # 100 points: the most an accuracy can move
        {"min_effect": 0.02},
        {"measure": "pca", "test": "bootstrap", "min_effect": 1.5},  # r differences reach 2
        {"treatment": {"setting": "base", "mode": "native"}, "reference": {"setting": "base"}},
    ],
)
def test_meaningful_rules_load(tmp_path, change):
    assert load_with_part(tmp_path, **change).claims is not None


def test_invalid_values_read_as_such(tmp_path):
    with pytest.raises(PolyalignError, match=r"^claim 1, part 'gain': invalid measure 'f1' \(choose from"):
        load_with_part(tmp_path, measure="f1")


def tied_run(tmp_path, claims: list[dict], n_items: int = 4):
    """A store whose base and aligned arms answer every item alike (all ties)."""
    run_dir = tmp_path / "run"
    setting = {"name": "al", "task": "emotion", "sources": ["zh"], "target": "en"}
    experiment = {"name": "t", "models": ["m"], "tasks": ["emotion"], "modes": ["english"], "scoring": "exact"}
    experiment |= {"alignment": [setting], "claims": {"claims": claims}}
    rows = [
        {"lang": lang, "idx": i, "gold": "positive", "pred": "positive" if i % 2 else "negative"}
        | {"scores": {"positive": 0.6, "negative": 0.4}}
        for lang in ("en", "de")
        for i in range(n_items)
    ]
    samples = {("m", name, "emotion", "english", "exact"): rows for name in ("base", "al")}
    return write_run_store(run_dir, experiment, samples)


def claim(cid: str, **part) -> dict:
    return {"id": cid, "statement": "s", "paper": "T", "comparison": "c", "parts": [{**PART, **part}]}


def test_a_part_with_no_informative_item_is_inconclusive(tmp_path):
    claims = [claim("eq", test="equivalence", margin=0.05), claim("gain", min_effect=0.02), claim("any")]
    run = load_run(tied_run(tmp_path, claims))
    found = {r.claim.id: r for r in evaluate_claims(run, build(ClaimsSpec, run.experiment["claims"], "claims"))}
    assert {cid: r.verdict for cid, r in found.items()} == dict.fromkeys(["eq", "gain", "any"], "inconclusive")
    assert "no item differs between the arms" in found["eq"].reason


def test_claims_edited_after_results_are_reported(tmp_path):
    run_dir = tied_run(tmp_path, [claim("1", min_effect=0.02)])
    out = write_claims(run_dir, tmp_path / "before.md")
    assert "Rules changed after the results" not in out.read_text()
    with Store(run_dir) as store:  # what a re-run with an edited block does before storing it
        experiment = store.get_meta("experiment")
        edited = {**experiment, "claims": {"claims": [claim("1", min_effect=0.0)]}}
        changes = record_claims_change(store, edited)
        store.set_meta("experiment", edited)
        assert record_claims_change(store, edited) == []  # the same block again: nothing new
    assert changes == ["claims.claims[id 1].parts[name gain].min_effect: 0.02 -> 0.0"]
    text = write_claims(run_dir, tmp_path / "after.md").read_text()
    assert text.startswith("# The paper's claims")
    assert "**Rules changed after the results.**" in text and "min_effect: 0.02 -> 0.0" in text


def test_a_first_claims_block_before_any_result_is_no_change(tmp_path):
    with Store(tmp_path / "run") as store:
        store.set_meta("experiment", {"models": ["m"]})
        assert record_claims_change(store, {"models": ["m"], "claims": {"claims": []}}) == []


def test_a_rerun_with_an_edited_block_records_the_change(tmp_path, data_dir):
    """The runner itself records the change before it stores the new block (no step runs)."""
    from polyalign.study.experiment import Runner

    run_dir = tied_run(tmp_path, [claim("1", min_effect=0.02)])
    exp = load_with_part(tmp_path, min_effect=0.05)
    exp.data_dir = str(data_dir)
    logged: list[str] = []
    runner = Runner(exp, run_dir)
    try:
        runner.execute([], logged.append)
    finally:
        runner.store.close()
    assert any("claims block changed after the run held results" in line for line in logged)
    text = write_claims(run_dir, tmp_path / "CLAIMS.md").read_text()
    assert "min_effect: 0.02 -> 0.05" in text
