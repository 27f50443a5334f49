"""Experiment configs shipped inside the package (polyalign/study/experiments/{paper,examples}/*.yaml).

`polyalign run paper/table3_tasks` finds a packaged config by name; `polyalign configs` lists them
and `polyalign configs copy NAME [DEST]` copies one out for editing. Light on purpose: no torch.
"""

from __future__ import annotations

import shutil
from importlib.resources import files
from pathlib import Path

from polyalign.core.errors import PolyalignError


def packaged_root() -> Path:
    return Path(str(files("polyalign.study").joinpath("experiments")))


def packaged_names() -> list[str]:
    """Names like `paper/table3_tasks`, sorted."""
    root = packaged_root()
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.yaml"))


def packaged_config(name: str) -> Path | None:
    """The packaged file for `paper/table3_tasks` (with or without .yaml), else None."""
    stem = name[:-5] if name.endswith(".yaml") else name
    return packaged_root() / f"{stem}.yaml" if stem in packaged_names() else None


def resolve_experiment(name_or_path: str | Path) -> Path:
    """An existing YAML file (a path wins), else a packaged config by name."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    found = packaged_config(str(name_or_path))
    if found is None:
        raise PolyalignError(
            f"experiment '{name_or_path}' is neither a file nor a packaged config "
            f"(packaged: {', '.join(packaged_names())}; see `polyalign configs`)"
        )
    return found


def copy_config(name: str, dest: str | Path | None = None, overwrite: bool = False) -> Path:
    """Copy a packaged config to DEST (a file, or a folder to put NAME's file in; default: the CWD)."""
    source = packaged_config(name)
    if source is None:
        raise PolyalignError(f"no packaged config '{name}' (packaged: {', '.join(packaged_names())})")
    target = Path(dest).expanduser() if dest else Path(source.name)
    if target.is_dir():
        target = target / source.name
    if target.exists() and not overwrite:
        raise PolyalignError(f"{target} exists; pass --overwrite to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target


def config_description(path: Path) -> str:
    """The config's `description:` line (empty where the file cannot be read), for `polyalign configs`."""
    import yaml

    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return ""
    return str(raw.get("description", "")) if isinstance(raw, dict) else ""
