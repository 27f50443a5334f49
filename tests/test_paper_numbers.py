"""The paper's numbers as packaged data, and each claim's effect computed from them."""

from __future__ import annotations

import pytest

from helpers import REPO
from polyalign.reports.paper_effects import NO_NUMBERS, paper_effects
from polyalign.reports.paper_numbers import paper_table, paper_tables

REFERENCE = REPO.parent / "shared" / "reference" / "paper-tables.md"


def effect(claim: str, part: str, model: str) -> float:
    (found,) = [e.effect for e in paper_effects(claim) if e.part in (part, None) and e.model == model]
    return found


def test_two_claims_effects_match_the_hand_computed_values():
    # Table 2, Mistral-7B: zh/es => en 90.83, base 87.07
    assert effect("4", "gemma", "Mistral-7B") == pytest.approx(90.83 - 87.07) == pytest.approx(3.76)
    assert effect("1", "calibrated", "Mistral-7B") == pytest.approx(3.76)
    # Table 3, Qwen1.5-14B SNLI: 73.03 vs 66.94; Table 6 vs Table 2 base (English labels 87.07)
    assert effect("5", "snli", "Qwen1.5-14B") == pytest.approx(6.09)
    assert effect("8", "agnostic_drops", "Mistral-7B") == pytest.approx(87.07 - 50.40)
    # Table 2, Qwen1.5-4B: sw/hi => en beats zh/es => en (81.99 vs 85.32): the paper's own counter-example
    qwen4b = [e.effect for e in paper_effects("2") if e.model == "Qwen1.5-4B"]
    assert qwen4b == [pytest.approx(81.99 - 85.32)]


def test_claim1_unseen_averages_the_17_languages_table1_did_not_train_on():
    t1 = paper_table("table1")
    unseen = [c for c in t1.columns if c not in ("en", "zh", "es")]
    gains = [t1.cell("zh/es => en", c) - t1.cell("base", c) for c in unseen]
    assert len(unseen) == 17 and effect("1", "unseen", "Mistral-7B") == pytest.approx(sum(gains) / 17)
    # hand check of two cells: is 63.2 -> 81.2, sw 58.0 -> 75.6
    assert gains[unseen.index("is")] == pytest.approx(18.0) and t1.cell("zh/es => en", "sw") == 75.6


def test_claim10_is_the_change_in_r_over_english_pairs_and_claim9_has_no_numbers():
    (mistral_l25,) = [e for e in paper_effects("10") if "layer 25" in e.what]
    pairs = {"en-de": (0.9286, 0.9275), "en-fr": (0.9520, 0.9447), "en-hi": (0.5060, 0.7942)}
    pairs |= {"en-th": (0.6791, 0.7484), "en-sw": (0.2316, 0.8514), "en-ms": (0.7835, 0.8448)}
    assert mistral_l25.unit == "r" and mistral_l25.effect == pytest.approx(sum(a - b for b, a in pairs.values()) / 6)
    assert paper_effects("9") == [] and "no numbers" in NO_NUMBERS["9"]


def markdown_tables(text: str) -> dict[str, dict[str, list[str]]]:
    """'Table 1' -> {row label: cells} from the reference file's `## Table N: ...` sections."""
    found, label = {}, None
    for line in text.splitlines():
        if line.startswith("## "):
            label = line[3:].split(":")[0]
            found[label] = {}
        elif label and line.startswith("|") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            found[label][cells[0]] = cells[1:]
    return found


def test_every_packaged_cell_equals_the_reference_copy_of_the_paper():
    if not REFERENCE.is_file():
        pytest.skip(f"reference copy of the paper's tables not found at {REFERENCE}")
    reference = markdown_tables(REFERENCE.read_text(encoding="utf-8"))
    for table in paper_tables().values():
        printed = reference[table.label]
        assert len(printed) - 1 == len(table.rows)  # the header row, then one per setting
        for row, cells in table.rows.items():
            assert [float(c) for c in printed[row]] == list(cells), (table.label, row)
