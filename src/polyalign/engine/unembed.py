"""From hidden states to next-token logits: the model's final norm, output head and soft-cap.

Why one component (as tuned-lens's `nn/unembed.py`): scoring reads the decoder's final output,
the logit lens reads every layer through the same norm and head, and both must agree to the
bit with a plain forward pass. The last layer's output is already normed and is never normed
twice.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from polyalign.core.errors import PolyalignError

NORM_NAMES = ("norm", "final_layernorm", "ln_f", "final_layer_norm")
HEAD_ROWS = 32768  # rows of a bf16 head upcast at a time (84 MB of fp32 at Gemma's width)


def base_model(model):
    """The transformers model under a PEFT wrapper (the model itself when there is none)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def num_layers(model) -> int:
    """Decoder blocks of a (possibly PEFT-wrapped, possibly multimodal) model."""
    return int(base_model(model).config.get_text_config().num_hidden_layers)


def final_norm(decoder) -> torch.nn.Module:
    """The decoder's own final norm: the lens must read layers the way the last layer is read."""
    for name in NORM_NAMES:
        module = getattr(decoder, name, None)
        if isinstance(module, torch.nn.Module):
            return module
    raise PolyalignError(f"{type(decoder).__name__}: no final norm found; the logit lens needs one")


class Unembed:
    """Final norm + output head + logit soft-cap of one model, in fp32.

    `forward(h, layer)`: logits from block `layer`'s output (1-based); `layer=None` or the last
    layer means `h` is the decoder's final, already normed output.
    """

    def __init__(self, model) -> None:
        base = base_model(model)
        config = base.config
        self.decoder = base.get_decoder()
        self.head = base.get_output_embeddings()
        self.cap: float | None = getattr(config, "final_logit_softcapping", None) or getattr(
            getattr(config, "text_config", None), "final_logit_softcapping", None
        )
        self.total = num_layers(model)
        self._norm: torch.nn.Module | None = None

    @property
    def plain_head(self) -> bool:
        """A bias-free Linear whose forward nobody replaced (the float32 view replaces it)."""
        head = self.head
        return type(head) is torch.nn.Linear and head.bias is None and "forward" not in vars(head)

    @property
    def vocab_size(self) -> int:
        return int(self.head.weight.shape[0])

    @property
    def norm(self) -> torch.nn.Module:
        """Looked up on first use: scoring reads only the last layer and needs no norm."""
        if self._norm is None:
            self._norm = final_norm(self.decoder)
        return self._norm

    def forward(self, hidden: torch.Tensor, layer: int | None = None) -> torch.Tensor:
        """fp32 logits [..., vocab] from hidden states [..., hidden] of block `layer`."""
        if layer is not None and layer != self.total:
            hidden = self.norm(hidden)
        return self.capped(self.head_logits(hidden))

    def head_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """fp32 logits of the output head. A bf16/fp16 plain head is computed in fp32 from its
        upcast weights, HEAD_ROWS rows at a time. Why: bf16 logits are rounded to steps of 0.06 to
        0.125 at Gemma's logit sizes, which measured (gemma-3-270m, emotion, prefix) about half of
        what bf16 moves an item's margins, and so of what a verified run re-scores, while the head
        is a small part of the cost (one scored position per item). A head whose forward was
        replaced (polyalign.engine.float32_view) keeps it."""
        weight = self.head.weight
        if not self.plain_head or weight.dtype == torch.float32:
            return self.head(hidden).float()
        out = torch.empty(*hidden.shape[:-1], weight.shape[0], dtype=torch.float32, device=hidden.device)
        wide = hidden.float()
        for start in range(0, weight.shape[0], HEAD_ROWS):
            rows = slice(start, start + HEAD_ROWS)
            out[..., rows] = torch.nn.functional.linear(wide, weight[rows].float())
        return out

    def log_probs_at(self, hidden: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        """fp32 log-probabilities [rows, k] at vocabulary ids `columns` [k] of final hidden states [rows, hidden].

        A plain bf16/fp16 head computes the k columns' logits in float32 from the upcast rows, as
        `forward` does, and the log-normalizer from one reduced-precision product reduced in float32
        (five times faster on an AMX CPU than the upcast product). Why that is safe: the normalizer is
        the same for every column of a row, so differences of log-probabilities (an item's margin,
        what bf16 moves and a verified run re-scores) are `forward`'s; each row's log-probabilities
        only move together, by at most the largest rounding of one logit (2^-9 of its size). Any other
        head (fp32, adapted, or replaced by the float32 view) is `forward` then log_softmax."""
        weight = self.head.weight
        if not self.plain_head or weight.dtype == torch.float32:
            return self.forward(hidden).log_softmax(-1)[:, columns]
        chosen = torch.nn.functional.linear(hidden.float(), weight[columns].float())  # [rows, k]
        return self.capped(chosen) - self.log_normalizer(hidden.to(weight.dtype))[:, None]

    def capped(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.tanh(logits / self.cap) * self.cap if self.cap else logits

    def log_normalizer(self, hidden: torch.Tensor) -> torch.Tensor:
        """logsumexp over the vocabulary [rows] of the head's product in its own dtype, HEAD_ROWS
        columns reduced in float32 at a time."""
        parts = []
        for start in range(0, self.vocab_size, HEAD_ROWS):
            block = torch.nn.functional.linear(hidden, self.head.weight[start : start + HEAD_ROWS])
            parts.append(self.capped(block.float()).logsumexp(-1))
        return torch.stack(parts, -1).logsumexp(-1)

    def normed(self, states: torch.Tensor, layers: list[int]) -> torch.Tensor:
        """States [layers, batch, hidden] of blocks `layers` through the final norm (the last layer is
        already normed), flattened to [layers * batch, hidden]."""
        return torch.stack([h if layer == self.total else self.norm(h) for h, layer in zip(states, layers)]).flatten(
            0, 1
        )

    @torch.inference_mode()
    def log_probs(self, states: torch.Tensor, layers: list[int]) -> torch.Tensor:
        """fp32 log-probabilities of states [layers, batch, hidden], flattened to [layers * batch, vocab].

        All layers go through one head product: the vocabulary matrix is read once.
        """
        return self.forward(self.normed(states, layers)).log_softmax(-1)

    @torch.inference_mode()
    def logit_blocks(
        self, normed: torch.Tensor, width: int, buffer: torch.Tensor
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """(first column, fp32 logits [rows, <= width]) of normed rows [rows, hidden], `width` columns at a time.

        Why: a block small enough to stay in cache is reduced (softmax statistics) before the next
        is computed, so no [rows, vocab] tensor is written to memory at all; on a CPU that costs
        less than the whole product alone. Each block lives in `buffer` (at least rows x width
        elements) until the next. A plain fp32 head computes each block as `forward` computes it;
        any other head (adapted, bf16) runs once whole and is handed out block by block.
        """
        rows, vocab, weight = normed.shape[0], self.vocab_size, self.head.weight
        direct = type(self.head) is torch.nn.Linear and self.head.bias is None
        direct = (
            direct and weight.dtype == normed.dtype == torch.float32 and weight.device.type != "meta"
        )  # not offloaded
        whole = None if direct else self.forward(normed)  # [rows, vocab]
        for start in range(0, vocab, width):
            stop = min(start + width, vocab)
            block = buffer[: rows * (stop - start)].view(rows, stop - start)
            if whole is not None:
                block.copy_(whole[:, start:stop])
            else:
                torch.matmul(normed, weight[start:stop].T, out=block)
                if self.cap:
                    block.div_(self.cap).tanh_().mul_(self.cap)  # forward's soft-cap, in place
            yield start, block
