"""The paper's side of docs/CLAIMS.md: its effect for each claim beside ours, whether the two point
the same way, and the commands that regenerate the file.

Why beside ours: a verdict says whether polyalign's run holds a claim at its own scale; a reader
also wants to know what the paper measured and whether the small models move in the same
direction. The paper's effects come from its tables (polyalign.reports.paper_effects); the paper
reports single runs, so they carry no interval or test and the direction is compared by sign.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from polyalign.reports.claims import ClaimResult, PartResult
from polyalign.reports.paper_effects import NO_NUMBERS, PaperEffect, matches, paper_effects
from polyalign.reports.paper_numbers import SINGLE_RUNS

HEADER = ["paper's effect (model, table)", "same direction as the paper?"]


def paper_cell(res: ClaimResult) -> str:
    """The paper's effects for the claim, one per line (its own words where it has no numbers)."""
    if res.claim.id in NO_NUMBERS:
        return NO_NUMBERS[res.claim.id]
    effects = paper_effects(res.claim.id)
    return "<br>".join(e.text() for e in effects) if effects else "–"


def sign(value: float) -> int:
    return (value > 0) - (value < 0)


def direction(r: PartResult, effects: list[PaperEffect]) -> str:
    """'yes' when every paper effect that is this part's counterpart has our effect's sign, 'no'
    when none has, else how many do; '–' when ours or the paper's is missing."""
    linked = [e for e in effects if matches(e, r.part.name)]
    if not linked:
        return "– (no counterpart in the paper)"
    if r.effect is None:
        return "– (no effect of ours)"
    ours = sign(r.effect[0])
    if ours == 0:
        return "– (our effect is 0)"
    same = sum(sign(e.effect) == ours for e in linked)
    answer = "yes" if same == len(linked) else "no" if same == 0 else f"mixed ({same} of {len(linked)})"
    return answer + (" (an equivalence claim: sign only)" if r.part.test == "equivalence" else "")


def direction_cell(res: ClaimResult) -> str:
    """One line per part (prefixed by its name when the claim has several)."""
    if res.claim.id in NO_NUMBERS or not paper_effects(res.claim.id):
        return "– (no numbers in the paper)"
    effects = paper_effects(res.claim.id)
    many = len(res.parts) > 1
    return "<br>".join((f"{r.part.name}: " if many else "") + direction(r, effects) for r in res.parts)


def paper_rows(res: ClaimResult) -> list[str]:
    """The two cells the summary table gains."""
    return [paper_cell(res), direction_cell(res)]


def paper_paragraph(res: ClaimResult) -> list[str]:
    """The claim's section: the paper's effects, each with the part of ours it is compared with."""
    if res.claim.id in NO_NUMBERS:
        return [f"*Paper's effect:* {NO_NUMBERS[res.claim.id]}.", ""]
    effects = paper_effects(res.claim.id)
    if not effects:
        return []
    items = [f"{e.text()} [beside our part {e.part or 'each part'}]" for e in effects]
    return ["*Paper's effect:* " + "; ".join(items) + ".", ""]


def paper_note() -> str:
    """The header's sentence on the paper's side, said once."""
    return (
        "Paper's effect: treatment - reference computed from the paper's tables (accuracy points; claim 10: "
        "Pearson r), from polyalign's packaged copy of its numbers (polyalign/reports/paper_numbers.yaml); "
        f"{SINGLE_RUNS}, "
        "so the comparison is by sign only: same direction = our primary effect has the sign of every paper "
        "effect that is that part's counterpart."
    )


def packaged_experiment_for(name: str | None) -> str | None:
    """The packaged config (examples/paper_claims) whose `name:` is the run's experiment name."""
    from polyalign.study.experiment_files import packaged_config, packaged_names

    for packaged in packaged_names():
        path = packaged_config(packaged)
        if path is None:
            continue
        head = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if name and head.get("name") == name:
            return packaged
    return None


def regenerate_commands(run_dir: str | Path, experiment_name: str | None, claims_command: str) -> str:
    """'`polyalign run examples/paper_claims --out RUN` then `polyalign claims RUN --out ...`'."""
    packaged = packaged_experiment_for(experiment_name)
    run = f"`polyalign run {packaged or 'EXPERIMENT.yaml'} --out {run_dir}`"
    where = "" if packaged else f" (EXPERIMENT.yaml: the file of experiment {experiment_name or 'of the run'})"
    return f"{run}{where} then `{claims_command}`"
