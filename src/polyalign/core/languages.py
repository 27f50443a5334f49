"""The language registry: one record per language, shared by every command.

The 20 languages of the paper are built in; users add others with
`register_language` or a JSON file (`POLYALIGN_LANGUAGES` or `--languages-file`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from polyalign.core.errors import PolyalignError


@dataclass(frozen=True)
class Language:
    """A language as the tool knows it.

    code: the short code used in file names (`zh`, `no`, ...).
    name: English name, used in translation instructions ("from Chinese to English").
    native: the language's own name for itself.
    script: the writing system (ISO 15924 name), used to group results.
    """

    code: str
    name: str
    native: str
    script: str


_BUILTIN = [
    Language("en", "English", "English", "Latin"),
    Language("zh", "Chinese", "中文", "Han"),
    Language("de", "German", "Deutsch", "Latin"),
    Language("fr", "French", "Français", "Latin"),
    Language("es", "Spanish", "Español", "Latin"),
    Language("it", "Italian", "Italiano", "Latin"),
    Language("nl", "Dutch", "Nederlands", "Latin"),
    Language("ja", "Japanese", "日本語", "Japanese"),
    Language("ru", "Russian", "Русский", "Cyrillic"),
    Language("sv", "Swedish", "Svenska", "Latin"),
    Language("sl", "Slovenian", "Slovenščina", "Latin"),
    Language("pl", "Polish", "Polski", "Latin"),
    Language("bg", "Bulgarian", "Български", "Cyrillic"),
    Language("no", "Norwegian", "Norsk", "Latin"),
    Language("ms", "Malay", "Bahasa Melayu", "Latin"),
    Language("is", "Icelandic", "Íslenska", "Latin"),
    Language("hi", "Hindi", "हिन्दी", "Devanagari"),
    Language("th", "Thai", "ไทย", "Thai"),
    Language("sw", "Swahili", "Kiswahili", "Latin"),
    Language("bn", "Bengali", "বাংলা", "Bengali"),
]

PAPER_LANGUAGES: tuple[str, ...] = tuple(lang.code for lang in _BUILTIN)
_REGISTRY: dict[str, Language] = {lang.code: lang for lang in _BUILTIN}
_BUILTIN_BY_CODE: dict[str, Language] = dict(_REGISTRY)


def register_language(language: Language) -> None:
    """Add (or replace) a language so every command accepts its code."""
    _REGISTRY[language.code] = language


def load_languages_file(path: str | Path) -> list[Language]:
    """Register languages from a JSON list of {code, name, native, script} objects."""
    path = Path(path)
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PolyalignError(f"{path}: not a valid languages file: {exc}") from None
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "code" in e and "name" in e for e in entries):
        raise PolyalignError(f"{path}: not a valid languages file (need a JSON list of objects with code and name)")
    languages = [_entry(path, i, e) for i, e in enumerate(entries)]
    codes = [language.code for language in languages]
    for code in codes:
        if codes.count(code) > 1:
            raise PolyalignError(f"{path}: language code '{code}' is listed twice")
    for language in languages:
        register_language(language)
    return languages


def _entry(path: Path, i: int, entry: dict) -> Language:
    """One checked entry: text fields, a code usable in lists and file names, and no built-in
    redefined (their names enter translation instructions and reports)."""
    values = {key: entry.get(key, entry["name"] if key == "native" else "unknown") for key in Language.__annotations__}
    if not all(isinstance(v, str) and v.strip() for v in values.values()):
        raise PolyalignError(f"{path}: entry {i}: code, name, native and script must be non-empty strings")
    code = values["code"]
    if not code.replace("-", "").replace("_", "").isalnum() or code == "all":
        raise PolyalignError(f"{path}: entry {i}: code '{code}' must be letters, digits, '-' or '_'")
    builtin = _BUILTIN_BY_CODE.get(code)
    if builtin is not None:
        if any(entry[key] != getattr(builtin, key) for key in values if key in entry):
            raise PolyalignError(
                f"{path}: '{code}' is built in ({builtin.name}); a languages file may only add languages"
            )
        return builtin
    return Language(**values)


def _load_env_languages() -> None:
    extra = os.environ.get("POLYALIGN_LANGUAGES")
    if extra:
        load_languages_file(extra)


def get_language(code: str) -> Language:
    """The registered language for `code`, or a one-line error listing the known codes."""
    _load_env_languages()
    try:
        return _REGISTRY[code]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise PolyalignError(
            f"unknown language '{code}' (known: {known}; add one with --languages-file or POLYALIGN_LANGUAGES)"
        ) from None


def parse_languages(spec: str | list[str], available: list[str] | None = None) -> list[str]:
    """Turn `all` or `en,zh,...` into validated codes.

    `all` means every language in `available` (e.g. those the pack covers), in the
    paper's order, falling back to the paper's 20.
    """
    if isinstance(spec, str):
        codes = [c.strip() for c in spec.split(",") if c.strip()]
    else:
        codes = list(spec)
    if codes == ["all"]:
        pool = available if available is not None else list(PAPER_LANGUAGES)
        order = {code: i for i, code in enumerate(PAPER_LANGUAGES)}
        return sorted(pool, key=lambda c: (order.get(c, len(order)), c))
    if not codes:
        raise PolyalignError("no languages given (use 'all' or a comma-separated list such as en,zh)")
    for code in codes:
        get_language(code)
    if len(set(codes)) != len(codes):
        raise PolyalignError(f"language listed twice in '{','.join(codes)}'")
    return codes
