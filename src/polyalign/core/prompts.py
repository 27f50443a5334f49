"""Prompt packs and the one prompt renderer used by evaluation, training data and the lens.

A pack is JSON (the schema of the paper's `prompts.json`): per task and language, the
`query_parts` template, label words per output mode, and the few-shot block either
verbatim (`fewshot_by_mode`, as in the paper's pack) or as structured `demos` that are
rendered with the same template as the test items (our own pack).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from polyalign.core.errors import PolyalignError
from polyalign.core.files import read_text
from polyalign.core.tasks import TaskSpec

FEWSHOT = "<FEWSHOT>"
# CLI mode name -> key used inside packs.
MODES = {"english": "english_labels", "native": "same_language", "agnostic": "task_agnostic"}


def default_pack_path() -> Path:
    return Path(str(files("polyalign.core") / "packs" / "polyalign.json"))


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise PolyalignError(f"unknown mode '{mode}' (choose from {', '.join(MODES)})")
    return MODES[mode]


@dataclass
class PromptPack:
    """A loaded pack; `source` names the file in error messages."""

    data: dict
    source: str

    @classmethod
    def load(cls, path: str | Path | None = None) -> PromptPack:
        path = Path(path) if path else default_pack_path()
        text = read_text(path, "prompt pack")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PolyalignError(f"{path}: malformed JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(data, dict):
            raise PolyalignError(f"{path}: a prompt pack must be a JSON object")
        return cls(data, str(path))

    def languages(self, task: str) -> list[str]:
        return [code for code, entry in self.data.get(task, {}).items() if isinstance(entry, dict)]

    def entry(self, task: TaskSpec, lang: str) -> dict:
        entry = self.data.get(task.name, {}).get(lang)
        if not isinstance(entry, dict):
            raise PolyalignError(f"{self.source}: no prompts for task '{task.name}' in language '{lang}'")
        parts = entry.get("query_parts")
        if not (isinstance(parts, list) and parts and all(isinstance(p, str) for p in parts) and FEWSHOT in parts):
            raise PolyalignError(
                f"{self.source}: {task.name}/{lang}: query_parts must be a list of strings containing {FEWSHOT}"
            )
        for name in _placeholders(parts):
            if name not in task.fields:
                raise PolyalignError(
                    f"{self.source}: {task.name}/{lang}: placeholder <{name}> is not a field "
                    f"of the task ({', '.join(task.fields)})"
                )
        return entry

    def label_words(self, task: TaskSpec, lang: str, mode: str) -> dict[str, str]:
        """The word the model must produce for each class in this mode."""
        key = check_mode(mode)
        if key == "english_labels":
            words = self.data.get("labels_en", {}).get(task.name)
        elif key == "task_agnostic":
            words = self.data.get("labels_task_agnostic", {}).get(task.name)
        else:
            words = self.entry(task, lang).get("labels_same_language")
        if not isinstance(words, dict):
            raise PolyalignError(f"{self.source}: no label words for {task.name}/{lang} in mode '{mode}'")
        missing = [c for c in task.classes if not (isinstance(words.get(c), str) and words[c].strip())]
        if missing:
            raise PolyalignError(
                f"{self.source}: {task.name}/{lang} mode '{mode}' has no label word for class {', '.join(missing)}"
            )
        return {c: words[c] for c in task.classes}

    def fewshot(self, task: TaskSpec, lang: str, mode: str) -> str:
        """The few-shot block: verbatim from the pack, or rendered from its demos."""
        key = check_mode(mode)
        entry = self.entry(task, lang)
        verbatim = entry.get("fewshot_by_mode", {}).get(key) if isinstance(entry.get("fewshot_by_mode"), dict) else None
        if isinstance(verbatim, str):
            self.check_verbatim_shots(task)
            return verbatim
        demos = entry.get("demos")
        if task.shots == 0 and not demos:
            return ""
        if not isinstance(demos, list) or not demos:
            raise PolyalignError(f"{self.source}: {task.name}/{lang} has no few-shot block for mode '{mode}'")
        if len(demos) != task.shots:  # the task's shot count is what the prompt must hold
            raise PolyalignError(
                f"{self.source}: {task.name}/{lang} has {len(demos)} demos but the task declares shots: {task.shots}"
            )
        words = self.label_words(task, lang, mode)
        rendered = []
        for i, demo in enumerate(demos):
            label = demo.get("label") if isinstance(demo, dict) else None
            if label not in words:
                raise PolyalignError(f"{self.source}: {task.name}/{lang} demo {i} has unknown label {label!r}")
            rendered.append(self.query(task, lang, demo.get("fields", {}), where=f"demo {i}") + words[label] + '"')
        return "\n".join(rendered)

    def check_verbatim_shots(self, task: TaskSpec) -> None:
        """A verbatim few-shot block holds the demonstrations the pack's `_meta.shots` declares (the
        paper's pack: emotion 2, snli 6, paws 4); a task asking for another count is refused, not
        silently given the pack's block."""
        meta = self.data.get("_meta")
        shots = meta.get("shots") if isinstance(meta, dict) else None
        declared = shots.get(task.name) if isinstance(shots, dict) else None
        if isinstance(declared, int) and declared != task.shots:
            raise PolyalignError(
                f"{self.source}: {task.name}'s few-shot block is verbatim, {declared}-shot; the task declares "
                f"shots: {task.shots}, which this pack cannot honour (use shots: {declared}, or a pack with demos)"
            )

    def query(self, task: TaskSpec, lang: str, record: dict, where: str = "record") -> str:
        """One item without the few-shot block, ending at the answer cue (the question side)."""
        parts = self.entry(task, lang)["query_parts"]
        start = parts.index(FEWSHOT) + 1
        if start < len(parts) and parts[start] == "\n":
            start += 1
        return _fill(parts[start:], record, self.source, f"{task.name}/{lang} {where}")

    def render(self, task: TaskSpec, lang: str, mode: str, record: dict) -> str:
        """The full prompt for one item, byte for byte what the model reads."""
        prefix, rest = self.split(task, lang, mode)
        return prefix + _fill(rest, record, self.source, f"{task.name}/{lang}")

    def split(self, task: TaskSpec, lang: str, mode: str) -> tuple[str, list[str]]:
        """The text shared by every item (few-shot block and fixed leading parts), and the rest."""
        parts = self.entry(task, lang)["query_parts"]
        fewshot = self.fewshot(task, lang, mode)
        prefix: list[str] = []
        for i, part in enumerate(parts):
            if _placeholders([part]) and part != FEWSHOT:
                return "".join(prefix), parts[i:]
            prefix.append(fewshot if part == FEWSHOT else part)
        return "".join(prefix), []


def _placeholders(parts: list[str]) -> list[str]:
    return [p[1:-1] for p in parts if p.startswith("<") and p.endswith(">") and p != FEWSHOT]


def _fill(parts: list[str], record: dict, source: str, where: str) -> str:
    out = []
    for part in parts:
        if part.startswith("<") and part.endswith(">") and part != FEWSHOT:
            value = record.get(part[1:-1])
            if not isinstance(value, str):
                raise PolyalignError(f"{source}: {where} lacks field '{part[1:-1]}'")
            out.append(value)
        else:
            out.append(part)
    return "".join(out)
