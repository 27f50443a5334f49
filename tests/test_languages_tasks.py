import json

import pytest

from polyalign.core.errors import PolyalignError
from polyalign.core.files import read_records
from polyalign.core.languages import PAPER_LANGUAGES, Language, get_language, parse_languages, register_language
from polyalign.core.tasks import gold_labels, load_task, load_test_records


def test_registry_has_the_papers_20_languages():
    assert len(PAPER_LANGUAGES) == 20
    assert get_language("zh").name == "Chinese" and get_language("hi").script == "Devanagari"
    assert parse_languages("all") == list(PAPER_LANGUAGES)


def test_unknown_language_is_one_clear_error():
    with pytest.raises(PolyalignError, match="unknown language 'xx'"):
        parse_languages("en,xx")


def test_user_added_language(monkeypatch):
    from polyalign.core import languages

    # A copy of the registry for this test only: 'yo' must not leak into later tests.
    monkeypatch.setattr(languages, "_REGISTRY", dict(languages._REGISTRY))
    register_language(Language("yo", "Yoruba", "Yorùbá", "Latin"))
    assert parse_languages("yo,en") == ["yo", "en"]
    monkeypatch.undo()
    with pytest.raises(PolyalignError, match="unknown language 'yo'"):
        parse_languages("yo")


@pytest.mark.parametrize("name,classes,shots", [("emotion", 2, 2), ("snli", 3, 6), ("paws", 2, 4)])
def test_builtin_tasks_load_real_files(name, classes, shots, data_dir):
    task = load_task(name)
    assert len(task.classes) == classes and task.shots == shots
    records = load_test_records(task, "sw", data_dir)
    assert len(records) in (500, 600)


def test_gold_comes_from_english_by_index_and_reports_the_norwegian_swap(data_dir):
    task = load_task("snli")
    records = load_test_records(task, "no", data_dir)
    gold = gold_labels(task, "no", records, data_dir)
    # The paper's 'no' file writes 'motsigelse' (contradiction) on the neutral items.
    assert gold.mapping["motsigelse"] == {"neutral": 200}
    assert gold.mapping["nøytral"] == {"contradiction": 200}
    ja = gold_labels(task, "ja", load_test_records(task, "ja", data_dir), data_dir)
    assert ja.mapping["中性"] == {"neutral": 200}
    assert gold.classes.count("neutral") == 200


def test_paws_gold_maps_same_different(data_dir):
    task = load_task("paws")
    gold = gold_labels(task, "de", load_test_records(task, "de", data_dir), data_dir)
    assert set(gold.classes) == {"paraphrase", "not_paraphrase"}


def test_task_declared_as_a_user_file_with_jsonl_records(tmp_path):
    (tmp_path / "t").mkdir()
    for lang, words in {"en": ["good", "bad"], "fr": ["bon", "mauvais"]}.items():
        rows = [{"text": f"{lang} item {i}", "answer": words[i % 2]} for i in range(4)]
        (tmp_path / "t" / f"mini_{lang}.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    spec = tmp_path / "mini.yaml"
    spec.write_text("name: mini\nclasses: [good, bad]\nfields: [text]\nshots: 0\ntest_file: 't/mini_{lang}.jsonl'\n")
    task = load_task(str(spec))
    records = load_test_records(task, "fr", tmp_path)
    assert gold_labels(task, "fr", records, tmp_path).classes == ["good", "bad", "good", "bad"]


@pytest.mark.parametrize(
    "content,message", [("", "empty"), ("[{", "malformed JSON"), ("{}", "non-empty list"), ("[1, 2]", "JSON object")]
)
def test_bad_record_files(tmp_path, content, message):
    path = tmp_path / "x.json"
    path.write_text(content)
    with pytest.raises(PolyalignError, match=message):
        read_records(path)


def test_missing_field_names_file_and_record(tmp_path):
    (tmp_path / "ap_emotion").mkdir()
    (tmp_path / "ap_emotion" / "emotion_en500_test.json").write_text('[{"answer": "positive"}]')
    with pytest.raises(PolyalignError, match=r"emotion_en500_test.json: record 0 lacks text field 'input'"):
        load_test_records(load_task("emotion"), "en", tmp_path)
