"""`polyalign claims RUN_DIR`: docs/CLAIMS.md, one verdict per paper claim, from a finished run.

The rules are the `claims` block the run was started with (stored in its results.sqlite), so the
file reports what was pre-registered, not what a later edit of the YAML says. Every number is
recomputed from per-item results (polyalign.reports.claims).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from polyalign.core.config import build
from polyalign.core.errors import PolyalignError
from polyalign.core.files import atomic_write_text, md_table
from polyalign.evaluation.stats import RESAMPLES, SEED
from polyalign.reports.claims import VERDICTS, ClaimResult, PartResult, evaluate_claims
from polyalign.reports.claims_paper import HEADER as PAPER_HEADER
from polyalign.reports.claims_paper import paper_note, paper_paragraph, paper_rows, regenerate_commands
from polyalign.reports.run_data import RunData, load_run, p_text
from polyalign.study.claims_history import with_rules_notice
from polyalign.study.claims_spec import ClaimsSpec, with_calibrated_preconditions

TESTS = {
    "sign": "exact sign test over items",
    "bootstrap": "bootstrap over items",
    "equivalence": "equivalence (TOST, bootstrap)",
}


def stored_claims(run: RunData) -> ClaimsSpec:
    """The claims block the run was started with, typed again."""
    raw = run.experiment.get("claims")
    if not raw:
        raise PolyalignError(f"{run.run_dir}: the run's experiment declares no claims block")
    return build(ClaimsSpec, raw, f"{run.run_dir}: claims")


def _number(value: float, measure: str) -> str:
    return f"{value:+.3f}" if measure == "pca" else f"{100 * value:+.1f}"


def interval_text(interval, measure: str) -> str:
    if interval is None:
        return "–"
    delta, lo, hi = interval
    return f"{_number(delta, measure)} [{_number(lo, measure)}, {_number(hi, measure)}]"


def _lines(result: ClaimResult, cell) -> str:
    """One line per part (prefixed by its name when the claim has several)."""
    many = len(result.parts) > 1
    return "<br>".join((f"{r.part.name}: " if many else "") + cell(r) for r in result.parts)


def primary_raw(r: PartResult) -> str:
    if r.part.measure in ("lens", "pca"):
        return interval_text(r.effect, r.part.measure) + (" (Δr)" if r.part.measure == "pca" else " (Δp, pp)")
    return interval_text(r.raw, "accuracy")


def summary_rows(results: list[ClaimResult]) -> list[list[str]]:
    rows = []
    for res in results:
        tests = sorted({TESTS[r.part.test] for r in res.parts})
        p = f"{', '.join(tests)}; p {p_text(res.p)}, corrected {p_text(res.p_corrected)}"
        rows.append(
            [
                res.claim.id,
                res.claim.statement,
                res.claim.paper,
                res.claim.comparison,
                _lines(res, primary_raw),
                _lines(res, lambda r: interval_text(r.calibrated, "accuracy")),
                *paper_rows(res),
                p if res.p is not None else "–",
                f"**{res.verdict}**",
            ]
        )
    return rows


def arms_text(r: PartResult) -> str:
    if r.arms is None:
        return f"{r.part.treatment.setting} vs {r.part.reference.setting}"
    t, ref = r.arms
    model = t.model if t.model == ref.model else f"{t.model} vs {ref.model}"
    return f"{model}: {t.label()} vs {ref.label()}"


def part_paragraph(r: PartResult, alpha: float) -> str:
    """What one part compared and found."""
    part = r.part
    head = f"- **{part.name}** ({part.measure}; {arms_text(r)})"
    if r.missing and r.effect is None:
        return f"{head}: not testable: {r.missing}."
    rule = (
        f"equivalence within ±{_number(part.margin or 0, part.measure)}"
        if part.test == "equivalence"
        else f"gain of at least {_number(part.min_effect, part.measure)}"
    )
    text = (
        f"{head}, languages {', '.join(r.langs)}, {r.n_items} items: effect {interval_text(r.effect, part.measure)} "
        f"({100 * (1 - alpha):.0f}% CI); {TESTS[part.test]} p {p_text(r.p)}; "
        f"items better / worse {r.better} / {r.worse}"
    )
    if r.equivalence_ci is not None:
        lo, hi = r.equivalence_ci
        text += f"; {100 * (1 - 2 * alpha):.0f}% CI [{_number(lo, part.measure)}, {_number(hi, part.measure)}]"
    if part.measure in ("accuracy", "calibrated"):
        text += f"; raw {interval_text(r.raw, 'accuracy')}, calibrated {interval_text(r.calibrated, 'accuracy')}"
        text += f", ΔAUC {interval_text(r.auc, 'accuracy')}" if r.auc else ""
    verdict = f"not testable: {r.missing}" if r.missing else r.verdict
    return f"{text}. Rule: {rule}. Part: {verdict}."


def claim_section(res: ClaimResult, alpha: float) -> list[str]:
    lines = [f"### Claim {res.claim.id}: {res.verdict}", "", f"*Paper:* {res.claim.statement} ({res.claim.paper})"]
    lines += ["", f"*Our comparison:* {res.claim.comparison}", ""]
    lines += paper_paragraph(res)
    lines += [part_paragraph(r, alpha) for r in res.parts]
    p = "" if res.p is None else f"p = {p_text(res.p)} (largest of its parts), corrected {p_text(res.p_corrected)}. "
    return lines + ["", f"Verdict: **{res.verdict}**. {p}{res.reason}.", ""]


def wall_time(run: RunData) -> str:
    """The run's cost: its steps' own wall times (done.json `seconds`) summed, so pauses and resumes
    between sessions do not count; the span of the step ledger where no step was timed."""
    planned, held = len(run.plan), done_markers(run)
    seconds = [float(d["seconds"]) for d in held.values() if isinstance(d.get("seconds"), (int, float))]
    if seconds:
        gaps = [(planned - len(held), "not done"), (len(held) - len(seconds), "done untimed")]
        notes = "".join(f"; {n} of {planned} steps {what}" for n, what in gaps if n)
        return f"{_hours(sum(seconds))} (the sum of its {len(seconds)} steps' wall times{notes})"
    from polyalign.study.store import Store

    keys = {entry["key"] for entry in run.plan}
    with Store(run.run_dir, create=False) as store:
        stamps = [row[0] for row in store.db.execute("SELECT updated, key FROM steps") if row[1] in keys]
    if len(stamps) < 2:
        return "not recorded"
    return f"{_hours(max(stamps) - min(stamps))} (the span of the run's step ledger)"


def run_machine(run: RunData) -> str:
    """The hardware the run's steps recorded in their done.json; for runs made before steps recorded
    it, the precision and device their evaluations' results.json name."""
    held = done_markers(run)
    machines = sorted({d["machine"] for d in held.values() if d.get("machine")})
    if machines:
        return " / ".join(machines)
    ran_in = set()
    for marker, done in held.items():
        results = marker.parent / str(done.get("outputs", {}).get("dir", "")) / "results.json"
        if done.get("kind") == "eval" and results.is_file():
            runtime = json.loads(results.read_text(encoding="utf-8")).get("runtime", {})
            ran_in.add(f"{runtime.get('dtype')} on {runtime.get('device')}")
    return "not recorded by the run" + (f" (its evaluations ran in {', '.join(sorted(ran_in))})" if ran_in else "")


def done_markers(run: RunData) -> dict[Path, dict]:
    """Each finished step's done.json, read once ({} where one cannot be read)."""
    from polyalign.study.steps import read_marker

    held = {}
    for entry in run.plan:
        marker = run.run_dir / entry["dir"] / "done.json"
        if marker.exists():
            try:
                held[marker] = read_marker(marker)
            except (OSError, ValueError):
                held[marker] = {}
    return held


def terminal_line(res: ClaimResult) -> str:
    """One claim in one line: verdict, our primary effect per part, the paper's effects, same direction."""
    ours = "; ".join(f"{r.part.name} {primary_raw(r)}" for r in res.parts)
    paper, same = (cell.replace("<br>", "; ") for cell in paper_rows(res))
    return f"claim {res.claim.id}: {res.verdict} | ours: {ours} | paper: {paper} | same direction: {same}"


def _hours(seconds: float) -> str:
    return f"{int(seconds // 3600)} h {seconds % 3600 / 60:02.0f} min"


def render_claims(run: RunData, results: list[ClaimResult], spec: ClaimsSpec, machine: str, command: str) -> str:
    counts = {v: sum(r.verdict == v for r in results) for v in ("supported", "contradicted", "inconclusive")}
    counts["not testable"] = len(results) - sum(counts.values())
    header = ["#", "the paper's claim", "paper's numbers", "our comparison", "effect raw, 95% CI (pp)"]
    header += ["effect calibrated (pp)", *PAPER_HEADER, "test, p (corrected)", "verdict"]
    lines = [
        "# The paper's claims, one verdict each",
        "",
        f"Generated by {regenerate_commands(run.run_dir, run.experiment.get('name'), command)}; "
        f"do not edit by hand. Run folder: `{run.run_dir}` (experiment "
        f"{run.experiment.get('name') or '–'}; models {', '.join(run.experiment.get('models', []))}). "
        f"Machine: {machine}. Measured wall time: {wall_time(run)}.",
        "",
        f"Rules: declared in the experiment's `claims` block before the run and applied mechanically. Each "
        f"claim's p is the largest of its parts' (all must hold); {spec.correction} correction across the "
        f"testable claims at alpha {spec.alpha}. Effects: treatment - reference, mean over languages of the "
        f"mean item difference, CIs from {RESAMPLES} bootstrap resamples of items drawn jointly across "
        f"languages (seed {SEED}); calibrated = after batch calibration. "
        + ", ".join(f"{n} {v}" for v, n in counts.items())
        + ". "
        + paper_note(),
        "",
        *md_table(header, summary_rows(results)),
        "",
        "## Claim by claim",
        "",
    ]
    for res in results:
        lines += claim_section(res, spec.alpha)
    return "\n".join(lines)


def sensitivity_section(run: RunData, spec: ClaimsSpec, registered: list[ClaimResult], cal: RunData) -> list[str]:
    """The verdicts again with calibrated preconditions, beside the registered ones. Why: a base that
    answers one label everywhere sits at chance raw though its scores may rank items well, so a raw
    precondition can fail on a label prior. That rule was not fixed before the run: it is labelled
    exploratory and never replaces the verdicts; Holm runs over the claims testable under it."""
    changed = with_calibrated_preconditions(spec)
    if changed is None:
        return []
    results = evaluate_claims(run, changed, cal)
    rows = [
        [
            new.claim.id,
            old.verdict,
            f"**{new.verdict}**" + (" (changed)" if new.verdict != old.verdict else ""),
            _lines(new, primary_raw),
            f"p {p_text(new.p)}, corrected {p_text(new.p_corrected)}" if new.p is not None else "–",
            new.reason,
        ]
        for old, new in zip(registered, results)
    ]
    counts = ", ".join(f"{sum(r.verdict == v for r in results)} {v}" for v in VERDICTS)
    header = ["#", "pre-registered verdict", "with calibrated preconditions", "effect raw (pp)", "test p", "why"]
    return [
        "## Sensitivity: preconditions on calibrated accuracy (not pre-registered)",
        "",
        "The verdicts above are the run's. Here every precondition that read raw accuracy reads calibrated "
        "accuracy instead (after batch calibration, so a label prior alone cannot fail it); every other rule "
        "is unchanged, and the Holm correction runs over the claims testable under this rule. This rule was "
        f"not fixed before the run: read it as exploratory, not as a verdict. Under it: {counts}.",
        "",
        *md_table(header, rows),
        "",
    ]


def write_claims(run_dir: str | Path, out: str | Path | None = None, echo: Callable[[str], None] | None = None) -> Path:
    """Evaluate the run's claims and write the markdown file (default: RUN_DIR/CLAIMS.md); `echo`
    receives one line per claim: its verdict, our effect, the paper's and whether they agree in sign."""
    from polyalign.reports.calibrated import calibrate_run

    run = load_run(run_dir)
    spec = stored_claims(run)
    cal = calibrate_run(run)
    results = evaluate_claims(run, spec, cal)
    out = Path(out) if out else Path(run_dir) / "CLAIMS.md"
    command = f"polyalign claims {run_dir}" + (f" --out {out}" if out != Path(run_dir) / "CLAIMS.md" else "")
    text = render_claims(run, results, spec, run_machine(run), command)
    text += "\n".join(["", *sensitivity_section(run, spec, results, cal)])
    text = with_rules_notice(run.run_dir, text)  # rules edited after the results: said at the top
    atomic_write_text(out, text)
    if echo is not None:
        for res in results:
            echo(terminal_line(res))
    return out
