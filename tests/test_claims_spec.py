"""The claims block is validated strictly at load time, and the packaged claims study validates."""

import pytest
import yaml

from polyalign.cli import main
from polyalign.core.errors import PolyalignError
from polyalign.study.claims_spec import LENS_QUANTITIES
from polyalign.study.experiment import validate_experiment
from polyalign.study.experiment_files import packaged_config
from polyalign.study.experiment_spec import load_experiment

PART = {"name": "p", "treatment": {"setting": "al"}, "reference": {"setting": "base"}}
CLAIM = {"id": "1", "statement": "s", "paper": "Table 1", "comparison": "c", "parts": [PART]}
BASE = {
    "models": ["gemma-3-270m"],
    "alignment": [{"name": "al", "task": "emotion", "sources": ["zh"], "target": "en", "items": "250:500"}],
    "languages": ["en", "de"],
    "items": "0:50",
}


def write(tmp_path, claims) -> str:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({**BASE, "claims": claims}))
    return str(path)


def with_part(**change) -> dict:
    return {"claims": [{**CLAIM, "parts": [{**PART, **change}]}]}


@pytest.mark.parametrize(
    "claims, message",
    [
        ({"claims": [CLAIM], "extra": 1}, "unknown key(s) extra"),
        ({"claims": [{**CLAIM, "parts": [{**PART, "tset": "sign"}]}]}, "unknown key(s) tset"),
        ({"claims": [{k: v for k, v in CLAIM.items() if k != "statement"}]}, "missing required key(s) statement"),
        (with_part(treatment={"setting": "zh-es_en"}), "unknown setting 'zh-es_en'"),
        (with_part(model="smollm2-135m"), "model 'smollm2-135m' is not among"),
        (with_part(test="equivalence"), "equivalence test needs a margin"),
        (with_part(margin=0.03), "margin is for test: equivalence"),
        (with_part(test="ttest"), "claim 1, part 'p': invalid test 'ttest'"),
        (with_part(languages=["fr"]), "languages fr are not evaluated"),
        (with_part(task="snli"), "not evaluated on task 'snli'"),
        (with_part(measure="lens"), "no lens analysis"),
        (with_part(min_effect=-0.1), "min_effect must be >= 0"),
        (with_part(preconditions=[{"arm": {"setting": "base"}, "above": "half"}]), "precondition above"),
        (
            with_part(preconditions=[{"arm": {"setting": "base"}, "measure": "auc"}]),
            "invalid precondition measure 'auc'",
        ),
        ({"claims": [CLAIM, CLAIM]}, "each id once"),
        ({"claims": [CLAIM], "alpha": 0.7}, "claims.alpha"),
    ],
)
def test_malformed_claims_are_one_line_errors(tmp_path, claims, message):
    with pytest.raises(PolyalignError) as err:
        load_experiment(write(tmp_path, claims))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_dry_run_refuses_a_malformed_block(tmp_path, data_dir, capsys):
    path = write(tmp_path, with_part(treatment={"setting": "nope"}))
    assert main(["run", path, "--dry-run", "--data-dir", str(data_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown setting 'nope'" in err


def test_paper_claims_validates(data_dir, monkeypatch):
    monkeypatch.setenv("POLYALIGN_DATA", str(data_dir))
    exp, notes = validate_experiment(packaged_config("examples/paper_claims"), data=True)
    assert notes == [] and exp.claims is not None and exp.claims.correction == "holm"
    assert [c.id for c in exp.claims.claims] == [str(i) for i in range(1, 11)]
    assert exp.models == ["gemma-3-270m", "smollm2-135m"] and exp.items == "0:60"
    parts = [p for c in exp.claims.claims for p in c.parts]
    assert {p.measure for p in parts} == {"accuracy", "calibrated", "lens", "pca"}
    assert any(p.test == "equivalence" and p.margin for p in parts)
    assert all(s.items in (None, "250:500") for s in exp.alignment)  # held-out questions only


def test_lens_quantities_match_the_lens():
    from polyalign.analysis.lens import QUANTITIES

    assert set(LENS_QUANTITIES) <= set(QUANTITIES) and "entropy_bits" not in LENS_QUANTITIES
