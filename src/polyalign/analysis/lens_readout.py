"""The logit lens's reading of answer-position states: per layer, token-set masses and entropy.

Why a module of its own: this is where the lens's cost beyond an evaluation lies. An evaluation
unembeds one position per item; the lens unembeds one per item and layer, so the products with
the vocabulary matrix (262k x 640 for Gemma) dominate its extra time. Rows are gathered across
forward batches into chunks of about `CHUNK_ROWS` (the matrix is read once per chunk), and each
chunk's logits are reduced block by block as they are computed (`Unembed.logit_blocks`): a
running maximum, sum of exponentials and sum of p * log p per row, plus the logits of the few
label tokens. No [rows, vocabulary] tensor is ever written; on 2 CPU cores this made the whole
reading cheaper than the plain product alone was, and the entropy is closer to a float64
reference than a softmax over the whole row (only non-positive terms are summed).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import torch

from polyalign.core.errors import PolyalignError
from polyalign.engine.placement import input_device
from polyalign.engine.unembed import Unembed

CHUNK_ROWS = 256  # (item, layer) rows per product with the vocabulary matrix
BLOCK_COLUMNS = {"cpu": 1024}  # vocabulary columns per block: ~1 MB blocks stay in a CPU's cache
GPU_BLOCK_COLUMNS = 65536  # a GPU pays per kernel launch, not for memory traffic at this size

Stats = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # per row: max m, sum exp(z - m), sum exp(z - m)(z - m)


def rechunk(batches: Iterable[tuple[list[int], torch.Tensor]], size: int) -> Iterator[tuple[list[int], torch.Tensor]]:
    """Regroup (indices, states [layers, batch, hidden]) into chunks of `size` items (the last may be smaller)."""
    indices: list[int] = []
    held: list[torch.Tensor] = []
    for batch_indices, states in batches:
        indices += batch_indices
        held.append(states)
        while len(indices) >= size:
            joined = torch.cat(held, 1)  # [layers, held items, hidden]
            yield indices[:size], joined[:, :size]
            indices, held = indices[size:], [joined[:, size:]]
    if indices:
        yield indices, torch.cat(held, 1)


def softmax_stats(z: torch.Tensor, stats: Stats | None, scratch: torch.Tensor) -> Stats:
    """`stats` updated with one block of logits z [rows, width] (shifted in place; `scratch` holds its exponentials)."""
    block_max = z.amax(1)
    top = block_max if stats is None else torch.maximum(stats[0], block_max)  # [rows]
    z.sub_(top[:, None])  # <= 0
    e = torch.exp(z, out=scratch[: z.numel()].view_as(z))
    total = e.sum(1)
    plogp = e.mul_(z).sum(1)  # <= 0: no cancellation
    if stats is None:
        return top, total, plogp
    old_top, old_total, old_plogp = stats
    shift = old_top - top  # <= 0: the earlier blocks' sums move to the new maximum
    scale = shift.exp()
    return top, scale * old_total + total, scale * (old_plogp + shift * old_total) + plogp


class SetReadout:
    """Mass of each token set and entropy in bits, at every chosen layer, for chunks of items.

    `sets[k]` lists the token ids of set k (an empty set has mass 0). `items_per_chunk` items fill
    one chunk of `len(layers)` rows each.
    """

    def __init__(self, model, sets: list[list[int]], layers: list[int]) -> None:
        self.unembed = Unembed(model)
        self.layers = layers
        self.device = input_device(model)  # a model split over devices: where its inputs go
        vocab = self.unembed.vocab_size
        ids = sorted(set().union(*map(set, sets)))
        if ids and ids[-1] >= vocab:
            raise PolyalignError(f"label token ids exceed the model's vocabulary ({vocab}); tokenizer and model differ")
        position = {token: i for i, token in enumerate(ids)}
        self.columns = torch.zeros(len(ids), len(sets), device=self.device)  # [set tokens, sets], 1 where in
        for k, members in enumerate(sets):
            self.columns[[position[t] for t in members], k] = 1.0
        self.width = BLOCK_COLUMNS.get(self.device.type, GPU_BLOCK_COLUMNS)
        # per vocabulary block holding set tokens: (their places in `ids`, their columns in the block)
        self.in_block: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for start in sorted({t - t % self.width for t in ids}):
            inside = [(i, t - start) for i, t in enumerate(ids) if start <= t < start + self.width]
            where = torch.tensor(inside, dtype=torch.long, device=self.device)  # [tokens here, 2]
            self.in_block[start] = (where[:, 0], where[:, 1])
        self.items_per_chunk = max(1, CHUNK_ROWS // len(layers))
        size = self.items_per_chunk * len(layers) * self.width
        self.block = torch.empty(size, device=self.device)
        self.scratch = torch.empty(size, device=self.device)

    @torch.inference_mode()
    def __call__(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """states [layers, items, hidden] -> (mass [layers, items, sets], entropy in bits [layers, items])."""
        n_layers, n_items = states.shape[:2]
        if n_items > self.items_per_chunk:
            raise PolyalignError(f"{n_items} items in one chunk; at most {self.items_per_chunk}")
        normed = self.unembed.normed(states, self.layers)  # [rows, hidden]
        label_logits = torch.empty(len(normed), len(self.columns), device=self.device)  # [rows, set tokens]
        stats: Stats | None = None
        for start, z in self.unembed.logit_blocks(normed, self.width, self.block):
            if start in self.in_block:
                places, columns = self.in_block[start]
                label_logits[:, places] = z[:, columns]
            stats = softmax_stats(z, stats, self.scratch)
        assert stats is not None, "a vocabulary has at least one block"
        top, total, plogp = stats
        log_total = total.log()
        mass = (label_logits - (top + log_total)[:, None]).exp() @ self.columns  # [rows, sets]
        entropy = (log_total - plogp / total) / math.log(2.0)  # -sum p log p = log total - plogp / total
        return mass.view(n_layers, n_items, -1), entropy.view(n_layers, n_items)
