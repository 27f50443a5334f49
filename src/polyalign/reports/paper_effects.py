"""Each paper claim's effect as the paper's own tables give it, in the claim's own terms.

The claims are polyalign's numbering of the paper's ten claims (docs/CLAIMS.md, the `claims` block of
examples/paper_claims and paper/claims); `part` names the part of those experiments the effect is
the counterpart of, so the report can say whether our effect points the same way. Effects are
treatment - reference like ours: accuracy points, or Pearson r for claim 10. Claim 9 has a figure
(Figure 1) and no numbers. The paper reports single runs, so its effects carry no interval or test.
"""

from __future__ import annotations

from typing import NamedTuple

from polyalign.reports.paper_numbers import paper_table

ALIGNED = "zh/es => en"  # the setting the paper's claims mostly use
TABLE2_MODELS = ("Qwen1.5-1.8B", "Qwen1.5-4B", "Mistral-7B", "Qwen1.5-14B")
NO_NUMBERS = {"9": "Figure 1 only (logit lens): the paper gives no numbers"}


class PaperEffect(NamedTuple):
    """One effect the paper reports for a claim."""

    claim: str  # the claim's id (1-10)
    part: str | None  # the part of our paper-claims experiments it is the counterpart of (None: none)
    model: str
    source: str  # the tables it is computed from ("Table 2", "Table 3 - Table 5")
    effect: float  # points (unit pp) or Pearson r (unit r)
    what: str  # treatment vs reference, in words
    unit: str = "pp"

    def text(self) -> str:
        number = f"{self.effect:+.3f}" if self.unit == "r" else f"{self.effect:+.2f}"
        return f"{number} ({self.model}, {self.source}; {self.what})"


def unseen_languages(table_name: str, *settings_languages: str) -> list[str]:
    """The table's languages none of the settings trained on (sources or target)."""
    return [c for c in paper_table(table_name).columns if c not in settings_languages]


def claim1() -> list[PaperEffect]:
    t1, t2 = paper_table("table1"), paper_table("table2")
    unseen = unseen_languages("table1", "zh", "es", "en")
    gain = t1.mean(ALIGNED, unseen) - t1.mean("base", unseen)
    average = t2.cell(ALIGNED, "Mistral-7B") - t2.cell("base", "Mistral-7B")
    what = "zh/es => en vs base"
    return [
        PaperEffect("1", "unseen", "Mistral-7B", t1.label, gain, f"{what}, the {len(unseen)} languages it did not see"),
        PaperEffect("1", "calibrated", "Mistral-7B", t2.label, average, f"{what}, 20-language average"),
    ]


def claim2() -> list[PaperEffect]:
    t1, t2 = paper_table("table1"), paper_table("table2")
    unseen = unseen_languages("table1", "zh", "es", "sw", "hi", "en")
    what = "zh/es => en vs sw/hi => en"
    effects = [
        PaperEffect("2", "larger_gain", m, t2.label, t2.cell(ALIGNED, m) - t2.cell("sw/hi => en", m), what)
        for m in TABLE2_MODELS
    ]
    gain = t1.mean(ALIGNED, unseen) - t1.mean("sw/hi => en", unseen)
    effects.append(PaperEffect("2", "larger_gain", "Mistral-7B", t1.label, gain, f"{what}, languages seen by neither"))
    return effects


def claim3() -> list[PaperEffect]:
    t1 = paper_table("table1")
    diff = t1.mean("zh => en") - t1.mean(ALIGNED)
    return [
        PaperEffect("3", "one_vs_two", "Mistral-7B", t1.label, diff, "zh => en vs zh/es => en, 20-language average")
    ]


def claim4() -> list[PaperEffect]:
    t2 = paper_table("table2")
    return [
        PaperEffect("4", None, m, t2.label, t2.cell(ALIGNED, m) - t2.cell("base", m), "zh/es => en vs base")
        for m in TABLE2_MODELS
    ]


def claim5() -> list[PaperEffect]:
    t3 = paper_table("table3")
    return [
        PaperEffect(
            "5",
            task.lower(),
            t3.model or "",
            t3.label,
            t3.cell(ALIGNED, task) - t3.cell("base", task),
            f"{task}: zh/es => en vs base",
        )
        for task in ("SNLI", "PAWS")
    ]


def claim6() -> list[PaperEffect]:
    t4 = paper_table("table4")
    return [
        PaperEffect(
            "6",
            "target_zh",
            m,
            t4.label,
            t4.cell("ja/it => zh", m) - t4.cell("base", m),
            "ja/it => zh vs base, 20-language average",
        )
        for m in t4.columns
    ]


def claim7() -> list[PaperEffect]:
    t3, t5 = paper_table("table3"), paper_table("table5")
    model = t5.model or ""
    cross = t5.cell(ALIGNED, "emotion") - t5.cell("base", "emotion")
    in_domain = t3.cell(ALIGNED, "emotion") - t5.cell(ALIGNED, "emotion")
    return [
        PaperEffect("7", "helps", model, t5.label, cross, "emotion: zh/es => en on SNLI questions vs base"),
        PaperEffect(
            "7",
            "less_than_in_domain",
            model,
            f"{t3.label} - {t5.label}",
            in_domain,
            "emotion: emotion questions vs SNLI questions",
        ),
    ]


def claim8() -> list[PaperEffect]:
    t2, t6 = paper_table("table2"), paper_table("table6")
    same, agnostic = t6.columns
    english = t2.cell("base", "Mistral-7B")
    source = f"{t2.label} - {t6.label}"
    return [
        PaperEffect(
            "8",
            "english_over_native",
            "Mistral-7B",
            source,
            english - t6.cell("base", same),
            "base: English vs same-language labels",
        ),
        PaperEffect(
            "8",
            "agnostic_drops",
            "Mistral-7B",
            source,
            english - t6.cell("base", agnostic),
            "base: English vs task-agnostic labels",
        ),
        PaperEffect(
            "8",
            "agnostic_aligned",
            "Mistral-7B",
            t6.label,
            t6.cell(ALIGNED, agnostic) - t6.cell("base", agnostic),
            "task-agnostic labels: zh/es => en vs base",
        ),
    ]


def claim10() -> list[PaperEffect]:
    """Aligned minus base r, averaged over the tables' pairs with English, per model and layer."""
    t = paper_table("tables8_11")
    english_pairs = [pair for pair in t.rows if pair.startswith("en-")]
    effects = []
    for column in t.columns[::2]:
        model_layer = column.removesuffix(" base")
        change = [t.cell(p, f"{model_layer} aligned") - t.cell(p, column) for p in english_pairs]
        model, layer = model_layer.rsplit(" ", 1)
        what = f"layer {layer[1:]}: aligned minus base r, mean over {', '.join(english_pairs)}"
        effects.append(PaperEffect("10", "pca", model, t.label, sum(change) / len(change), what, unit="r"))
    return effects


CLAIMS = {
    "1": claim1,
    "2": claim2,
    "3": claim3,
    "4": claim4,
    "5": claim5,
    "6": claim6,
    "7": claim7,
    "8": claim8,
    "10": claim10,
}


def paper_effects(claim_id: str) -> list[PaperEffect]:
    """The paper's effects for one claim ([] for claim 9, which has no numbers, and unknown ids)."""
    build = CLAIMS.get(claim_id)
    return build() if build else []


def matches(effect: PaperEffect, part: str) -> bool:
    """Whether the paper's effect is the counterpart of our part (None: of every part of the claim)."""
    return effect.part is None or effect.part == part
