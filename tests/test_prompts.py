import json

import pytest

from helpers import PAPER_PACK
from polyalign.core.errors import PolyalignError
from polyalign.core.languages import PAPER_LANGUAGES
from polyalign.core.prompts import MODES, PromptPack
from polyalign.core.tasks import load_task, load_test_records

PACK_MODE = {v: k for k, v in MODES.items()}


def paper_script_prompt(entry: dict, fewshot: str, task: str, record: dict) -> str:
    """The paper scripts' template (spec 2.2), built from field labels, not query_parts."""
    labels = entry["field_labels"]
    if task == "emotion":
        return fewshot + "\n" + record["input"] + "\n" + labels["answer"] + ' "'
    first, second = ("premise", "hypothesis") if task == "snli" else ("sentence1", "sentence2")
    return (
        fewshot
        + "\n"
        + labels[first]
        + " "
        + record[first]
        + "\n"
        + labels[second]
        + " "
        + record[second]
        + "\n"
        + labels["answer"]
        + ' "'
    )


def test_paper_pack_renders_byte_identical_prompts_everywhere(data_dir):
    pack = PromptPack.load(PAPER_PACK)
    raw = json.loads(PAPER_PACK.read_text())
    checked = 0
    for task_name in ("emotion", "snli", "paws"):
        task = load_task(task_name)
        for lang in PAPER_LANGUAGES:
            records = load_test_records(task, lang, data_dir)
            entry = raw[task_name][lang]
            for pack_mode, fewshot in entry["fewshot_by_mode"].items():
                for record in (records[0], records[-1]):
                    got = pack.render(task, lang, PACK_MODE[pack_mode], record)
                    assert got == paper_script_prompt(entry, fewshot, task_name, record)
                    checked += 1
    # emotion has 3 modes, snli and paws 1, in 20 languages, 2 records each
    assert checked == 20 * (3 + 1 + 1) * 2


def test_paper_pack_keeps_its_quirks_verbatim(data_dir):
    pack = PromptPack.load(PAPER_PACK)
    fewshot = pack.fewshot(load_task("emotion"), "en", "english")
    assert 'Emotion: "positive"' + " " * 13 + "\n" in fewshot
    assert "Locatie:" in pack.fewshot(load_task("snli"), "nl", "english")


def test_paper_pack_lacks_native_snli_labels_and_says_so(data_dir):
    pack = PromptPack.load(PAPER_PACK)
    with pytest.raises(PolyalignError, match="no few-shot block for mode 'native'"):
        pack.render(load_task("snli"), "zh", "native", {"premise": "a", "hypothesis": "b"})


@pytest.mark.parametrize("task_name", ["emotion", "snli", "paws"])
@pytest.mark.parametrize("mode", list(MODES))
def test_own_pack_covers_20_languages_in_every_mode(task_name, mode, data_dir):
    pack = PromptPack.load()
    task = load_task(task_name)
    paper = json.loads(PAPER_PACK.read_text())
    assert sorted(pack.languages(task_name)) == sorted(PAPER_LANGUAGES)
    for lang in PAPER_LANGUAGES:
        record = load_test_records(task, lang, data_dir)[0]
        prompt = pack.render(task, lang, mode, record)
        fewshot = pack.fewshot(task, lang, mode)
        words = pack.label_words(task, lang, mode)
        assert prompt.startswith(fewshot + "\n") and prompt.endswith(': "')
        assert fewshot.count('"\n') == task.shots - 1
        for word in words.values():
            assert f'"{word}"' in fewshot
        # our demonstrations are our own, not the paper's
        paper_fewshot = paper[task_name][lang]["fewshot"]
        assert not set(fewshot.splitlines()[:1]) & set(paper_fewshot.splitlines())


def test_unknown_mode_and_missing_label_word(tmp_path):
    pack = PromptPack.load()
    with pytest.raises(PolyalignError, match="unknown mode 'loud'"):
        pack.render(load_task("emotion"), "en", "loud", {"input": "x"})
    data = json.loads(PromptPack.load().source and open(pack.source).read())
    del data["emotion"]["de"]["labels_same_language"]["negative"]
    broken = tmp_path / "pack.json"
    broken.write_text(json.dumps(data))
    with pytest.raises(PolyalignError, match="has no label word for class negative"):
        PromptPack.load(broken).label_words(load_task("emotion"), "de", "native")
