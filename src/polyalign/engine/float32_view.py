"""The resident bf16/fp16 model computing in float32, one module at a time: verification without a copy.

Why: verifying a reduced-precision run used to load a second, float32 model beside the first
(1.4x the memory on a CPU; a bf16 14B model plus its 57 GB fp32 copy does not fit an 80 GB
card). Inside `Float32View(model, checkpoint)` every module that holds reduced-precision
parameters or buffers gets float32 ones just before its forward and its own back just after, so
at most one module's float32 weights are ever resident beside the model:

- a parameter whose checkpoint tensor is stored with more precision than the resident one (an
  fp32 checkpoint loaded in bf16, the packaged models' fp32 conversion) is read from the
  memory-mapped checkpoint (polyalign.engine.checkpoint_tensors); one stored in the resident dtype
  (a bf16 checkpoint) is upcast, which is the same value; a LoRA adapter's matrices, applied,
  are upcast from the resident ones (peft keeps them in float32 beside a bf16 base);
- floating buffers computed at construction (Gemma's embedding scale, sqrt(hidden) rounded to
  25.25 in bf16) come from an empty float32 construction of the same class (meta parameters);
- an embedding reads only the rows of the tokens it is given; the output head (the embedding
  matrix again when tied: 671 MB in fp32 for Gemma's 262k vocabulary) runs in row chunks.

Activations follow the weights' dtype, so the whole forward (attention, norms, KV cache) is float32
and equals a separately loaded float32 model's (tests/test_float32_view.py). `describe()` says
where each tensor came from and whether the view is exact.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import torch

from polyalign.engine.checkpoint_tensors import CheckpointTensors
from polyalign.engine.scoring import batch_overhead as compute_overhead
from polyalign.engine.unembed import base_model

REDUCED = (torch.bfloat16, torch.float16)
# plan_batches' overhead, in tokens, for forwards through the view on a CPU: float32 compute (32 for
# a float32 model) plus the view's own cost per forward (page-faulting the mapped checkpoint, the
# hooks). Measured re-scoring the 90 items a verified run re-scores (gemma-3-270m, 2 AMX cores,
# alternated, median seconds of 8 rounds): 32 and 128 17.3, 512 19.5, each spread over 13-22 s
# (bench/verify_overhead.py; docs/benchmarks.md).
CPU_BATCH_OVERHEAD = 128
HEAD_CHUNK = 16384  # output-head rows upcast (or read) at a time: 40 MB of fp32 at Gemma's width
PEFT_PREFIX, PEFT_BASE = "base_model.model.", ".base_layer"

Rows = slice | torch.Tensor | None  # all rows, a range, or the rows of these indices
Fetch = Callable[[Rows], torch.Tensor]  # -> a float32 tensor


def batch_overhead(device: torch.device) -> int:
    """plan_batches' overhead for a scorer computing through the view: its float32 compute's, not
    the resident weights' (a bf16 model on a native-bf16 CPU plans with 512)."""
    return CPU_BATCH_OVERHEAD if device.type == "cpu" else compute_overhead(device, torch.float32)


def checkpoint_name(name: str) -> str:
    """A parameter's name in the base checkpoint (peft's wrapper prefix and base_layer dropped)."""
    return name.removeprefix(PEFT_PREFIX).replace(PEFT_BASE, "")


def float32_buffers(base) -> dict[str, torch.Tensor]:
    """Floating buffers as a float32 construction of `base`'s class computes them (parameters on
    the meta device, so nothing large is allocated); {} where the class cannot be built so."""
    from accelerate import init_empty_weights

    default = torch.get_default_dtype()
    try:
        torch.set_default_dtype(torch.float32)
        with init_empty_weights(include_buffers=False):
            skeleton = type(base)(base.config)
    except (TypeError, ValueError, RuntimeError, AttributeError):
        return {}
    finally:
        torch.set_default_dtype(default)
    return {
        checkpoint_name(n): b for n, b in skeleton.named_buffers() if b.is_floating_point() and b.device.type != "meta"
    }


class Float32View:
    """Context manager: `model` (bf16/fp16 weights) computes in float32 while inside it."""

    def __init__(self, model, checkpoint: Path | None = None, head_chunk: int = HEAD_CHUNK):
        self.base = base_model(model)
        self.tensors = CheckpointTensors(checkpoint) if checkpoint is not None else None
        self.head_chunk = head_chunk
        self.sources: Counter[str] = Counter()
        self._fetch: dict[int, Fetch] = {}
        self._exact = True
        self._plan_parameters()
        self._buffers = self._plan_buffers()
        self._handles: list = []
        self._saved: dict[int, list] = {}

    def describe(self) -> dict:
        """Where the float32 tensors come from, for results.json."""
        return {"method": "layer-wise float32 view", "sources": dict(self.sources), "exact": self._exact}

    def _plan_parameters(self) -> None:
        names: dict[int, list[str]] = {}
        params: dict[int, torch.nn.Parameter] = {}
        for name, param in self.base.named_parameters(remove_duplicate=False):
            if param.dtype in REDUCED:
                names.setdefault(id(param), []).append(checkpoint_name(name))
                params[id(param)] = param
        for key, param in params.items():
            self._fetch[key] = self._source(param, names[key])

    def _source(self, param: torch.nn.Parameter, names: list[str]) -> Fetch:
        stored = None if self.tensors is None else next((n for n in names if n in self.tensors), None)
        stored_dtype = None if stored is None or self.tensors is None else self.tensors.dtype(stored)
        if stored is not None and stored_dtype is not None and stored_dtype != param.dtype:
            self.sources["checkpoint"] += 1
            tensors, device = self.tensors, param.device

            def read(rows: Rows) -> torch.Tensor:
                chosen = rows.cpu().numpy() if isinstance(rows, torch.Tensor) else rows
                return tensors.read(stored, chosen).to(device)  # type: ignore[union-attr]

            return read
        # the same value when the checkpoint stores this dtype; otherwise an approximation
        self._exact = self._exact and stored_dtype == param.dtype
        self.sources["upcast" if stored_dtype == param.dtype else "upcast, not in checkpoint"] += 1
        return lambda rows: (param if rows is None else param[rows]).float()

    def _plan_buffers(self) -> dict[str, torch.Tensor]:
        reference = float32_buffers(self.base)
        chosen = {}
        for name, buffer in self.base.named_buffers():
            if buffer.is_floating_point() and buffer.dtype in REDUCED:
                known = reference.get(checkpoint_name(name))
                self._exact = self._exact and known is not None
                self.sources["buffer, float32 construction" if known is not None else "buffer, upcast"] += 1
                chosen[name] = (known if known is not None else buffer.float()).to(buffer.device)
        return chosen

    def __enter__(self) -> Float32View:
        head = self.base.get_output_embeddings()
        chunked = type(head) is torch.nn.Linear and id(head.weight) in self._fetch
        name_of = {id(m): n for n, m in self.base.named_modules()}
        for module in self.base.modules():
            if chunked and module is head:
                head.forward = self._chunked_head(head)  # an instance attribute shadows the class's
                continue
            prefix = name_of[id(module)]
            params = {n: p for n, p in module._parameters.items() if p is not None and id(p) in self._fetch}
            named = {n: f"{prefix}.{n}".lstrip(".") for n in module._buffers}
            buffers = {n: self._buffers[full] for n, full in named.items() if full in self._buffers}
            if params or buffers:
                self._hook(module, params, buffers)
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for saved in self._saved.values():  # a forward that raised never reached its restore hook
            for holder, n, value in saved:
                holder[n] = value
        self._saved.clear()
        head = self.base.get_output_embeddings()
        if "forward" in vars(head):
            del head.forward

    def _hook(self, module, params: dict, buffers: dict) -> None:
        embedding = isinstance(module, torch.nn.Embedding) and "weight" in params

        def swap_in(mod, args):
            saved = [(mod._parameters, n, p) for n, p in params.items()]
            saved += [(mod._buffers, n, mod._buffers[n]) for n in buffers]
            self._saved[id(mod)] = saved  # before any swap: __exit__ restores what a failure left
            mod._buffers.update(buffers)
            if embedding:  # only the rows of these tokens, looked up by their position among them
                unique, inverse = torch.unique(args[0], return_inverse=True)
                saved.append((vars(mod), "padding_idx", mod.padding_idx))
                mod.padding_idx = None  # gradients only; a compact matrix has no such row
                mod._parameters["weight"] = self._fetch[id(params["weight"])](unique)
                args = (inverse, *args[1:])
            for n, p in params.items():
                if not (embedding and n == "weight"):
                    mod._parameters[n] = self._fetch[id(p)](None)
            return args

        def restore(mod, args, output):
            for holder, n, value in self._saved.pop(id(mod)):
                holder[n] = value

        self._handles.append(module.register_forward_pre_hook(swap_in))
        self._handles.append(module.register_forward_hook(restore))

    def _chunked_head(self, head: torch.nn.Linear) -> Callable[[torch.Tensor], torch.Tensor]:
        fetch, vocab = self._fetch[id(head.weight)], head.weight.shape[0]

        def forward(hidden: torch.Tensor) -> torch.Tensor:
            out = torch.empty(*hidden.shape[:-1], vocab, dtype=torch.float32, device=hidden.device)
            for start in range(0, vocab, self.head_chunk):
                rows = slice(start, min(start + self.head_chunk, vocab))
                bias = None if head.bias is None else head.bias[rows].float()
                out[..., rows] = torch.nn.functional.linear(hidden.float(), fetch(rows), bias)
            return out

        return forward
