"""polyalign.reports.claims: pre-registered verdicts on hand-made per-item results (no model)."""

import json

import numpy as np
import pytest

from helpers import write_run_store
from polyalign.core.config import build
from polyalign.evaluation.stats import sign_test
from polyalign.reports.claims import evaluate_claims
from polyalign.reports.claims_report import write_claims
from polyalign.reports.run_data import load_run
from polyalign.study.claims_spec import ClaimsSpec
from polyalign.study.store import Store

MODELS = ["org/a", "org/b"]
N = 60
SETTING = {"name": "al", "task": "emotion", "sources": ["zh"], "target": "en"}


def outcome(right: int, start: int = 0) -> list[bool]:
    """Items start..start+right-1 right (cyclically), the rest wrong."""
    return [(i - start) % N < right for i in range(N)]


def fake_run(tmp_path, results: dict, claims: list[dict], correction: str = "holm", prior_shifted=()):
    """A run folder whose store holds `results[(model, setting, mode)][lang]` = correctness per item.
    Keys in `prior_shifted` predict 'positive' for every item instead (raw 50%), with scores that still
    rank the gold label first after batch calibration (calibrated 100%)."""
    run_dir = tmp_path / "run"
    experiment = {
        "name": "claims",
        "models": MODELS,
        "tasks": ["emotion"],
        "modes": ["english"],
        "scoring": "prefix",
        "alignment": [SETTING, {**SETTING, "name": "al2"}, {**SETTING, "name": "al3"}],
        "claims": {"alpha": 0.05, "correction": correction, "claims": claims},
    }
    samples = {}
    for (model, setting, mode), by_lang in results.items():
        rows = []
        for lang, right in by_lang.items():
            for i, ok in enumerate(right):
                gold, other = ("positive", "negative") if i % 2 else ("negative", "positive")
                mass = {gold: 0.8 if ok else 0.2, other: 0.2 if ok else 0.8}
                pred = gold if ok else other
                if (model, setting, mode) in prior_shifted:
                    positive = 0.9 if gold == "positive" else 0.6
                    mass, pred = {"positive": positive, "negative": 1 - positive}, "positive"
                scores = {c: mass[c] for c in ("positive", "negative")}
                rows.append({"lang": lang, "idx": i, "gold": gold, "pred": pred, "scores": scores})
        samples[(model, setting, "emotion", mode, "prefix")] = rows
    return write_run_store(run_dir, experiment, samples)


def claim(cid: str, treatment="al", reference="base", **part) -> dict:
    body = {"name": "p", "treatment": {"setting": treatment}, "reference": {"setting": reference}, **part}
    return {"id": cid, "statement": f"claim {cid}", "paper": "Table X", "comparison": "ours", "parts": [body]}


def verdicts(run_dir) -> dict:
    run = load_run(run_dir)
    spec = build(ClaimsSpec, run.experiment["claims"], "claims")
    return {r.claim.id: r for r in evaluate_claims(run, spec)}


LANGS = ("en", "fr", "de")


def results_for(**settings) -> dict:
    """(model, setting, mode): the same correctness in every language."""
    out = {}
    for key, right in settings.items():
        model, setting, *mode = key.split("__")
        out[(f"org/{model}", setting, mode[0] if mode else "english")] = {lang: right for lang in LANGS}
    return out


def test_each_verdict_is_reachable(tmp_path):
    res = results_for(
        a__base=outcome(42),  # 70% on model a: above chance
        a__al=outcome(54),  # fixes 12 items in every language, breaks none
        a__al2=outcome(30, start=12),  # 50%, only on items the base got right: a loss
        a__al3=[(ok or 42 <= i < 45) and i != 0 for i, ok in enumerate(outcome(42))],  # +3, -1: too few
        b__base=outcome(30),  # 50% on model b: at chance
        b__al=outcome(45),
    )
    claims = [
        claim("gain", min_effect=0.02, preconditions=[{"arm": {"setting": "base"}}]),
        claim("loss", treatment="al2", min_effect=0.02),
        claim("tiny", treatment="al3", min_effect=0.02),
        claim("chance", model="org/b", preconditions=[{"arm": {"setting": "base"}}]),
    ]
    found = verdicts(fake_run(tmp_path, res, claims))
    assert {k: r.verdict for k, r in found.items()} == {
        "gain": "supported",
        "loss": "contradicted",
        "tiny": "inconclusive",
        "chance": "not testable",
    }
    gain = found["gain"].parts[0]
    assert gain.effect[0] == pytest.approx(0.2) and (gain.better, gain.worse) == (12, 0)
    assert gain.p == sign_test(12, 0) and gain.raw[0] == pytest.approx(0.2)
    assert gain.calibrated is not None and gain.auc is not None  # two classes, one condition
    assert "precondition failed" in found["chance"].reason and "(chance)" in found["chance"].reason
    assert found["chance"].p is None and found["gain"].p_corrected == pytest.approx(3 * gain.p)  # 3 testable


def test_a_calibrated_precondition_sees_through_a_label_prior(tmp_path):
    """A base that answers 'positive' to everything is at chance raw, yet its scores rank every item
    right: the raw precondition makes the claim not testable, the calibrated one lets it be tested."""
    res = results_for(a__base=outcome(30), a__al=outcome(54))
    claims = [
        claim("raw", min_effect=0.02, preconditions=[{"arm": {"setting": "base"}}]),
        claim("cal", min_effect=0.02, preconditions=[{"arm": {"setting": "base"}, "measure": "calibrated"}]),
    ]
    found = verdicts(fake_run(tmp_path, res, claims, prior_shifted={("org/a", "base", "english")}))
    assert found["raw"].verdict == "not testable" and "accuracy 50.0%" in found["raw"].reason
    assert found["cal"].verdict != "not testable" and found["cal"].p is not None


def test_holm_across_claims_changes_a_verdict(tmp_path):
    # 12 items better, 3 worse in each claim: p = 0.035 alone, 0.07 after Holm over two claims
    base = outcome(30)
    better = [ok or 30 <= i < 42 for i, ok in enumerate(base)]
    better = [False if i < 3 else ok for i, ok in enumerate(better)]
    res = results_for(a__base=base, a__al=better, a__al2=better)
    claims = [claim("one"), claim("two", treatment="al2"), claim("gone", model="org/b")]
    for correction, expected in (("none", "supported"), ("holm", "inconclusive")):
        found = verdicts(fake_run(tmp_path / correction, res, claims, correction))
        assert found["one"].p == pytest.approx(sign_test(12, 3)) and 0.025 < found["one"].p < 0.05
        assert [found[k].verdict for k in ("one", "two")] == [expected, expected], correction
        assert found["gone"].verdict == "not testable" and "no evaluation of org/b" in found["gone"].reason


def test_equivalence(tmp_path):
    base = outcome(30)
    close = [not ok if i in (0, 31) else ok for i, ok in enumerate(base)]  # one item lost, one gained
    far = outcome(54)
    res = results_for(a__base=base, a__al=close, a__al2=far)
    claims = [
        claim("same", test="equivalence", margin=0.1),
        claim("strict", test="equivalence", margin=0.001),
        claim("far", treatment="al2", test="equivalence", margin=0.1),
    ]
    found = verdicts(fake_run(tmp_path, res, claims, "none"))
    same = found["same"].parts[0]
    assert found["same"].verdict == "supported" and -0.1 < same.equivalence_ci[0] <= same.equivalence_ci[1] < 0.1
    assert found["strict"].verdict == "inconclusive" and found["strict"].p > 0.05
    assert found["far"].verdict == "contradicted" and found["far"].parts[0].effect[1] > 0.1


def test_claims_markdown(tmp_path):
    res = results_for(a__base=outcome(36), a__al=outcome(48))
    run_dir = fake_run(tmp_path, res, [claim("1", min_effect=0.02), claim("2", mode="native")])
    out = write_claims(run_dir, tmp_path / "CLAIMS.md")
    text = out.read_text()
    assert f"polyalign claims {run_dir} --out {out}" in text and "Machine: not recorded by the run" in text
    assert "| 1 | claim 1 | Table X | ours | +20.0 [" in text and "**supported**" in text
    assert "### Claim 2: not testable" in text and "english" in text and "native labels" in text


def test_the_command_prints_each_claim_beside_the_papers_effect(tmp_path, capsys):
    from polyalign.cli import main

    res = results_for(a__base=outcome(36), a__al=outcome(48))
    run_dir = fake_run(tmp_path, res, [claim("1", min_effect=0.02), claim("9", mode="native")])
    assert main(["claims", str(run_dir), "--out", str(tmp_path / "CLAIMS.md")]) == 0
    lines = capsys.readouterr().out.splitlines()
    first = next(line for line in lines if line.startswith("claim 1: supported | ours: "))
    assert "paper: +3.88 (Mistral-7B, Table 1;" in first and "| same direction: " in first
    assert any(line.startswith("claim 9: not testable") and "no numbers in the paper" in line for line in lines)
    assert lines[-1] == f"claims: {tmp_path / 'CLAIMS.md'}"


def test_the_report_adds_a_labelled_sensitivity_with_calibrated_preconditions(tmp_path):
    """A raw precondition failed by a label prior: the registered verdict stays 'not testable', and a
    section marked not pre-registered shows the verdict under a calibrated precondition."""
    res = results_for(a__base=outcome(30), a__al=outcome(54))
    claims = [claim("raw", min_effect=0.02, preconditions=[{"arm": {"setting": "base"}}])]
    run_dir = fake_run(tmp_path, res, claims, prior_shifted={("org/a", "base", "english")})
    text = write_claims(run_dir, tmp_path / "CLAIMS.md").read_text()
    registered, sensitivity = text.split("## Sensitivity: preconditions on calibrated accuracy (not pre-registered)")
    assert "### Claim raw: not testable" in registered
    assert "0 supported, 0 contradicted, 0 inconclusive, 1 not testable" in registered
    row = next(line for line in sensitivity.splitlines() if line.startswith("| raw |"))
    assert "| not testable | **supported** (changed) | +40.0 [" in row
    assert "1 supported, 0 contradicted, 0 inconclusive, 0 not testable" in sensitivity


def test_no_sensitivity_section_without_raw_preconditions(tmp_path):
    res = results_for(a__base=outcome(36), a__al=outcome(48))
    calibrated = [{"arm": {"setting": "base"}, "measure": "calibrated"}]
    run_dir = fake_run(tmp_path, res, [claim("1", preconditions=calibrated)])
    assert "## Sensitivity" not in write_claims(run_dir, tmp_path / "CLAIMS.md").read_text()


def test_lens_and_pca_parts(tmp_path):
    rng = np.random.default_rng(0)
    res = results_for(a__base=outcome(36), a__al=outcome(48))
    claims = [
        claim("lens", measure="lens", quantity=["p_en_answer"], depth=[0.3, 0.7]),
        claim("pca", measure="pca", test="bootstrap", depth=[0.3, 0.7], languages=["de"]),
    ]
    run_dir = fake_run(tmp_path, res, claims, "none")
    plan = []
    for kind in ("lens", "pca"):
        folder = run_dir / "steps" / kind / kind
        folder.mkdir(parents=True)
        plan.append({"kind": kind, "key": kind, "label": "org/a emotion de", "labels": None, "dir": f"steps/{kind}"})
    lens_rows = [
        {"model": m, "lang": lang, "index": i, "layers": [2, 5, 9], "p_en_answer": [0.1, 0.2 + (m == "al") * 0.1, 0.9]}
        for m in ("base", "al")
        for lang in ("de", "fr")
        for i in range(20)
    ]
    (run_dir / "steps/lens/lens/lens_items.jsonl").write_text("\n".join(map(json.dumps, lens_rows)))
    (run_dir / "steps/lens/lens/lens.json").write_text(
        json.dumps({"task": "emotion", "layers": [2, 5, 9], "num_layers": 10})
    )
    en = rng.normal(size=40)
    files = {}
    for name, noise in (("base", 2.0), ("al", 0.3)):
        proj = np.zeros((2, 2, 40, 2))
        proj[:, 0, :, 0] = en
        proj[:, 1, :, 0] = en + noise * rng.normal(size=40)
        files[name] = f"pca_{name}.npz"
        np.savez(
            run_dir / "steps/pca/pca" / files[name], proj=proj, langs=np.array(["en", "de"]), item_index=np.arange(40)
        )
    meta = {"task": "emotion", "layers": [5, 9], "num_layers": 10, "files": files}
    (run_dir / "steps/pca/pca/pca.json").write_text(json.dumps(meta))
    with Store(run_dir) as store:
        store.set_meta("plan", plan)
    found = verdicts(run_dir)
    lens = found["lens"].parts[0]
    assert found["lens"].verdict == "supported" and lens.effect[0] == pytest.approx(0.1) and lens.better == 20
    pca = found["pca"].parts[0]
    assert found["pca"].verdict == "supported" and pca.effect[1] > 0 and pca.n_items == 40


def test_wall_time_sums_the_steps_own_times_not_the_pauses(tmp_path):
    """A study resumed across sessions costs what its steps took, not the days between them."""
    from polyalign.reports.claims_report import wall_time

    run_dir = fake_run(tmp_path, results_for(a__base=outcome(36)), [claim("1")])
    plan = [{"kind": "eval", "key": k, "label": k, "labels": None, "dir": f"steps/{k}"} for k in "abcd"]
    for key, seconds in (("a", 3000.0), ("b", 1500.0), ("c", None)):
        (run_dir / "steps" / key).mkdir(parents=True)
        done = {"key": key, **({"seconds": seconds} if seconds else {})}  # c: finished before steps were timed
        (run_dir / "steps" / key / "done.json").write_text(json.dumps(done))
    with Store(run_dir) as store:
        store.set_meta("plan", plan)
        store.record_step("eval", "a", {}, "done")
        store.db.execute("UPDATE steps SET updated = updated - 86400 WHERE key = 'a'")  # a day's pause
        store.db.commit()
        store.record_step("eval", "b", {}, "done")
    text = wall_time(load_run(run_dir))
    assert text.startswith("1 h 15 min") and "2 steps' wall times; 1 of 4 steps not done" in text
    assert text.endswith("; 1 of 4 steps done untimed)")


def test_the_report_names_the_machine_the_steps_ran_on(tmp_path):
    """Each step records its hardware in done.json; the claims report names that machine, not the one
    rendering the report. Runs from before the record name their evaluations' precision instead."""
    from polyalign.engine.precision import machine_description
    from polyalign.reports.claims_report import run_machine
    from polyalign.study.executor import execute_steps
    from polyalign.study.steps import Step

    run_dir = fake_run(tmp_path, results_for(a__base=outcome(36)), [claim("1")])
    step = Step("eval", "k1", {}, "k1", lambda folder: {"dir": "eval"})
    plan = [{"kind": "eval", "key": "k1", "label": "k1", "labels": None, "dir": "steps/eval-k1"}]
    with Store(run_dir) as store:
        store.set_meta("plan", plan)
        execute_steps(store, run_dir, [step], log=lambda line: None)
    marker = run_dir / "steps" / "eval-k1" / "done.json"
    recorded = json.loads(marker.read_text())["machine"]
    assert recorded == machine_description() and recorded.startswith("CPU ")
    assert run_machine(load_run(run_dir)) == recorded
    legacy = {k: v for k, v in json.loads(marker.read_text()).items() if k != "machine"}
    marker.write_text(json.dumps(legacy))
    (marker.parent / "eval").mkdir()
    (marker.parent / "eval" / "results.json").write_text(json.dumps({"runtime": {"dtype": "float32", "device": "cpu"}}))
    assert run_machine(load_run(run_dir)) == "not recorded by the run (its evaluations ran in float32 on cpu)"


def test_the_report_puts_the_papers_effect_and_direction_beside_ours(tmp_path):
    """Claim 4 on model a gains here as in every Table 2 model; claim 2's counterpart in the paper is
    mixed in sign (Qwen1.5-4B), and claim 9 has no numbers in the paper."""
    res = results_for(a__base=outcome(36), a__al=outcome(48), a__al2=outcome(30))
    claims = [
        {**claim("4"), "parts": [{**claim("4")["parts"][0], "name": "gemma"}]},
        {**claim("2", treatment="al2"), "parts": [{**claim("2", treatment="al2")["parts"][0], "name": "larger_gain"}]},
        claim("9"),
    ]
    text = write_claims(fake_run(tmp_path, res, claims), tmp_path / "CLAIMS.md").read_text()
    row4 = next(line for line in text.splitlines() if line.startswith("| 4 |"))
    assert "+3.76 (Mistral-7B, Table 2; zh/es => en vs base)" in row4 and "| yes |" in row4
    row2 = next(line for line in text.splitlines() if line.startswith("| 2 |"))
    assert "-3.33 (Qwen1.5-4B, Table 2" in row2 and "| mixed (1 of 5) |" in row2  # ours -10.0: as Qwen1.5-4B only
    assert "| 9 | claim 9 |" in text and "Figure 1 only" in text
    assert "same direction as the paper?" in text and "single runs" in text


def test_the_header_names_the_run_command_of_the_packaged_experiment():
    from polyalign.reports.claims_paper import regenerate_commands

    claims = "polyalign claims runs/c --out docs/CLAIMS.md"
    text = regenerate_commands("runs/c", "paper_claims", claims)
    assert text == f"`polyalign run examples/paper_claims --out runs/c` then `{claims}`"
    assert "`polyalign run paper/claims --out runs/g`" in regenerate_commands("runs/g", "paper_claims_paper_scale", "x")
    assert "EXPERIMENT.yaml" in regenerate_commands("runs/c", "mine", claims)


def test_direction_is_by_sign_and_says_when_ours_is_zero():
    from polyalign.reports.claims import PartResult
    from polyalign.reports.claims_paper import direction
    from polyalign.reports.paper_effects import paper_effects
    from polyalign.study.claims_spec import Arm, ClaimPart

    part = ClaimPart("agnostic_aligned", Arm("zh-es_en"), Arm("base"))
    effects = paper_effects("8")  # Table 6: +27.21 with task-agnostic labels
    assert direction(PartResult(part, effect=(0.05, 0.01, 0.09)), effects) == "yes"
    assert direction(PartResult(part, effect=(-0.05, -0.09, -0.01)), effects) == "no"
    assert direction(PartResult(part, effect=(0.0, 0.0, 0.0)), effects) == "– (our effect is 0)"
    other = ClaimPart("vs_control", Arm("zh-es_en"), Arm("shuffled"))
    assert direction(PartResult(other, effect=(0.05, 0.01, 0.09)), paper_effects("1")).startswith("– (no counterpart")
