"""Constrained scoring of label words after a prompt, fast and exact.

Every item of a (task, language, mode) starts with the same few-shot block, so its
KV cache is computed once and shared by all batches. Items are right-padded after
that shared prefix (pads sit after every real token, so causal attention never sees
them and positions stay exact), and logits are computed only at the scored positions,
never batch x length x vocabulary. Rows are sorted by length and cut into batches that
minimize padded tokens plus a per-batch cost (`plan_batches`), so a long review never
pads fifteen short ones.

Two rules:
- exact: sum of log-probabilities of the label's tokens after the prompt.
- prefix: the paper's rule, next-token probability mass over every vocabulary token that
  is a character prefix of the label word (with and without the word-start marker, plus
  the byte-fallback token of its first character).
"""

from __future__ import annotations

import copy
import math
from collections import Counter
from collections.abc import Container
from dataclasses import dataclass
from functools import lru_cache

import torch

from polyalign.core.errors import PolyalignError
from polyalign.engine.batch_backoff import Backoff, token_budget
from polyalign.engine.placement import input_device
from polyalign.engine.precision import cpu_has_native_bf16, resident_dtype
from polyalign.engine.unembed import Unembed

WORD_START = "\u2581"  # SentencePiece's word-start marker
# Scored positions gathered before one unembedding: enough to read the (large) output matrix
# rarely, few enough that a killed run loses little (results are saved after each flush).
UNEMBED_POSITIONS = 128


@dataclass
class Item:
    """One prompt to score, with the token ids of each label continuation (exact rule)."""

    index: int
    ids: list[int]
    continuations: dict[str, list[int]]


@lru_cache(maxsize=8)
def _vocab(tokenizer) -> dict[str, int]:
    return tokenizer.get_vocab()


def is_byte_level(tokenizer) -> bool:
    """True for GPT-2-style byte-level BPE, whose vocabulary keys are not raw text."""
    ids = tokenizer(" a", add_special_tokens=False)["input_ids"]
    return bool(ids) and tokenizer.convert_ids_to_tokens(ids[0]).startswith("\u0120")


def prefix_token_ids(tokenizer, word: str) -> list[int]:
    """The paper's candidate set for a label word (its `process_tokens`), sorted."""
    vocab = _vocab(tokenizer)
    found: set[int] = set()
    prefixes = [word[:k] for k in range(1, len(word) + 1)]
    for prefix in prefixes:
        for candidate in (prefix, WORD_START + prefix):
            if candidate in vocab:
                found.add(vocab[candidate])
    first = word[:1]
    if first and not first.isascii():
        byte_token = f"<0x{first.encode('utf-8')[0]:02X}>"
        if byte_token in vocab:
            found.add(vocab[byte_token])
    if is_byte_level(tokenizer):
        # Byte-level vocabularies miss non-ASCII strings in the literal look-up; the
        # paper adds the first token of each prefix tokenized alone (its Qwen branch).
        for prefix in prefixes:
            ids = tokenizer(prefix, add_special_tokens=False)["input_ids"]
            if ids:
                found.add(ids[0])
    return sorted(found)


def continuation_ids(tokenizer, prompt_ids: list[int], prompt: str, word: str) -> list[int]:
    """Label tokens as the model would read them right after the prompt's own tokens."""
    joint = tokenizer(prompt + word)["input_ids"]
    if joint[: len(prompt_ids)] == prompt_ids and len(joint) > len(prompt_ids):
        return joint[len(prompt_ids) :]
    return tokenizer(word, add_special_tokens=False)["input_ids"]


class Indistinguishable(PolyalignError):
    """Label words a rule cannot tell apart in one language: that language is reported, not scored."""


def check_distinguishable(words: dict[str, str], token_sets: dict[str, list[int]], rule: str, where: str) -> None:
    """Refuse label words the chosen rule cannot tell apart (or cannot score at all)."""
    for cls, ids in token_sets.items():
        if not ids:
            raise Indistinguishable(f"{where}: label '{words[cls]}' ({cls}) has no tokens under {rule} scoring")
    classes = list(token_sets)
    for i, a in enumerate(classes):
        for b in classes[i + 1 :]:
            if token_sets[a] == token_sets[b]:
                raise Indistinguishable(
                    f"{where}: labels '{words[a]}' ({a}) and '{words[b]}' ({b}) collide after "
                    f"tokenization under {rule} scoring (same tokens {token_sets[a][:8]})"
                )


def common_stem(tokenizer, prompt_ids: list[int], prompt: str, words: dict[str, str]) -> tuple[list[int], str]:
    """The leading tokens every label word shares as read after the prompt, and their text.

    Cut back to whole characters (the text must start every word) and never a whole word:
    each label keeps a non-empty remainder. ([], "") when the labels share no leading token.
    """
    conts = [continuation_ids(tokenizer, prompt_ids, prompt, w) for w in words.values()]
    n = 0
    while all(len(c) > n and c[n] == conts[0][n] for c in conts):
        n += 1
    for k in range(n, 0, -1):
        text = tokenizer.decode(conts[0][:k])
        if text and all(w.startswith(text) and len(w) > len(text) for w in words.values()):
            return conts[0][:k], text
    return [], ""


def prefix_sets(
    tokenizer, prompt_ids: list[int], prompt: str, words: dict[str, str]
) -> tuple[list[int], str, dict[str, list[int]]]:
    """The paper's prefix rule, generalised from its Thai case (เชิงบวก / เชิงลบ).

    When the label words share a leading token stem, the prompt is extended by the stem's
    tokens and the prefix rule applies to the remainders at the next position. Returns
    (stem token ids to append to every prompt, stem text, candidate set per class).
    """
    stem_ids, stem = common_stem(tokenizer, prompt_ids, prompt, words)
    return stem_ids, stem, {c: prefix_token_ids(tokenizer, w[len(stem) :]) for c, w in words.items()}


# One row of a scoring batch: (item index, class or None, tokens after the shared prefix, first scored offset)
ScoreRow = tuple[int, str | None, list[int], int]


def plan_batches(
    lengths: list[int], max_rows: int, overhead: int, max_tokens: int | None = None, prefix: int = 0
) -> list[int]:
    """Batch boundaries for rows sorted longest first: the contiguous split with the least cost.

    Cost of a batch = rows x its longest row (the tokens actually computed, padding
    included) + `overhead` tokens (what a smaller matrix product loses to a larger one).
    With `max_tokens` (polyalign.engine.batch_backoff.token_budget), a batch of several rows also
    holds at most that many tokens, counting each row's copy of the `prefix`.
    Exact dynamic programming over the split points; returns the start of every batch.
    """
    n = len(lengths)
    best = [0.0] + [math.inf] * n  # best[j]: least cost of rows [0, j)
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(max(0, j - max_rows), j):
            if max_tokens is not None and j - i > 1 and (j - i) * (lengths[i] + prefix) > max_tokens:
                continue
            cost = best[i] + (j - i) * lengths[i] + overhead
            if cost < best[j]:
                best[j], cut[j] = cost, i
    starts, j = [], n
    while j > 0:
        starts.append(cut[j])
        j = cut[j]
    return starts[::-1]


def batch_overhead(device: torch.device, dtype: torch.dtype) -> int:
    """What one more forward costs beyond its tokens, in tokens: plan_batches' `overhead`.

    Measured on gemma-3-270m, 2 AMX cores (docs/benchmarks.md, "Fewer, larger bf16 batches"):
    - float32 on a CPU: 32. A 1 x 90-token batch runs ~30% slower per token than 4 x 90;
      128 and 512 were no faster over whole runs.
    - bf16 weights on a CPU with native bf16: 512, 22% more items/s than 32. A bf16 forward costs
      more per forward (oneDNN builds kernels for each new shape; about 75 ms) and less per token.
      On a 2-core AVX512-BF16 EPYC (no AMX), 32, 128, 256 and 512 were within that machine's noise
      (bench/bf16_batch_overhead.py; docs/benchmarks.md, "On an AVX512-BF16 EPYC").
      (fp16, and bf16 without native support, are not measured: 32.) The float32 view that
      verifies such a run computes in float32 and has its own value (float32_view.batch_overhead).
    - a GPU: 512 (a launch costs more).
    """
    if device.type != "cpu":
        return 512
    return 512 if dtype == torch.bfloat16 and cpu_has_native_bf16() else 32


def score_rows(items: list[Item], shared: int, rule: str) -> list[ScoreRow]:
    """The rows scoring computes: one per item, or (exact rule, multi-token labels) one per class."""
    rows: list[ScoreRow] = []
    for item in items:
        suffix = item.ids[shared:]
        if not suffix:
            raise PolyalignError(f"item {item.index}: prompt is entirely the shared prefix")
        multi = rule == "exact" and any(len(c) > 1 for c in item.continuations.values())
        if multi:
            for cls, cont in item.continuations.items():
                rows.append((item.index, cls, suffix + cont[:-1], len(suffix) - 1))
        else:
            rows.append((item.index, None, suffix, len(suffix) - 1))
    return rows


def scored_tokens(items: list[Item], shared: int, rule: str) -> dict[int, int]:
    """Item index -> tokens its rows feed the decoder after the shared prefix: what scoring it costs."""
    tokens: Counter[int] = Counter()
    for row in score_rows(items, shared, rule):
        tokens[row[0]] += len(row[2])
    return dict(tokens)


def flush_groups(rows: list[tuple], starts: list[int]) -> list[list[tuple[int, int]]]:
    """Consecutive batches (start, stop) gathered until they hold UNEMBED_POSITIONS scored positions."""
    groups, current, positions = [], [], 0
    for start, stop in zip(starts, starts[1:] + [len(rows)]):
        current.append((start, stop))
        positions += sum(len(r[2]) - r[3] for r in rows[start:stop])
        if positions >= UNEMBED_POSITIONS:
            groups.append(current)
            current, positions = [], 0
    return groups + [current] if current else groups


class Scorer:
    """Scores items that share a token prefix, reusing that prefix's KV cache."""

    def __init__(self, model, tokenizer, overhead: int | None = None):
        """`overhead`: plan_batches' cost of one more forward, in tokens (default: `batch_overhead`
        of the weights' dtype; the float32 view computes in another and passes its own)."""
        self.model = model
        self.tokenizer = tokenizer
        self.unembed = Unembed(model)
        self.decoder = self.unembed.decoder
        self.device = input_device(model)  # a model split over devices takes its inputs on the first
        self.batch_overhead = overhead if overhead is not None else batch_overhead(self.device, resident_dtype(model))
        self.backoff: Backoff | None = None  # set by the first score(): halves batches on out-of-memory
        self._last_prefix: tuple[tuple[int, ...], object] | None = None

    @torch.inference_mode()
    def prefix_cache(self, prefix_ids: list[int]):
        """The shared prefix's KV cache; the last one is kept, so calls on the same prefix (a verified
        run's re-scoring rounds of one language) compute it once. Batches copy it, never change it."""
        if not prefix_ids:
            return None
        if self._last_prefix is not None and self._last_prefix[0] == tuple(prefix_ids):
            return self._last_prefix[1]
        ids = torch.tensor([prefix_ids], device=self.device)
        cache = self.decoder(input_ids=ids, use_cache=True).cache
        self._last_prefix = (tuple(prefix_ids), cache)
        return cache

    @torch.inference_mode()
    def score(
        self,
        items: list[Item],
        shared: int,
        rule: str,
        token_sets: dict[str, list[int]] | None,
        batch_size: int,
        on_batch=None,
        done: Container[int] = frozenset(),
    ) -> dict[int, dict[str, float]]:
        """Scores per item: summed label log-prob (exact) or label probability mass (prefix).

        `shared` is the number of leading tokens all items have in common; their cache is
        computed once. `batch_size` caps the rows per batch; `plan_batches` picks the cuts.
        `on_batch(done_items)` is called after each unembedding flush (progress, saving).

        The batches and flushes are planned over all `items`, then every flush whose items are
        all in `done` (scored by an earlier, interrupted run) is skipped: each item is always
        computed with the same companions, so a resumed run writes the same bits as a whole one.
        """
        cache = self.prefix_cache(items[0].ids[:shared]) if items else None
        rows = score_rows(items, shared, rule)
        by_index = {item.index: item for item in items}
        rows.sort(key=lambda r: -len(r[2]))  # longest first: memory errors surface at once
        partial: dict[int, dict[str, float]] = {}
        pending = Counter(r[0] for r in rows)  # rows per item still to score
        results: dict[int, dict[str, float]] = {}
        budget = token_budget(self.model, shared)
        starts = plan_batches([len(r[2]) for r in rows], batch_size, self.batch_overhead, budget, shared)
        self.backoff = self.backoff or Backoff(batch_size)
        for group in flush_groups(rows, starts):
            if all(r[0] in done for start, stop in group for r in rows[start:stop]):
                continue
            buffered: list[tuple[tuple, torch.Tensor]] = []  # (row, hidden states at its scored positions)
            for start, stop in group:
                hidden = self.backoff.run(rows[start:stop], lambda batch: self._hidden(batch, cache))
                buffered.extend(zip(rows[start:stop], hidden))
            # One matmul for many batches' scored positions: the unembedding matrix (262k x d
            # for Gemma, 671 MB in fp32) is read once per flush, not once per small batch.
            columns = Columns.needed([by_index[row[0]] for row, _ in buffered], rule, token_sets)
            logprobs = self.unembed.log_probs_at(torch.cat([h for _, h in buffered]), columns.ids)
            finished = []
            for (row, _), lp in zip(buffered, logprobs.split([len(h) for _, h in buffered])):
                index, cls = row[0], row[1]
                add_scores(partial.setdefault(index, {}), by_index[index], cls, columns.of(lp), rule, token_sets)
                pending[index] -= 1
                if pending[index] == 0:
                    scores = partial.pop(index)
                    if index not in done:
                        results[index] = scores
                        finished.append(index)
            if on_batch and finished:
                on_batch({i: results[i] for i in finished})
        return results

    def forward_suffixes(self, suffixes: list[list[int]], cache, output_hidden_states: bool = False):
        """The decoder on right-padded token suffixes after a copy of the shared prefix's cache.

        Shared by scoring and the lens/PCA: padding is built on the host and sent in one copy.
        """
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(suffixes), max(map(len, suffixes))), pad, dtype=torch.long)
        for i, suffix in enumerate(suffixes):
            ids[i, : len(suffix)] = torch.tensor(suffix)
        past = None
        if cache is not None:
            past = copy.deepcopy(cache)
            past.batch_repeat_interleave(len(suffixes))
        return self.decoder(
            input_ids=ids.to(self.device),
            cache=past,
            use_cache=cache is not None,
            output_hidden_states=output_hidden_states,
        )

    def _hidden(self, batch, cache) -> list[torch.Tensor]:
        """Final-normed hidden states at each row's scored positions."""
        hidden = self.forward_suffixes([r[2] for r in batch], cache).last_hidden_state
        return [hidden[i, r[3] : len(r[2])] for i, r in enumerate(batch)]


@dataclass(frozen=True)
class Columns:
    """The vocabulary ids a flush reads (sorted), so only their log-probabilities are gathered."""

    ids: torch.Tensor  # [k] vocabulary ids
    position: dict[int, int]  # vocabulary id -> column of `ids`

    @staticmethod
    def needed(items: list[Item], rule: str, token_sets: dict[str, list[int]] | None) -> Columns:
        """Every label token the rule reads for `items`: the prefix sets, or the continuations."""
        if rule == "prefix":
            assert token_sets is not None, "the prefix rule scores label token sets"
            wanted = {t for ids in token_sets.values() for t in ids}
        else:
            wanted = {t for item in items for cont in item.continuations.values() for t in cont}
        ids = sorted(wanted)
        return Columns(torch.tensor(ids, dtype=torch.long), {t: j for j, t in enumerate(ids)})

    def of(self, lp: torch.Tensor) -> ColumnView:
        return ColumnView(lp, self.position)


@dataclass(frozen=True)
class ColumnView:
    """Log-probabilities [positions, k] of the gathered columns, indexed by vocabulary id."""

    values: torch.Tensor
    position: dict[int, int]

    def at(self, row: int, ids: list[int]) -> torch.Tensor:
        return self.values[row, [self.position[t] for t in ids]]


def add_scores(
    scores: dict[str, float],
    item: Item,
    cls: str | None,
    lp: ColumnView,
    rule: str,
    token_sets: dict[str, list[int]] | None,
) -> None:
    """Fill an item's class scores from one row's log-probabilities (row = all classes, or `cls`)."""
    if rule == "prefix":
        assert token_sets is not None, "the prefix rule scores label token sets"
        for c, ids in token_sets.items():
            scores[c] = float(lp.at(0, ids).exp().sum())
    elif cls is None:
        for c, cont in item.continuations.items():
            scores[c] = float(lp.at(0, cont[:1])[0])
    else:
        cont = item.continuations[cls]
        scores[cls] = float(sum(lp.at(j, [t])[0] for j, t in enumerate(cont)))
