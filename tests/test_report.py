"""`polyalign report` on a synthetic run store: table values, best marks, seen/unseen averages,
the paired bootstrap and sign tests with their corrections, balanced accuracy, the label
distribution, every output format, and a headless-browser screenshot of the HTML."""

import csv
import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from helpers import write_run_store
from polyalign.core.errors import PolyalignError
from polyalign.evaluation.stats import benjamini_hochberg, holm
from polyalign.reports.report import accuracy_table, build_tables, load_run, paired_bootstrap, write_report

N = 40
# accuracy per (setting, lang): the adapter helps zh (seen) a lot and fr (unseen) a little
ACC = {
    ("base", "en"): 0.8,
    ("base", "zh"): 0.4,
    ("base", "fr"): 0.5,
    ("al", "en"): 0.8,
    ("al", "zh"): 0.9,
    ("al", "fr"): 0.6,
}


def fake_run(run_dir: Path) -> Path:
    experiment = {"name": "synthetic", "models": ["org/m1"], "tasks": ["emotion"], "modes": ["english"]}
    experiment["alignment"] = [{"name": "al", "task": "snli", "sources": ["zh"], "target": "en", "per_language": 10}]
    folder = run_dir / "steps" / "lens-abc" / "lens"
    folder.mkdir(parents=True)
    fig = Figure(figsize=(3, 2))
    fig.add_subplot().plot([1, 2, 3], [0.1, 0.5, 0.9])
    fig.savefig(folder / "lens.png")
    plan = [{"kind": "lens", "key": "abc" * 10, "label": "org/m1 emotion zh", "dir": "steps/lens-abc", "labels": None}]
    samples = {}
    for setting in ("base", "al"):
        rows = []
        for lang in ("en", "zh", "fr"):
            right = int(ACC[(setting, lang)] * N)
            rows += [
                {
                    "lang": lang,
                    "idx": i,
                    "gold": "positive",
                    "pred": "positive" if i < right else "negative",
                    "scores": {"positive": 0.0, "negative": -1.0},
                }
                for i in range(N)
            ]
        samples[("org/m1", setting, "emotion", "english", "exact")] = rows
    return write_run_store(run_dir, experiment, samples, plan)


def test_paired_bootstrap():
    same = np.array([1, 0, 1, 1, 0] * 8)
    assert paired_bootstrap(same, same) == (0.0, 1.0)
    better, worse = np.ones(N), np.zeros(N)
    delta, p = paired_bootstrap(better, worse)
    assert delta == 1.0 and p == pytest.approx(1 / 1001)
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, 2, 60), rng.integers(0, 2, 60)
    assert paired_bootstrap(a, b) == paired_bootstrap(a, b)  # seeded
    delta, p = paired_bootstrap(a, b)
    assert delta == pytest.approx(a.mean() - b.mean()) and 0.05 < p <= 1  # noise is not significant
    assert paired_bootstrap(b, a)[0] == -delta


def test_tables(tmp_path):
    run = load_run(fake_run(tmp_path / "run"))
    tables = {t.name: t for t in build_tables(run)}
    t1 = tables["per_language"]
    assert t1.header == ["language", "org/m1 / base", "org/m1 / al"]
    assert [r[0] for r in t1.rows] == ["en †", "zh †", "fr", "average"]
    assert t1.rows[1][1:] == [pytest.approx(0.4), pytest.approx(0.9)]
    assert (0, 1) in t1.best and (0, 2) in t1.best  # a tie marks both
    assert (1, 2) in t1.best and (1, 1) not in t1.best
    assert t1.rows[3][2] == pytest.approx((0.8 + 0.9 + 0.6) / 3)
    seen = tables["seen_unseen"].rows[0]
    assert seen[1] == "en,zh"
    assert seen[2:5] == [pytest.approx(0.6), pytest.approx(0.85), pytest.approx(0.25)]
    assert seen[5:8] == [pytest.approx(0.5), pytest.approx(0.6), pytest.approx(0.1)]
    sig = tables["significance"]
    by_lang = {r[1]: r for r in sig.rows}
    assert by_lang["zh"][5] == pytest.approx(0.5) and by_lang["zh"][6] < 0.01
    assert by_lang["en"][6] == 1.0 and by_lang["fr"][6] > by_lang["zh"][6]
    zh_row = [r[1] for r in sig.rows].index("zh")
    assert (zh_row, 5) in sig.best and ([r[1] for r in sig.rows].index("en"), 5) not in sig.best
    assert tables["per_model"].rows[1][0] == "org/m1 / al" and tables["per_task"].rows[0][0] == "emotion"


def test_formats_and_errors(tmp_path):
    run_dir = fake_run(tmp_path / "run")
    md = write_report(run_dir, "md").read_text()
    assert "| zh † | 40.0 | **90.0** |" in md and "![lens (lens)" in md
    assert (run_dir / "report_files" / "bars_00_org_m1_emotion_english.png").is_file()
    rows = list(csv.DictReader(io.StringIO(write_report(run_dir, "csv").read_text())))
    zh = [r for r in rows if r["table"] == "per_language" and r["row"] == "zh †"]
    assert [(r["column"], r["value"], r["best"]) for r in zh[:2]] == [
        ("org/m1 / base", "0.4", "0"),
        ("org/m1 / al", "0.9", "1"),
    ]
    # every item has the same scores: calibrated, each ties (wrong); one gold class: no AUC
    assert [(r["column"], r["value"]) for r in zh[2:]] == [
        ("org/m1 / base cal", "0"),
        ("org/m1 / al cal", "0"),
        ("org/m1 / base AUC", ""),
        ("org/m1 / al AUC", ""),
    ]
    tex = write_report(run_dir, "latex", tmp_path / "paper.tex").read_text()
    assert "\\textbf{90.0}" in tex and "paper_files/bars_00" in tex and "$\\Delta$" in tex
    with pytest.raises(PolyalignError, match="unknown report format"):
        write_report(run_dir, "pdf")
    with pytest.raises(PolyalignError, match="no results.sqlite"):
        write_report(tmp_path / "elsewhere", "md")
    assert not (tmp_path / "elsewhere").exists()
    # the `polyalign eval` table keeps its signature and output
    table = accuracy_table({"m": {"languages": {"en": {"accuracy": 0.5}}, "average": 0.5}})
    assert table == "| lang | m |\n|---|---|\n| en | 50.0 |\n| **avg** | 50.0 |"


def two_class_run(run_dir: Path) -> Path:
    """30 items, gold negative on every third; base always answers positive (item 1: a tie).
    Aligned: en right but item 2 (fixed 11, broken 1), de = base, fr misses 5 negatives (fixed 6)."""
    gold = ["negative" if i % 3 == 0 else "positive" for i in range(30)]
    base = ["positive" if i != 1 else None for i in range(30)]
    aligned = {
        "en": [g if i != 2 else "negative" for i, g in enumerate(gold)],
        "de": base,
        "fr": [g if not (i % 3 == 0 and i < 15) else "positive" for i, g in enumerate(gold)],
    }
    experiment = {"name": "two", "models": ["m"], "tasks": ["emotion"], "modes": ["english"], "items": "0:30"}
    experiment["alignment"] = [{"name": "qa", "task": "emotion", "sources": ["de"], "target": "en", "items": "250:500"}]
    samples = {
        ("m", setting, "emotion", "english", "exact"): [
            {
                "lang": lang,
                "idx": i,
                "gold": gold[i],
                "pred": (base if setting == "base" else aligned[lang])[i],
                "scores": {"positive": 0.0, "negative": -1.0},
            }
            for lang in ("en", "de", "fr")
            for i in range(30)
        ]
        for setting in ("base", "qa")
    }
    return write_run_store(run_dir, experiment, samples)


def test_corrected_tests_balanced_accuracy_and_label_distribution(tmp_path):
    tables = {t.name: t for t in build_tables(load_run(two_class_run(tmp_path / "run")))}
    sig = tables["significance"]
    assert sig.header[6:] == ["p boot", "p boot (Holm)", "fixed", "broken", "p sign", "p sign (Holm)", "p sign (BH)"]
    by_lang = {r[1]: r for r in sig.rows}
    assert [by_lang[lang][8:10] for lang in ("en", "de", "fr")] == [[11, 1], [0, 0], [6, 0]]
    raw = [2 * 13 / 4096, 1.0, 2 / 64]  # 2 P(X <= 1 | n=12), no discordant items, 2 P(X = 0 | n=6)
    assert [by_lang[lang][10] for lang in ("en", "de", "fr")] == pytest.approx(raw)
    assert [by_lang[lang][11] for lang in ("en", "de", "fr")] == pytest.approx([3 * raw[0], 1.0, 2 * raw[2]])
    assert [by_lang[lang][12] for lang in ("en", "de", "fr")] == pytest.approx([3 * raw[0], 1.0, 1.5 * raw[2]])
    assert [r[7] for r in sig.rows] == pytest.approx(holm([r[6] for r in sig.rows]))
    assert [r[12] for r in sig.rows] == pytest.approx(benjamini_hochberg([r[10] for r in sig.rows]))
    rows = [r[1] for r in sig.rows]
    assert (rows.index("en"), 5) in sig.best and (rows.index("fr"), 5) not in sig.best  # fr: Holm 0.0625
    pooled = {r[1]: r for r in tables["pooled"].rows}
    assert [pooled[g][9:11] for g in ("seen", "unseen", "all")] == [[11, 1], [6, 0], [17, 1]]
    assert pooled["all"][11] == pytest.approx(2 * 19 / 2**18) and pooled["all"][2:4] == [3, 90]
    # the item as the unit: net languages fixed per item; 0,3,..,12: +1 (en); 15..27 and 1: +2; 2: -1
    assert pooled["all"][12:14] == [11, 1] and pooled["all"][14] == pytest.approx(2 * 13 / 4096)
    assert pooled["unseen"][12:15] == [6, 0, pytest.approx(2 / 64)]
    delta, lo, hi = pooled["all"][6:9]
    assert delta == pytest.approx(((29 - 19) + 0 + (25 - 19)) / 90) and 0 < lo < delta < hi
    bal = tables["balanced"]
    assert bal.header[1:4] == ["m / base acc", "m / base bal acc", "m / base macro-F1"]
    en = bal.rows[0]
    assert en[0] == "en †" and en[1:3] == [pytest.approx(19 / 30), pytest.approx((19 / 20 + 0) / 2)]
    assert en[4:6] == [pytest.approx(29 / 30), pytest.approx((19 / 20 + 10 / 10) / 2)]
    assert en[3] == pytest.approx((2 * 19 / (20 + 29) + 0) / 2)  # F1(positive), F1(negative) = 0
    assert bal.rows[-1][0] == "average" and (0, 5) in bal.best and (0, 2) not in bal.best
    dist = tables["label_distribution"]
    assert dist.header == ["language — variant", "n", "positive", "negative", "tie"]
    assert dist.rows[0] == ["all languages — gold", 90, pytest.approx(2 / 3), pytest.approx(1 / 3), 0.0]
    by_row = {r[0]: r[1:] for r in dist.rows}
    assert by_row["en — m / base"] == [30, pytest.approx(29 / 30), 0.0, pytest.approx(1 / 30)]
    assert by_row["fr — m / qa"] == [30, pytest.approx(25 / 30), pytest.approx(5 / 30), 0.0]
    assert by_row["all languages — m / qa"][0] == 90


def test_new_tables_in_every_format(tmp_path):
    run_dir = two_class_run(tmp_path / "run")
    md = write_report(run_dir, "md").read_text()
    assert (
        "Evaluated items 0:30." in md
        and "Setting qa: emotion questions de → en, trained on emotion items 250:500." in md
    )
    assert "| p sign | p sign (Holm) | p sign (BH) |" in md and "Holm-Bonferroni" in md
    assert "| en | 30 | 63.3 | 96.7 | **+33.3** |" in md
    assert "| en † | 63.3 | 47.5 | 38.8 | 96.7 | **97.5** |" in md
    assert "| en — m / base | 30 | 96.7 | 0.0 | 3.3 |" in md
    assert "not independent across languages" in md
    rows = list(csv.DictReader(io.StringIO(write_report(run_dir, "csv").read_text())))
    names = {r["table"] for r in rows}
    assert {"significance", "pooled", "balanced", "label_distribution"} <= names
    fr = [r for r in rows if r["table"] == "significance" and r["column"] == "language" and r["value"] == "fr"]
    fr_cells = {
        r["column"]: r["value"] for r in rows if r["table"] == "significance" and r["row_index"] == fr[0]["row_index"]
    }
    assert fr_cells["fixed"] == "6" and fr_cells["broken"] == "0" and fr_cells["p sign (Holm)"] == "0.0625"
    tie = [
        r for r in rows if r["table"] == "label_distribution" and r["row"] == "en — m / base" and r["column"] == "tie"
    ]
    assert [r["value"] for r in tie] == ["0.0333333"]
    tex = write_report(run_dir, "latex").read_text()
    assert "Table 8 --- predicted-label distribution" in tex and "p sign (Holm)" in tex
    page = write_report(run_dir, "html").read_text()
    assert "<th>m / qa bal acc</th>" in page and "Table 7 — aligned vs base pooled" in page
    # a store written before the item-range keys existed: no such header lines
    old = write_report(fake_run(tmp_path / "old"), "md").read_text()
    assert "Evaluated items" not in old and "trained on" not in old and "10 pairs per language" in old


def chromium() -> str | None:
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else shutil.which("chromium")


@pytest.mark.slow  # launches a headless browser
@pytest.mark.skipif(
    chromium() is None,
    reason="chromium is not installed (CI installs it: apt-get install -y "
    "chromium); the HTML report cannot be rendered headless",
)
def test_html_report_renders_in_a_headless_browser(tmp_path):
    from matplotlib.image import imread

    run_dir = fake_run(tmp_path / "run")
    page = write_report(run_dir, "html")
    text = page.read_text()
    assert text.count("data:image/png;base64,") == 2 and "<link" not in text and "src='http" not in text
    shot = tmp_path / "shot.png"
    cmd = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",  # containers often have a tiny /dev/shm
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}",
        "--window-size=1200,1600",
        page.resolve().as_uri(),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 20_000, done.stderr[-2000:]
    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (1600, 1200)
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # text, table shading and a figure, not blank
    assert (pixels.mean(-1) < 0.5).mean() > 0.005  # dark ink on the page
