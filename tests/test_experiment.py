"""`polyalign run` end to end on a tiny random model and the real benchmark: every step, the
store, resuming after an interruption, skipping finished steps, re-running only what an edit
touches, and the report of the run in every format."""

import argparse
import csv
import io
import json
import shutil
import sqlite3

import pytest
import yaml

from polyalign.analysis import lens, pca
from polyalign.cli import report as report_cli
from polyalign.cli import run as run_cli
from polyalign.core.errors import PolyalignError
from polyalign.evaluation import evaluate
from polyalign.study import alignment_steps, experiment

# Where each step's real work is looked up when the step runs (the torch-heavy engines are
# imported by experiment and alignment_steps only then, so that a dry run imports no torch).
COUNTED = {
    "build_pairs": alignment_steps,
    "train": alignment_steps,
    "run_eval": evaluate,
    "run_lens": lens,
    "run_pca": pca,
}
TRAIN = {
    "max_steps": 2,
    "per_device_batch": 2,
    "grad_accum": 1,
    "eval_steps": 1,
    "save_steps": 1,
    "logging_steps": 1,
    "val_size": 0.25,
    "cutoff_len": 256,
    "learning_rate": 1e-3,
}


def cli(argv):
    parser = argparse.ArgumentParser(prog="polyalign")
    sub = parser.add_subparsers(dest="command", required=True)
    run_cli.add_cli(sub)
    report_cli.add_cli(sub)
    args = parser.parse_args([str(a) for a in argv])
    return args.func(args)


def counting(monkeypatch) -> dict:
    """Wrap the functions that do each step's real work; calls[name] counts them."""
    calls = dict.fromkeys(COUNTED, 0)
    for name, module in COUNTED.items():
        real = getattr(module, name)

        def wrapper(*args, _real=real, _name=name, **kwargs):
            calls[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)
    return calls


@pytest.fixture(scope="module")
def exp_file(tiny_llama, data_dir, tmp_path_factory):
    spec = {
        "name": "tiny",
        "models": [str(tiny_llama)],
        "alignment": [
            {
                "name": "zh-es_en",
                "task": "snli",
                "sources": ["zh", "es"],
                "target": "en",
                "per_language": 8,
                "train": TRAIN,
            }
        ],
        "tasks": ["snli", "emotion"],
        "modes": ["english"],
        "languages": ["en", "zh", "fr"],
        "limit": 4,
        "data_dir": str(data_dir),
        "batch_size": 4,
        "analyses": {
            "lens": {"task": "emotion", "langs": ["es", "zh"], "mode": "native", "limit": 3},
            "pca": {"task": "emotion", "langs": ["es", "zh"], "layers": [1, "last"], "limit": 3},
        },
    }
    path = tmp_path_factory.mktemp("exp") / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture(scope="module")
def run_state(exp_file, tmp_path_factory):
    """A run interrupted (Ctrl-C in the first eval step) and then resumed; what each saw."""
    run_dir = tmp_path_factory.mktemp("run") / "r"
    state = {"run_dir": run_dir}
    with pytest.MonkeyPatch.context() as mp:
        calls = counting(mp)

        def interrupted(*args, **kwargs):
            raise KeyboardInterrupt

        mp.setattr(evaluate, "run_eval", interrupted)
        with pytest.raises(KeyboardInterrupt):
            cli(["run", exp_file, "--out", run_dir])
        state["first"] = dict(calls)
        state["markers_after_crash"] = sorted(p.parent.name.split("-")[0] for p in run_dir.glob("steps/*/done.json"))
        with sqlite3.connect(run_dir / "results.sqlite") as db:
            state["status_after_crash"] = dict(
                db.execute("SELECT kind || ':' || status, COUNT(*) FROM steps GROUP BY kind, status").fetchall()
            )
    with pytest.MonkeyPatch.context() as mp:
        calls = counting(mp)
        assert cli(["run", exp_file, "--out", run_dir]) == 0
        state["resume"] = dict(calls)
    return state


@pytest.mark.slow
def test_interrupted_run_resumes_without_redoing_steps(run_state):
    assert run_state["first"] == {"build_pairs": 1, "train": 1, "run_eval": 0, "run_lens": 0, "run_pca": 0}
    assert run_state["markers_after_crash"] == ["data", "train"]  # the eval step never completed
    assert run_state["status_after_crash"] == {"data:done": 1, "train:done": 1, "eval:running": 1}
    # base + adapter, 2 tasks x 1 mode = 4 evals; data and training were not redone
    assert run_state["resume"] == {"build_pairs": 0, "train": 0, "run_eval": 4, "run_lens": 1, "run_pca": 1}
    run_dir = run_state["run_dir"]
    pairs = (next(run_dir.glob("steps/data-*")) / "pairs.jsonl").read_text().splitlines()
    assert len(pairs) == 16 and {json.loads(p)["source_lang"] for p in pairs} == {"zh", "es"}
    assert (next(run_dir.glob("steps/train-*")) / "train" / "adapter" / "adapter_config.json").is_file()
    lens = json.loads((next(run_dir.glob("steps/lens-*")) / "lens" / "lens.json").read_text())
    assert lens["models"] == ["base", "zh-es_en"] and lens["languages_order"] == ["es", "zh"]
    pca = json.loads((next(run_dir.glob("steps/pca-*")) / "pca" / "pca.json").read_text())
    assert pca["models"] == ["base", "zh-es_en"] and pca["n_items"] == 3


@pytest.mark.slow
def test_store_holds_every_item(run_state):
    with sqlite3.connect(run_state["run_dir"] / "results.sqlite") as db:
        columns = [r[1] for r in db.execute("PRAGMA table_info(samples)")]
        assert columns[:10] == [
            "model",
            "setting",
            "task",
            "mode",
            "scoring",
            "lang",
            "idx",
            "gold",
            "pred",
            "scores_json",
        ]
        groups = db.execute("SELECT setting, task, lang, COUNT(*) FROM samples GROUP BY 1, 2, 3").fetchall()
        assert len(groups) == 2 * 2 * 3 and {g[3] for g in groups} == {4}
        gold, scores = db.execute("SELECT gold, scores_json FROM samples WHERE task = 'snli' LIMIT 1").fetchone()
        assert gold in {"entailment", "neutral", "contradiction"} and set(json.loads(scores)) == {
            "entailment",
            "neutral",
            "contradiction",
        }
        steps = db.execute("SELECT kind, status, config_json FROM steps").fetchall()
        assert {(k, s) for k, s, _ in steps} == {(k, "done") for k in ("data", "train", "eval", "lens", "pca")}
        assert all(json.loads(c) for _, _, c in steps)
    # the per-step samples files and the store agree
    eval_dir = next(
        d
        for d in run_state["run_dir"].glob("steps/eval-*")
        if json.loads((d / "done.json").read_text())["config"]["labels"]["setting"] == "base"
        and json.loads((d / "done.json").read_text())["config"]["labels"]["task"] == "emotion"
    )
    rows = [json.loads(line) for line in (eval_dir / "eval" / "samples" / "emotion_zh.jsonl").read_text().splitlines()]
    with sqlite3.connect(run_state["run_dir"] / "results.sqlite") as db:
        stored = db.execute(
            "SELECT idx, gold, pred FROM samples WHERE setting='base' AND task='emotion' AND lang='zh' ORDER BY idx"
        ).fetchall()
    assert stored == [(r["index"], r["gold"], r["pred"]) for r in rows]


@pytest.mark.slow
def test_rerun_does_nothing_and_limit_edit_reruns_only_evals(run_state, exp_file, tmp_path, monkeypatch):
    run_dir = tmp_path / "copy"
    shutil.copytree(run_state["run_dir"], run_dir)  # a moved run folder is still the same run
    calls = counting(monkeypatch)
    assert cli(["run", exp_file, "--out", run_dir]) == 0
    assert calls == dict.fromkeys(COUNTED, 0)
    assert cli(["run", exp_file, "--out", run_dir, "limit=3"]) == 0  # override after an option
    assert calls == {"build_pairs": 0, "train": 0, "run_eval": 4, "run_lens": 0, "run_pca": 0}
    with sqlite3.connect(run_dir / "results.sqlite") as db:
        counts = {r[0] for r in db.execute("SELECT COUNT(*) FROM samples GROUP BY setting, task, lang")}
        assert counts == {3}  # the limit-4 rows were replaced, not mixed in
    # editing the file itself (not an override) is detected the same way; going back to limit 4
    # finds the earlier eval steps complete
    spec = yaml.safe_load(exp_file.read_text())
    edited = tmp_path / "edited.yaml"
    edited.write_text(yaml.safe_dump({**spec, "limit": 4}))
    assert cli(["run", edited, "--out", run_dir]) == 0
    assert calls["run_eval"] == 4
    with sqlite3.connect(run_dir / "results.sqlite") as db:
        assert {r[0] for r in db.execute("SELECT COUNT(*) FROM samples GROUP BY setting, task, lang")} == {4}
    # renaming a setting relabels the stored rows without evaluating again; only the figures
    # that show the name (lens, pca) are redrawn from a new analysis step
    edited.write_text(yaml.safe_dump({**spec, "alignment": [{**spec["alignment"][0], "name": "renamed"}]}))
    assert cli(["run", edited, "--out", run_dir]) == 0
    assert calls == {"build_pairs": 0, "train": 0, "run_eval": 4, "run_lens": 1, "run_pca": 1}
    with sqlite3.connect(run_dir / "results.sqlite") as db:
        assert dict(db.execute("SELECT setting, COUNT(*) FROM samples GROUP BY setting")) == {"base": 24, "renamed": 24}


@pytest.mark.slow
def test_report_of_the_run_in_every_format(run_state, tmp_path):
    run_dir = run_state["run_dir"]
    outs = {}
    for fmt, ext in (("md", "md"), ("html", "html"), ("csv", "csv"), ("latex", "tex")):
        outs[fmt] = tmp_path / f"r.{ext}"
        assert cli(["report", run_dir, "--format", fmt, "--out", outs[fmt]]) == 0
    md = outs["md"].read_text()
    for needle in ("Table 1", "Table 2", "Table 3", "Table 4", "Table 5", "zh-es_en", "paired bootstrap", "† "):
        assert needle in md
    figures = sorted(p.name for p in (tmp_path / "r_files").glob("*.png"))
    assert sum(n.startswith("bars_") for n in figures) == 2
    assert any(n.startswith("lens_") for n in figures) and any(n.startswith("pca_") for n in figures)
    html = outs["html"].read_text()
    assert html.count("data:image/png;base64,") == len(figures) and "<link" not in html and "src='http" not in html
    rows = list(csv.DictReader(io.StringIO(outs["csv"].read_text())))
    per_lang = [r for r in rows if r["table"] == "per_language" and r["row"].startswith("fr")]
    # raw and calibrated for base and aligned in both tasks, and ROC-AUC where the task has two classes
    kinds = sorted(r["column"].split(" / ")[1] for r in per_lang)
    assert kinds == sorted(["base", "zh-es_en", "base cal", "zh-es_en cal"] * 2 + ["base AUC", "zh-es_en AUC"])
    assert all(0 <= float(r["value"]) <= 1 for r in per_lang)
    assert {r["table"] for r in rows} == {
        "per_language",
        "per_model",
        "per_task",
        "seen_unseen",
        "significance",
        "pooled",
        "balanced",
        "label_distribution",
        "headline",
        "auc",
        "pooled_calibrated",
        "significance_calibrated",
        "label_distribution_calibrated",
    }
    tex = outs["latex"].read_text()
    assert tex.startswith("\\documentclass") and "\\begin{tabular}" in tex and "r_files/" in tex
    assert cli(["report", run_dir]) == 0 and (run_dir / "report.md").is_file()  # default output


@pytest.mark.slow
def test_non_english_target_from_question_files(data_dir, tiny_llama, tmp_path):
    """zh,es => it: both sides parsed from the benchmark's parallel question files."""
    path = tmp_path / "it.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "models": [str(tiny_llama)],
                "tasks": [],
                "data_dir": str(data_dir),
                "alignment": [
                    {"name": "zh-es_it", "task": "snli", "sources": ["zh", "es"], "target": "it", "per_language": 5}
                ],
            }
        )
    )
    runner = experiment.Runner(experiment.load_experiment(path), tmp_path / "run", tmp_path)
    data = runner.plan()[0]
    assert data.kind == "data"
    out = runner.folder(data)
    out.mkdir(parents=True)
    assert data.run(out) == {"pairs": "pairs.jsonl", "n": 10}
    pairs = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    assert {p["target_lang"] for p in pairs} == {"it"}
    assert all("to Italian:" in p["prompt"] for p in pairs)
    runner.store.close()


@pytest.mark.slow
def test_bad_experiment_files_fail_in_one_line(exp_file, tmp_path):
    spec = yaml.safe_load(exp_file.read_text())
    cases = [
        ({"modles": ["x"]}, "unknown key"),
        ({"alignment": [{**spec["alignment"][0], "lr": 1}]}, "unknown key"),
        ({"alignment": [{**spec["alignment"][0], "train": {"lora_rnak": 2}}]}, "unknown key"),
        ({"languages": ["en", "xx"]}, "unknown language"),
        ({"tasks": ["nope"]}, "unknown task"),
        ({"modes": ["loud"]}, "unknown mode"),
        ({"models": [3]}, "is not a valid str"),
        ({"analyses": {"lens": {"task": "emotion", "langs": ["zh"], "limit": 2}}}, "at least 3"),
        ({"analyses": {"pca": {"task": "emotion", "langs": ["zh"], "layers": [0]}}}, "layer 0"),
        ({"verify": -0.5}, "'auto' or a margin >= 0"),
        ({"verify": "sometimes"}, "'auto' or a margin >= 0"),
    ]
    for change, message in cases:
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump({**spec, **change}))
        with pytest.raises(PolyalignError, match=message) as info:
            cli(["run", path, "--out", tmp_path / "never"])
        assert "\n" not in str(info.value)
    with pytest.raises(PolyalignError, match="not key=value"):
        cli(["run", exp_file, "--out", tmp_path / "never", "limit"])
    assert not (tmp_path / "never").exists()  # nothing ran, nothing was written
