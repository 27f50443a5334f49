"""The cached, batched scorer against a naive full forward, on tiny random models."""
import pytest
import torch

from polyalign.errors import PolyalignError
from polyalign.models import load_model
from polyalign.scoring import Item, Scorer, check_distinguishable, continuation_ids, plan_batches, prefix_token_ids

PREFIX = ("A long shared few-shot block that is longer than the sliding window of the tiny model, "
          "so that the cached prefix crosses it.\nText: ")
QUERIES = ["short one", "a somewhat longer query with more words in it than the first",
           "mid length query here", "x", "another query that ends", "we need a few more of these items",
           "seven", "the eighth and last query of the small set used for the checks"]
WORDS = {"yes": "positive", "no": "negative overall", "maybe": "neutral ground"}


def naive_scores(model, tokenizer, prompt, words, rule):
    """One full forward per label with no cache, the paper's way."""
    ids = tokenizer(prompt)["input_ids"]
    out = {}
    with torch.inference_mode():
        logits = model(torch.tensor([ids], device=model.device)).logits[0].float()
        for cls, word in words.items():
            if rule == "prefix":
                out[cls] = float(logits[-1].softmax(-1)[prefix_token_ids(tokenizer, word)].sum())
                continue
            cont = continuation_ids(tokenizer, ids, prompt, word)
            full = model(torch.tensor([ids + cont], device=model.device)).logits[0].float().log_softmax(-1)
            out[cls] = float(sum(full[len(ids) - 1 + j, t] for j, t in enumerate(cont)))
    return out


def make_items(tokenizer, words):
    items = []
    for i, q in enumerate(QUERIES):
        prompt = PREFIX + q + '\nAnswer: "'
        ids = tokenizer(prompt)["input_ids"]
        items.append(Item(i, ids, {c: continuation_ids(tokenizer, ids, prompt, w) for c, w in words.items()}))
    shared = len(tokenizer(PREFIX)["input_ids"]) - 1
    return items, shared


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


def test_prefix_sets_follow_the_papers_rule(gemma_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gemma_dir)
    ids = prefix_token_ids(tok, "positive")
    strings = set(tok.convert_ids_to_tokens(ids))
    assert {"p", "positive", "\u2581positive"} <= strings
    assert all(s.lstrip("\u2581") and "positive".startswith(s.lstrip("\u2581")) for s in strings)
    zh = set(tok.convert_ids_to_tokens(prefix_token_ids(tok, "积极")))
    assert "积" in zh or "积极" in zh


def test_byte_level_tokenizer_finds_non_ascii_labels(smollm_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm_dir)
    assert prefix_token_ids(tok, "积极")  # first tokens of each prefix, as the paper's Qwen branch


def test_colliding_labels_are_refused(gemma_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gemma_dir)
    words = {"a": "positivo", "b": "positivx"}
    sets = {c: prefix_token_ids(tok, w) for c, w in words.items()}
    if sets["a"] == sets["b"]:
        with pytest.raises(PolyalignError, match="collide after tokenization under prefix"):
            check_distinguishable(words, sets, "prefix", "t")
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
    best = min(_split_cost(lengths, [0, *cuts], overhead)
               for k in range(len(lengths)) for cuts in itertools.combinations(range(1, len(lengths)), k)
               if all(0 < b - a <= max_rows for a, b in zip([0, *cuts], [*cuts, len(lengths)])))
    assert _split_cost(lengths, starts, overhead) == best


def test_plan_batches_separates_a_long_row_from_short_ones():
    assert plan_batches([220, 40, 39, 38, 37], max_rows=16, overhead=32) == [0, 1]
    assert len(plan_batches([50] * 20, max_rows=16, overhead=32)) == 2  # fewest batches when no padding


def test_resumed_scoring_replays_the_whole_plan(tiny_gemma, monkeypatch):
    """Items already done are skipped; the rest get bit-identical scores to an uninterrupted run."""
    from polyalign import scoring
    monkeypatch.setattr(scoring, "UNEMBED_POSITIONS", 2)
    model, tokenizer = load_model(str(tiny_gemma))
    items, shared = make_items(tokenizer, WORDS)
    whole = Scorer(model, tokenizer).score(items, shared, "exact", None, batch_size=3)
    done = {1, 4, 6}
    flushed = []
    rest = Scorer(model, tokenizer).score(items, shared, "exact", None, batch_size=3, done=done,
                                          on_batch=lambda got: flushed.extend(got))
    assert set(rest) == set(whole) - done and sorted(flushed) == sorted(rest)
    assert all(rest[i] == whole[i] for i in rest)
