"""A converted model folder lists its added tokens in tokenizer_config.json, and loads the same tokenizer.

Real tokenizers of the packaged models: Gemma 3 (SentencePiece-style BPE, 262k tokens, 6k added) and
SmolLM2 (byte-level BPE).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from polyalign.engine.model_paths import lists_added_tokens, materialize_alias, record_added_tokens

TEXTS = [
    "Review: great food, slow service.\nLabel:",
    "评论：这家餐厅很好。 标签：",
    "Отзыв:  ужасно\n\n\tМетка: <bos> <pad>",
    "समीक्षा: अच्छा है। लेबल:",
    "  leading spaces and <start_of_turn>user\n",
]


def without_added_tokens(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    config = json.loads((target / "tokenizer_config.json").read_text())
    config.pop("added_tokens_decoder", None)
    (target / "tokenizer_config.json").write_text(json.dumps(config))
    return target


def assert_same_tokenizer(a, b) -> None:
    assert type(a) is type(b)
    assert a.backend_tokenizer.to_str() == b.backend_tokenizer.to_str()  # the whole Rust tokenizer
    assert a.added_tokens_decoder == b.added_tokens_decoder
    assert a.all_special_tokens == b.all_special_tokens and a.padding_side == b.padding_side
    for text in TEXTS:
        assert a(text)["input_ids"] == b(text)["input_ids"]
        assert a(text, add_special_tokens=False)["input_ids"] == b(text, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("fixture", ["gemma_tokenizer", "smollm_tokenizer"])
def test_listing_the_added_tokens_loads_the_same_tokenizer(fixture, request, tmp_path):
    from transformers import AutoTokenizer

    folder = without_added_tokens(request.getfixturevalue(fixture), tmp_path / "tok")
    assert not lists_added_tokens(folder)
    before = AutoTokenizer.from_pretrained(folder)
    assert before.added_tokens_decoder  # both models have some: the check below is not vacuous
    record_added_tokens(folder, before)
    assert lists_added_tokens(folder)
    listed = json.loads((folder / "tokenizer_config.json").read_text())["added_tokens_decoder"]
    assert len(listed) == len(before.added_tokens_decoder)
    assert_same_tokenizer(before, AutoTokenizer.from_pretrained(folder))


@pytest.mark.slow
def test_a_cached_folder_converted_before_gains_the_list_once(gemma_dir, tmp_path, monkeypatch):
    """An intact older conversion is upgraded in place on first use; its weights are not touched."""
    name = Path(gemma_dir).name
    folder = tmp_path / "models" / name
    folder.mkdir(parents=True)
    for path in Path(gemma_dir).iterdir():
        if path.suffix == ".safetensors":
            (folder / path.name).symlink_to(path)
        else:
            shutil.copy2(path, folder / path.name)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("added_tokens_decoder", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    monkeypatch.setenv("POLYALIGN_CACHE", str(tmp_path))
    assert materialize_alias("gemma-3-270m") == folder
    assert lists_added_tokens(folder)
    assert (folder / "model.safetensors").is_symlink()  # not converted again
