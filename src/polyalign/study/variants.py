"""How the aligned models of one alignment setting are named in results: one name per training seed.

A setting that declares `seeds` trains one adapter per seed, each evaluated and stored as
NAME@s<SEED> (e.g. zh-es_en@s1); without `seeds` its single adapter keeps the plain NAME, so runs
made before seeds existed keep their rows. Setting names cannot hold '@' (experiment_spec), so
the report splits a stored name back into its setting and seed without ambiguity.
"""

from __future__ import annotations

import re

SEED_MARK = "@s"
_SEEDED = re.compile(rf"^(.*){re.escape(SEED_MARK)}(\d+)$")


def seeded_name(setting: str, seed: int | None) -> str:
    """The stored name of `setting`'s adapter trained with `seed` (None: a setting without `seeds`)."""
    return setting if seed is None else f"{setting}{SEED_MARK}{seed}"


def split_seeded(name: str) -> tuple[str, int | None]:
    """(setting, seed) of a stored name; seed None for a setting without `seeds` (and for 'base')."""
    match = _SEEDED.match(name)
    return (match.group(1), int(match.group(2))) if match else (name, None)
