"""Constrained scoring of label words after a prompt, fast and exact.

Every item of a (task, language, mode) starts with the same few-shot block, so its
KV cache is computed once and shared by all batches. Items are right-padded after
that shared prefix (pads sit after every real token, so causal attention never sees
them and positions stay exact), and logits are computed only at the scored positions,
never batch x length x vocabulary.

Two rules:
- exact: sum of log-probabilities of the label's tokens after the prompt.
- prefix: the paper's rule, next-token probability mass over every vocabulary token that
  is a character prefix of the label word (with and without the word-start marker, plus
  the byte-fallback token of its first character).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import lru_cache

import torch

from polyalign.errors import PolyalignError

WORD_START = "\u2581"  # SentencePiece's word-start marker


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
        return joint[len(prompt_ids):]
    return tokenizer(word, add_special_tokens=False)["input_ids"]


def check_distinguishable(words: dict[str, str], token_sets: dict[str, list[int]], rule: str, where: str) -> None:
    """Refuse label words the chosen rule cannot tell apart (or cannot score at all)."""
    for cls, ids in token_sets.items():
        if not ids:
            raise PolyalignError(f"{where}: label '{words[cls]}' ({cls}) has no tokens under {rule} scoring")
    classes = list(token_sets)
    for i, a in enumerate(classes):
        for b in classes[i + 1:]:
            if token_sets[a] == token_sets[b]:
                raise PolyalignError(f"{where}: labels '{words[a]}' ({a}) and '{words[b]}' ({b}) collide after "
                                     f"tokenization under {rule} scoring (same tokens {token_sets[a][:8]})")


def _parts(model):
    """Decoder (returns the final-normed hidden state), unembedding and logit soft-cap."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    cap = getattr(base.config, "final_logit_softcapping", None) or getattr(
        getattr(base.config, "text_config", None), "final_logit_softcapping", None)
    return base.get_decoder(), base.get_output_embeddings(), cap


def unembed(head, cap: float | None, hidden: torch.Tensor) -> torch.Tensor:
    """Logits in fp32 from final-normed hidden states (soft-capped where the model does)."""
    logits = head(hidden).float()
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


class Scorer:
    """Scores items that share a token prefix, reusing that prefix's KV cache."""

    def __init__(self, model, tokenizer):
        self.model = model
        self.tokenizer = tokenizer
        self.decoder, self.head, self.cap = _parts(model)
        self.device = next(model.parameters()).device

    @torch.inference_mode()
    def prefix_cache(self, prefix_ids: list[int]):
        if not prefix_ids:
            return None
        ids = torch.tensor([prefix_ids], device=self.device)
        return self.decoder(input_ids=ids, use_cache=True).past_key_values

    @torch.inference_mode()
    def score(self, items: list[Item], shared: int, rule: str, token_sets: dict[str, list[int]] | None,
              batch_size: int, on_batch=None) -> dict[int, dict[str, float]]:
        """Scores per item: summed label log-prob (exact) or label probability mass (prefix).

        `shared` is the number of leading tokens all items have in common; their cache is
        computed once. `on_batch(done_items)` is called after each batch (progress, saving).
        """
        cache = self.prefix_cache(items[0].ids[:shared]) if items else None
        rows = []  # (item index, class or None, tokens after the shared prefix, first scored offset)
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
        by_index = {item.index: item for item in items}
        rows.sort(key=lambda r: -len(r[2]))  # longest first: memory errors surface at once
        partial: dict[int, dict[str, float]] = {}
        pending = {item.index: sum(1 for r in rows if r[0] == item.index) for item in items}
        results: dict[int, dict[str, float]] = {}
        for start in range(0, len(rows), batch_size):
            batch = rows[start:start + batch_size]
            logprobs = self._forward(batch, cache)
            finished = []
            for row, lp in zip(batch, logprobs):
                index, cls, _, offset = row
                item = by_index[index]
                scores = partial.setdefault(index, {})
                if rule == "prefix":
                    probs = lp[0].exp()
                    for c, ids in token_sets.items():
                        scores[c] = float(probs[ids].sum())
                elif cls is None:
                    for c, cont in item.continuations.items():
                        scores[c] = float(lp[0, cont[0]])
                else:
                    cont = item.continuations[cls]
                    scores[cls] = float(sum(lp[j, t] for j, t in enumerate(cont)))
                pending[index] -= 1
                if pending[index] == 0:
                    results[index] = partial.pop(index)
                    finished.append(index)
            if on_batch and finished:
                on_batch({i: results[i] for i in finished})
        return results

    def _forward(self, batch, cache) -> list[torch.Tensor]:
        """Log-probabilities (fp32) at each row's scored positions."""
        width = max(len(r[2]) for r in batch)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(batch), width), pad, dtype=torch.long, device=self.device)
        for i, row in enumerate(batch):
            ids[i, : len(row[2])] = torch.tensor(row[2], device=self.device)
        past = None
        if cache is not None:
            past = copy.deepcopy(cache)
            past.batch_repeat_interleave(len(batch))
        hidden = self.decoder(input_ids=ids, past_key_values=past, use_cache=cache is not None).last_hidden_state
        rows = torch.cat([torch.full((len(r[2]) - r[3],), i) for i, r in enumerate(batch)]).to(self.device)
        cols = torch.cat([torch.arange(r[3], len(r[2])) for r in batch]).to(self.device)
        # One matmul for all scored positions: the unembedding matrix (262k x d for Gemma)
        # is read from memory once per batch, not once per row.
        logprobs = unembed(self.head, self.cap, hidden[rows, cols]).log_softmax(-1)
        return list(logprobs.split([len(r[2]) - r[3] for r in batch]))
