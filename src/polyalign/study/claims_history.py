"""The claims block is part of a run's identity: a change after results exist is kept on record.

Why: a verdict is worth something only if its rule was fixed before the numbers were seen. A
re-run with an edited `claims:` block stores the new rules (the report applies the rules the
store holds), so each change made once the store held results is appended to the store's meta
`claims_changes` (when, what changed, the block before), and CLAIMS.md opens with a visible
"rules changed after the results" notice listing it. Nothing is refused: editing a rule after
seeing the numbers is allowed, but never silent.
"""

from __future__ import annotations

import time
from typing import Any

from polyalign.study.store import Store

META = "claims_changes"


def differences(before: Any, after: Any, where: str = "claims") -> list[str]:
    """One line per changed leaf: 'claims.claims[id 1].parts[name gain].min_effect: 0.02 -> 0.0'."""
    if isinstance(before, dict) and isinstance(after, dict):
        keys = list(dict.fromkeys([*before, *after]))
        return [line for k in keys for line in differences(before.get(k), after.get(k), f"{where}.{k}")]
    named = (_labels(before), _labels(after)) if isinstance(before, list) and isinstance(after, list) else None
    if named and named[0] is not None and named[1] is not None:
        old, new = dict(zip(named[0], before)), dict(zip(named[1], after))
        keys = list(dict.fromkeys([*old, *new]))
        return [line for k in keys for line in differences(old.get(k), new.get(k), f"{where}[{k}]")]
    if before == after:
        return []
    if before is None:
        return [f"{where}: added"]
    if after is None:
        return [f"{where}: removed"]
    return [f"{where}: {before!r} -> {after!r}"]


def _labels(entries: list) -> list[str] | None:
    """Entries named by their id or name (claims, parts), when every entry has a distinct one."""
    for key in ("id", "name"):
        names = [f"{key} {e[key]}" for e in entries if isinstance(e, dict) and key in e]
        if len(names) == len(entries) and len(set(names)) == len(names):
            return names
    return None


def has_results(store: Store) -> bool:
    """The store holds a sample row or a finished step."""
    samples = store.db.execute("SELECT 1 FROM samples LIMIT 1").fetchone()
    done = store.db.execute("SELECT 1 FROM steps WHERE status = 'done' LIMIT 1").fetchone()
    return samples is not None or done is not None


def record_claims_change(store: Store, experiment: dict) -> list[str]:
    """Before the run stores `experiment`: when its claims block differs from the stored one and
    results exist, append the change to the store's record; returns what changed ([] otherwise)."""
    stored = store.get_meta("experiment")
    if not stored or not has_results(store):
        return []
    before, after = stored.get("claims"), experiment.get("claims")
    changes = differences(before, after) if before != after else []
    if changes:
        history = store.get_meta(META, [])
        history.append({"at": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "changes": changes, "before": before})
        store.set_meta(META, history)
    return changes


def rules_notice(run_dir) -> list[str]:
    """CLAIMS.md's notice: each change of the claims block made after the run held results."""
    with Store(run_dir, create=False) as store:
        history = store.get_meta(META, [])
    if not history:
        return []
    lines = [
        "> **Rules changed after the results.** The claims block below is not the one the run started with: "
        "it was edited once the store already held results, so these verdicts are not pre-registered. Changes:"
    ]
    for entry in history:
        lines += [f"> - {entry['at']}: {change}" for change in entry["changes"]]
    return [*lines, ""]


def with_rules_notice(run_dir, text: str) -> str:
    """`text` (CLAIMS.md) with the notice after its title, when the rules changed after the results."""
    notice = rules_notice(run_dir)
    if not notice:
        return text
    title, _, rest = text.partition("\n")
    return "\n".join([title, "", *notice, rest.lstrip("\n")])
