"""One home for how a bench prints its figures and saves them (--out): indented JSON, written whole."""

from __future__ import annotations

import json
from pathlib import Path


def emit(report: dict, out: str | None) -> None:
    text = json.dumps(report, indent=1)
    print(text)
    if out:
        Path(out).write_text(text + "\n", encoding="utf-8")
