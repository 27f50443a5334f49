"""The cached, batched scorer against a naive full forward, on tiny random models."""

import pytest

from helpers import PREFIX, QUERIES, WORDS, make_items, naive_scores
from polyalign.core.errors import PolyalignError
from polyalign.engine.models import load_model
from polyalign.engine.scoring import (
    Indistinguishable,
    Item,
    Scorer,
    check_distinguishable,
    plan_batches,
    prefix_token_ids,
    scored_tokens,
)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["tiny_gemma", "tiny_llama"])
@pytest.mark.parametrize("rule", ["exact", "prefix"])
def test_cached_batched_scores_equal_naive_forward(family, rule, request):
    model, tokenizer = load_model(str(request.getfixturevalue(family)))
    items, shared = make_items(tokenizer, WORDS)
    sets = {c: prefix_token_ids(tokenizer, w) for c, w in WORDS.items()} if rule == "prefix" else None
    assert shared > 16  # crosses the tiny gemma's sliding window
    got = Scorer(model, tokenizer).score(items, shared, rule, sets, batch_size=4)
    for i, q in enumerate(QUERIES):
        want = naive_scores(model, tokenizer, PREFIX + q + '\nAnswer: "', WORDS, rule)
        for cls in WORDS:
            assert got[i][cls] == pytest.approx(want[cls], abs=1e-4, rel=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("rule", ["exact", "prefix"])
def test_batch_size_does_not_change_results(tiny_gemma, rule):
    model, tokenizer = load_model(str(tiny_gemma))
    items, shared = make_items(tokenizer, WORDS)
    sets = {c: prefix_token_ids(tokenizer, w) for c, w in WORDS.items()} if rule == "prefix" else None
    one = Scorer(model, tokenizer).score(items, shared, rule, sets, batch_size=1)
    padded = Scorer(model, tokenizer)
    padded.batch_overhead = 10**6  # one batch of all rows: the most padding possible
    many = padded.score(items, shared, rule, sets, batch_size=16)
    for i in one:
        assert max(one[i], key=one[i].get) == max(many[i], key=many[i].get)
        for cls in WORDS:
            assert abs(one[i][cls] - many[i][cls]) < 1e-4


@pytest.fixture(scope="module")
def gemma_tok(gemma_tokenizer):
    """The packaged Gemma tokenizer (262k entries: loaded once for this module)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gemma_tokenizer)


def test_prefix_sets_follow_the_papers_rule(gemma_tok):
    tok = gemma_tok
    ids = prefix_token_ids(tok, "positive")
    strings = set(tok.convert_ids_to_tokens(ids))
    assert {"p", "positive", "\u2581positive"} <= strings
    assert all(s.lstrip("\u2581") and "positive".startswith(s.lstrip("\u2581")) for s in strings)
    zh = set(tok.convert_ids_to_tokens(prefix_token_ids(tok, "积极")))
    assert "积" in zh or "积极" in zh


def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-level alphabet, character -> byte."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("\u00a1"), ord("\u00ac") + 1),
        *range(ord("\u00ae"), ord("\u00ff") + 1),
    ]
    rest = [b for b in range(256) if b not in printable]
    return {chr(b): b for b in printable} | {chr(256 + n): b for n, b in enumerate(rest)}


def test_byte_level_tokenizer_finds_non_ascii_labels(smollm_tokenizer):
    from transformers import AutoTokenizer

    from polyalign.engine.scoring import is_byte_level

    tok = AutoTokenizer.from_pretrained(smollm_tokenizer)
    assert is_byte_level(tok)
    word = "积极"
    ids = prefix_token_ids(tok, word)
    # The literal look-up finds nothing; the set is the first token of each prefix tokenized alone
    # (the paper's Qwen branch), and each such token's bytes start the word's UTF-8 bytes.
    firsts = {tok(word[:k], add_special_tokens=False)["input_ids"][0] for k in range(1, len(word) + 1)}
    assert ids == sorted(firsts) and ids
    byte_of = _byte_level_alphabet()
    for token in tok.convert_ids_to_tokens(ids):
        assert word.encode("utf-8").startswith(bytes(byte_of[c] for c in token)), token
    # ASCII words keep the literal prefixes
    assert set(tok.convert_ids_to_tokens(prefix_token_ids(tok, "positive"))) >= {"p", "positive"}


def test_colliding_labels_are_refused(gemma_tok):
    tok = gemma_tok
    # Two words that differ only past the longest vocabulary entry that starts them: the same prefix set.
    words = {"a": "positivezqx", "b": "positivezqy"}
    sets = {c: prefix_token_ids(tok, w) for c, w in words.items()}
    assert sets["a"] == sets["b"] and "\u2581positive" in tok.convert_ids_to_tokens(sets["a"])
    with pytest.raises(
        Indistinguishable,
        match="'positivezqx' \\(a\\) and 'positivezqy' \\(b\\) collide after tokenization under prefix",
    ):
        check_distinguishable(words, sets, "prefix", "t")
    check_distinguishable(
        {"a": "positivo", "b": "positivx"},  # differ in the vocabulary: accepted
        {c: prefix_token_ids(tok, w) for c, w in {"a": "positivo", "b": "positivx"}.items()},
        "prefix",
        "t",
    )
    with pytest.raises(PolyalignError, match="collide"):
        check_distinguishable({"a": "x", "b": "x"}, {"a": [5], "b": [5]}, "exact", "t")
    with pytest.raises(PolyalignError, match="has no tokens"):
        check_distinguishable({"a": "x", "b": "y"}, {"a": [], "b": [5]}, "prefix", "t")


def _split_cost(lengths, starts, overhead):
    stops = starts[1:] + [len(lengths)]
    return sum((b - a) * lengths[a] + overhead for a, b in zip(starts, stops))


@pytest.mark.parametrize("seed", range(20))
def test_plan_batches_is_the_cheapest_split(seed):
    """Against every split of a small sorted length list, brute force."""
    import itertools
    import random

    rng = random.Random(seed)
    lengths = sorted((rng.randint(1, 300) for _ in range(rng.randint(1, 9))), reverse=True)
    max_rows, overhead = rng.randint(1, 5), rng.choice([0, 32, 500])
    starts = plan_batches(lengths, max_rows, overhead)
    stops = starts[1:] + [len(lengths)]
    assert starts[0] == 0 and all(0 < b - a <= max_rows for a, b in zip(starts, stops))
    best = min(
        _split_cost(lengths, [0, *cuts], overhead)
        for k in range(len(lengths))
        for cuts in itertools.combinations(range(1, len(lengths)), k)
        if all(0 < b - a <= max_rows for a, b in zip([0, *cuts], [*cuts, len(lengths)]))
    )
    assert _split_cost(lengths, starts, overhead) == best


def test_scored_tokens_count_what_each_rule_feeds_the_decoder():
    """After a 3-token shared prefix: the suffix once (prefix rule, or single-token labels), or once
    per class followed by the label's tokens but its last (exact rule, a multi-token label)."""
    single = Item(0, [1, 2, 3, 10, 11], {"a": [7], "b": [8]})
    multi = Item(1, [1, 2, 3, 20], {"a": [7, 9, 9], "b": [8]})
    assert scored_tokens([single, multi], 3, "prefix") == {0: 2, 1: 1}
    assert scored_tokens([single, multi], 3, "exact") == {0: 2, 1: (1 + 2) + (1 + 0)}


def test_plan_batches_separates_a_long_row_from_short_ones():
    assert plan_batches([220, 40, 39, 38, 37], max_rows=16, overhead=32) == [0, 1]
    assert len(plan_batches([50] * 20, max_rows=16, overhead=32)) == 2  # fewest batches when no padding


@pytest.mark.slow
@pytest.mark.parametrize("native", [True, False])
def test_bf16_on_a_native_bf16_cpu_plans_fewer_larger_batches(tiny_gemma, monkeypatch, native):
    """A bf16 forward on such a CPU costs more per forward than per token (measured: 512 tokens);
    float32, and bf16 where the CPU lacks native bf16, keep 32."""
    from polyalign.engine import scoring

    monkeypatch.setattr(scoring, "cpu_has_native_bf16", lambda: native)
    fp32 = Scorer(*load_model(str(tiny_gemma), device="cpu", dtype="float32"))
    bf16 = Scorer(*load_model(str(tiny_gemma), device="cpu", dtype="bfloat16"))
    assert (fp32.batch_overhead, bf16.batch_overhead) == (32, 512 if native else 32)
    lengths = [220, 180, 150, 120, 90, 60, 40, 20]
    fewer = len(plan_batches(lengths, 16, bf16.batch_overhead)) < len(plan_batches(lengths, 16, fp32.batch_overhead))
    assert fewer == native


@pytest.mark.slow
def test_resumed_scoring_replays_the_whole_plan(tiny_gemma, monkeypatch):
    """Items already done are skipped; the rest get bit-identical scores to an uninterrupted run."""
    from polyalign.engine import scoring

    monkeypatch.setattr(scoring, "UNEMBED_POSITIONS", 2)
    model, tokenizer = load_model(str(tiny_gemma))
    items, shared = make_items(tokenizer, WORDS)
    whole = Scorer(model, tokenizer).score(items, shared, "exact", None, batch_size=3)
    done = {1, 4, 6}
    flushed = []
    rest = Scorer(model, tokenizer).score(
        items, shared, "exact", None, batch_size=3, done=done, on_batch=lambda got: flushed.extend(got)
    )
    assert set(rest) == set(whole) - done and sorted(flushed) == sorted(rest)
    assert all(rest[i] == whole[i] for i in rest)


@pytest.mark.slow
def test_reduced_head_log_probs_differ_by_a_row_constant_at_most(tiny_gemma):
    """A bf16 head's label columns: their logits are `forward`'s (float32 from the upcast rows), so
    every difference of two columns is exact; only the row's normalizer comes from the bf16 product."""
    import torch

    from polyalign.engine.unembed import Unembed

    model, _ = load_model(str(tiny_gemma), dtype="bfloat16")
    unembed = Unembed(model)
    hidden = torch.randn(6, model.config.hidden_size, generator=torch.Generator().manual_seed(0)).bfloat16()
    columns = torch.tensor([3, 17, 250, 1000, unembed.vocab_size - 1])
    full = unembed.forward(hidden).log_softmax(-1)[:, columns]  # [6, 5]
    fast = unembed.log_probs_at(hidden, columns)
    offset = fast - full  # the same for every column of a row
    assert torch.allclose(offset, offset[:, :1].expand_as(offset), atol=1e-5)
    logits = unembed.forward(hidden)
    assert offset.abs().max() <= 2**-8 * logits.abs().max()  # at most one bf16 rounding of a logit
    model.float()
    assert torch.equal(
        Unembed(model).log_probs_at(hidden.float(), columns),
        Unembed(model).forward(hidden.float()).log_softmax(-1)[:, columns],
    )
