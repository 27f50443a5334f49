"""`polyalign data build`: pairs from the real SNLI question files, mixtures, writers, bad input, translator."""

import json
import shutil

import pytest
import torch

from helpers import packaged_tokenizer, run_cli
from polyalign.alignment.alignment_data import PairRequest, build_pairs
from polyalign.alignment.pair_records import question_file_records
from polyalign.alignment.translation import Seq2SeqTranslator, translate_records
from polyalign.cli.data import add_cli
from polyalign.core.errors import PolyalignError
from polyalign.core.files import read_records
from polyalign.core.prompts import PromptPack
from polyalign.core.tasks import load_task

PACK = PromptPack.load()
SNLI = load_task("snli")


def test_pairs_render_parsed_question_files_with_our_renderer(data_dir):
    pairs = build_pairs(PairRequest("snli", ["zh", "es"], "en", 6, 0, data_dir, PACK))
    english = read_records(data_dir / SNLI.train_file)
    raw_zh = read_records(data_dir / "snli" / "snli_zh10k_train_question.json")
    parsed_zh = question_file_records(SNLI, "zh", data_dir, english)
    assert len(pairs) == 12 and {p["source_lang"] for p in pairs} == {"zh", "es"}
    assert all(p["target_lang"] == "en" for p in pairs)
    for p in pairs:
        assert p["completion"] == PACK.query(SNLI, "en", english[p["index"]])
        if p["source_lang"] == "zh":
            record = parsed_zh[p["index"]]
            assert p["prompt"] == PACK.query(SNLI, "zh", record) + "\nTranslate the input from Chinese to English:\n"
            # our zh template is the paper's, so the pair reproduces the benchmark's file byte for byte
            assert (p["prompt"], p["completion"]) == (raw_zh[p["index"]]["input"], raw_zh[p["index"]]["answer"])
            assert record["premise"] and "前提" not in record["premise"]
        else:
            assert p["prompt"].endswith("\nTranslate the input from Spanish to English:\n")


def test_mixture_is_seeded_shuffled_and_per_language_stable(data_dir):
    a = build_pairs(PairRequest("snli", ["zh", "es"], "en", 6, 0, data_dir, PACK))
    assert a == build_pairs(PairRequest("snli", ["zh", "es"], "en", 6, 0, data_dir, PACK))
    langs = [p["source_lang"] for p in a]
    assert langs != sorted(langs) and langs != sorted(langs, reverse=True)  # interleaved, not grouped
    b = build_pairs(PairRequest("snli", ["zh", "es"], "en", 6, 1, data_dir, PACK))
    assert [p["index"] for p in a] != [p["index"] for p in b]
    zh_only = build_pairs(PairRequest("snli", ["zh"], "en", 6, 0, data_dir, PACK))
    assert sorted(p["index"] for p in zh_only) == sorted(p["index"] for p in a if p["source_lang"] == "zh")


def test_explicit_pair_files(tmp_path):
    de = [{"premise": f"Prämisse {i}", "hypothesis": f"Hypothese {i}"} for i in range(4)]
    en = [{"premise": f"Premise {i}", "hypothesis": f"Hypothesis {i}"} for i in range(4)]
    (tmp_path / "de.jsonl").write_text("".join(json.dumps(r) + "\n" for r in de))
    (tmp_path / "en.json").write_text(json.dumps(en))
    pairs = build_pairs(
        PairRequest(SNLI, ["de"], "en", 4, 0, None, PACK, {"de": tmp_path / "de.jsonl"}, tmp_path / "en.json")
    )
    for p in pairs:
        assert p["prompt"] == PACK.query(SNLI, "de", de[p["index"]]) + "\nTranslate the input from German to English:\n"
        assert p["completion"] == PACK.query(SNLI, "en", en[p["index"]])
    # a non-English target works the same way once its records are given
    back = build_pairs(
        PairRequest(SNLI, ["en"], "de", 2, 0, None, PACK, {"en": tmp_path / "en.json"}, tmp_path / "de.jsonl")
    )
    assert all(p["prompt"].endswith("from English to German:\n") for p in back)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(sources=["zh"], target="en", per_language=20000), "more than the 10000"),
        (dict(sources=["en"], target="en"), "is the target language"),
        (dict(sources=["xx"], target="en"), "unknown language 'xx'"),
        (dict(sources=["fr"], target="en"), "--pair-file fr=PATH"),
        (dict(sources=["zh"], target="fr"), "--target-file"),  # the benchmark has no French questions
        (dict(sources=["zh"], target="en", per_language=0), "at least 1"),
        (dict(sources=["zh"], target="en", source_files={"de": "de.json"}), "not among the sources"),
    ],
)
def test_bad_requests(data_dir, kwargs, message):
    args = dict(task="snli", per_language=3, seed=0, data_dir=data_dir, pack=PACK) | kwargs
    with pytest.raises(PolyalignError, match=message):
        build_pairs(PairRequest(**args))


def test_bad_files(tmp_path):
    good = [{"premise": "p", "hypothesis": "h"}] * 3
    (tmp_path / "en.json").write_text(json.dumps(good))
    (tmp_path / "short.json").write_text(json.dumps(good[:2]))
    (tmp_path / "empty.json").write_text(json.dumps(good[:2] + [{"premise": " ", "hypothesis": "h"}]))
    cases = {"missing.json": "file not found", "short.json": "item-parallel", "empty.json": "empty question text"}
    for name, message in cases.items():
        with pytest.raises(PolyalignError, match=message):
            build_pairs(
                PairRequest(SNLI, ["de"], "en", 2, 0, None, PACK, {"de": tmp_path / name}, tmp_path / "en.json")
            )


def test_cli_writes_llamafactory_files_and_refuses_overwrite(data_dir, tmp_path, capsys):
    out = tmp_path / "mix.jsonl"
    argv = [
        "build",
        "--task",
        "snli",
        "--sources",
        "zh,sw",
        "--per-language",
        "3",
        "--seed",
        "7",
        "--data-dir",
        str(data_dir),
        "--out",
        str(out),
        "--format",
        "llamafactory",
    ]
    with pytest.raises(PolyalignError, match="needs --model"):
        run_cli(add_cli, ["data", *argv])
    assert not out.exists()  # refused before any pair was built
    model = tmp_path / "gemma"
    shutil.copytree(packaged_tokenizer("gemma-3-270m"), model)
    (model / "config.json").write_text("{}")
    argv += ["--model", str(model)]
    assert run_cli(add_cli, ["data", *argv]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows == build_pairs(PairRequest("snli", ["zh", "sw"], "en", 3, 7, data_dir, PACK))
    alpaca = json.loads((tmp_path / "mix.alpaca.json").read_text())
    assert alpaca == [
        {"instruction": "<bos>" + r["prompt"], "input": "", "output": r["completion"] + "<eos>"} for r in rows
    ]
    assert "template: empty" in (tmp_path / "mix.llamafactory.yaml").read_text()
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    assert info["mix"] == {
        "file_name": "mix.alpaca.json",
        "columns": {"prompt": "instruction", "query": "input", "response": "output"},
    }
    with pytest.raises(PolyalignError, match="--overwrite"):
        run_cli(add_cli, ["data", *argv])
    assert run_cli(add_cli, ["data", *argv, "--overwrite", "--format", "jsonl"]) == 0
    with pytest.raises(PolyalignError, match="KEY=VALUE"):
        run_cli(add_cli, ["data", *argv, "--overwrite", "--pair-file", "zh"])


def test_a_non_english_target_reads_its_question_file(data_dir):
    """The benchmark's question files serve a target like a source: de's questions, parsed and checked
    item-parallel with the English train file, are the completions; English can then be a source."""
    pairs = build_pairs(PairRequest("snli", ["zh", "en"], "de", 5, 0, data_dir, PACK))
    english = read_records(data_dir / SNLI.train_file)
    german = question_file_records(SNLI, "de", data_dir, english)
    chinese = question_file_records(SNLI, "zh", data_dir, english)
    assert len(pairs) == 10
    for p in pairs:
        assert p["completion"] == PACK.query(SNLI, "de", german[p["index"]])
        source = chinese if p["source_lang"] == "zh" else english
        assert p["prompt"].startswith(PACK.query(SNLI, p["source_lang"], source[p["index"]]) + "\n")
        assert p["prompt"].endswith(" to German:\n")


def test_data_build_and_the_experiments_data_step_make_the_same_pairs(data_dir, tmp_path):
    """One builder for both: `data build --target de` writes the bytes the run's data step writes."""
    import yaml

    from polyalign.study.alignment_steps import data_step
    from polyalign.study.experiment_spec import load_experiment
    from polyalign.study.step_context import StepContext

    setting = {"name": "al", "task": "snli", "sources": ["zh", "es"], "target": "de", "per_language": 6, "seed": 3}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({"models": ["gemma-3-270m"], "alignment": [setting], "data_dir": str(data_dir)}))
    exp = load_experiment(path)
    data_step(StepContext(exp, None), exp.alignment[0]).run(tmp_path / "step")
    argv = ["data", "build", "--task", "snli", "--sources", "zh,es", "--target", "de", "--per-language", "6"]
    argv += ["--seed", "3", "--data-dir", str(data_dir), "--out", str(tmp_path / "built.jsonl")]
    assert run_cli(add_cli, argv) == 0
    assert (tmp_path / "built.jsonl").read_bytes() == (tmp_path / "step" / "pairs.jsonl").read_bytes()
    assert {json.loads(line)["target_lang"] for line in (tmp_path / "built.jsonl").read_text().splitlines()} == {"de"}


@pytest.fixture(scope="module")
def tiny_seq2seq(tiny_llama, tmp_path_factory):
    """A random 2-layer BART with the SmolLM tokenizer: translation mechanics, offline, in seconds."""
    from transformers import AutoTokenizer, BartConfig, BartForConditionalGeneration

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    config = BartConfig(
        vocab_size=len(tok),
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=256,
        init_std=0.5,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        decoder_start_token_id=tok.bos_token_id,
        forced_eos_token_id=None,
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_bart")
    BartForConditionalGeneration(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


@pytest.mark.slow
def test_translator_batches_and_caches(tiny_seq2seq, tmp_path):
    records = [
        {"premise": f"A man number {i} holds a phone.", "hypothesis": "He is outside.", "answer": "x"} for i in range(5)
    ]
    cache = tmp_path / "cache.jsonl"
    first = Seq2SeqTranslator(tiny_seq2seq, "en", "fr", max_new_tokens=4)
    out = translate_records(
        records, ["premise", "hypothesis"], "en", "fr", tiny_seq2seq, batch_size=2, cache_path=cache, translator=first
    )
    assert first.batches == [2, 2, 2]  # 6 distinct texts (the repeated hypothesis once), batches of 2
    assert len(cache.read_text().splitlines()) == 6
    assert all(r["answer"] == "x" and isinstance(r["premise"], str) for r in out)
    assert len({r["hypothesis"] for r in out}) == 1
    second = Seq2SeqTranslator(tiny_seq2seq, "en", "fr", max_new_tokens=4)
    again = translate_records(
        records, ["premise", "hypothesis"], "en", "fr", tiny_seq2seq, batch_size=2, cache_path=cache, translator=second
    )
    assert again == out and second.batches == [] and second.model is None  # cache only: never loaded
    other = Seq2SeqTranslator(tiny_seq2seq, "en", "de", max_new_tokens=4)
    translate_records(records[:1], ["premise"], "en", "de", tiny_seq2seq, cache_path=cache, translator=other)
    assert other.batches == [1]  # the key includes the language pair


def test_translation_resumes_after_interruption(tmp_path):
    calls = []

    def fake(texts):
        calls.append(list(texts))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return [t.upper() for t in texts]

    records = [{"input": f"text {i}"} for i in range(6)]
    cache = tmp_path / "cache.jsonl"
    with pytest.raises(KeyboardInterrupt):
        translate_records(records, ["input"], "en", "de", "m", batch_size=2, cache_path=cache, translator=fake)
    with cache.open("a") as handle:
        handle.write('{"key": "torn')  # killed mid-line
    done = {t for batch in calls[:1] for t in batch}
    calls.clear()
    out = translate_records(
        records,
        ["input"],
        "en",
        "de",
        "m",
        batch_size=2,
        cache_path=cache,
        translator=lambda texts: (calls.append(list(texts)), [t.upper() for t in texts])[1],
    )
    assert [r["input"] for r in out] == [f"TEXT {i}" for i in range(6)]
    assert not done & {t for batch in calls for t in batch} and sum(map(len, calls)) == 4
    assert len(cache.read_text().splitlines()) == 6


@pytest.mark.slow
def test_build_with_translator_for_languages_without_files(tiny_seq2seq, data_dir, tmp_path):
    calls = []

    def translate(records, src, tgt):
        calls.append((len(records), src, tgt))
        return translate_records(
            records,
            SNLI.fields,
            src,
            tgt,
            tiny_seq2seq,
            4,
            tmp_path / "c.jsonl",
            translator=Seq2SeqTranslator(tiny_seq2seq, src, tgt, max_new_tokens=4),
        )

    pairs = build_pairs(PairRequest("snli", ["fr", "zh"], "en", 3, 0, data_dir, PACK, translate=translate))
    assert calls == [(3, "en", "fr")]  # zh comes from its question file
    assert sum(p["source_lang"] == "fr" for p in pairs) == 3
    assert all(p["prompt"].endswith("from French to English:\n") for p in pairs if p["source_lang"] == "fr")
