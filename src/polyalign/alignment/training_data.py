"""Training examples: prompt -> completion pairs tokenized (plain or chat template), split, padded.

Why its own module: the tokenization decides what the loss sees (the completion only) and is
shared by training, its tests and the training benchmark.
"""

from __future__ import annotations

import random

from polyalign.core.errors import PolyalignError

IGNORE = -100  # label value the loss skips
TEMPLATES = ("none", "chat")  # none: plain prompt -> completion; chat: the tokenizer's chat template


def tokenize_pairs(tokenizer, rows: list[dict], cutoff_len: int, template: str = "none") -> list[dict]:
    """input_ids = prompt + completion; labels mask the prompt (the loss is on the completion only).

    template none: the prompt with the tokenizer's own BOS, then the completion and EOS.
    template chat: the tokenizer's chat template, user = prompt and assistant = completion (its
    end-of-turn marker is part of the completion); a tokenizer without one falls back to none.
    Over-long pairs are cut proportionally on both sides, so that neither the question nor its
    translation disappears entirely: the rule of LLaMA-Factory v0.5.3, the paper's pinned version
    (`infer_max_len`, which rounds the completion's share down where this rounds the prompt's).
    LLaMA-Factory 0.9 (`infer_seqlen`) cuts the prompt alone while the completion fits in half the
    cutoff; the tools differ only on pairs longer than cutoff_len (the export counts them).
    """
    if template not in TEMPLATES:
        raise PolyalignError(f"template must be one of {', '.join(TEMPLATES)} (got '{template}')")
    if template == "chat" and getattr(tokenizer, "chat_template", None):
        prompts, completions = _chat_pieces(tokenizer, rows)
    else:
        prompts = tokenizer([r["prompt"] for r in rows], add_special_tokens=True)["input_ids"]
        eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        completion_ids = tokenizer([r["completion"] for r in rows], add_special_tokens=False)["input_ids"]
        completions = [c + eos for c in completion_ids]
    out = []
    for p, c in zip(prompts, completions):
        if len(p) + len(c) > cutoff_len:
            keep_p = max(1, min(len(p) - 1, cutoff_len * len(p) // (len(p) + len(c))))
            p, c = p[:keep_p], c[: cutoff_len - keep_p]
        out.append({"input_ids": p + c, "attention_mask": [1] * (len(p) + len(c)), "labels": [IGNORE] * len(p) + c})
    return out


def chat_texts(tokenizer, row: dict, i: int = 0) -> tuple[str, str]:
    """The templated user turn (up to the assistant's cue) and the assistant's turn, as text; their
    tokens without added special tokens are what template chat trains on (the LLaMA-Factory export
    writes these texts)."""
    user = [{"role": "user", "content": row["prompt"]}]
    head = tokenizer.apply_chat_template(user, add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template(user + [{"role": "assistant", "content": row["completion"]}], tokenize=False)
    if not full.startswith(head) or len(full) == len(head):
        raise PolyalignError(f"pair {i}: the chat template does not put the completion after the prompt")
    return head, full[len(head) :]


def _chat_pieces(tokenizer, rows: list[dict]) -> tuple[list[list[int]], list[list[int]]]:
    """Token ids of the templated user turn (up to the assistant's cue) and of the assistant's turn."""
    prompts, completions = [], []
    for i, row in enumerate(rows):
        head, tail = chat_texts(tokenizer, row, i)
        prompts.append(tokenizer(head, add_special_tokens=False)["input_ids"])
        completions.append(tokenizer(tail, add_special_tokens=False)["input_ids"])
    return prompts, completions


def split_pairs(rows: list, val_size: float, seed: int) -> tuple[list, list]:
    """Seeded held-out split; at least one item each side when val_size > 0."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_val = 0 if val_size <= 0 else max(1, round(len(rows) * val_size))
    if len(rows) - n_val < 1:
        raise PolyalignError(f"{len(rows)} pairs are too few for val_size {val_size}")
    return [rows[i] for i in sorted(order[n_val:])], [rows[i] for i in sorted(order[:n_val])]


class PadCollator:
    """Right-pads a batch: pad id for inputs, 0 for the mask, IGNORE for labels.

    With `targets_only`, the model computes logits only at positions that predict a target
    token in some row (`logits_to_keep` as an index tensor, with matching `shift_labels`):
    the loss is unchanged, but the prompt side no longer pays the vocabulary projection,
    which dominates small models with large vocabularies (Gemma: 262k x 640).
    """

    def __init__(self, pad_id: int, targets_only: bool = True):
        self.pad_id = pad_id
        self.targets_only = targets_only

    def __call__(self, batch: list[dict]) -> dict:
        import torch

        width = max(len(b["input_ids"]) for b in batch)
        pads = {"input_ids": self.pad_id, "attention_mask": 0, "labels": IGNORE}
        out = {k: torch.tensor([b[k] + [v] * (width - len(b[k])) for b in batch]) for k, v in pads.items()}
        if self.targets_only:
            next_labels = torch.cat([out["labels"][:, 1:], torch.full((len(batch), 1), IGNORE)], 1)
            keep = (next_labels != IGNORE).any(0).nonzero().flatten()
            if len(keep) == 0:
                keep = torch.tensor([width - 1])
            out["logits_to_keep"] = keep
            out["shift_labels"] = next_labels[:, keep]
        return out
