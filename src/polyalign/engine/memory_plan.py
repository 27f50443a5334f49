"""What a step costs before its model loads: peak memory and FLOPs, from the model's shape alone.

Pure arithmetic over polyalign.engine.model_shapes.ModelShape (a config.json), so a 14B step can be
priced, and refused, on a laptop. Each estimate is a named sum of parts (weights, optimizer states,
KV cache, activations...), so a refusal can say what dominates and what would make it fit.

The activation terms count the tensors this code base's own loops keep alive: scoring
(polyalign.engine.scoring) runs under inference mode, so only one layer's intermediates live at a
time besides the KV cache, and logits exist only at scored positions (UNEMBED_POSITIONS); training
(polyalign.alignment.target_loss) keeps every layer's saved tensors (or, with gradient checkpointing,
each layer's input plus one layer's) and unembeds target rows in fp32 chunks of CHUNK_BYTES.
The constants were checked against measured peaks (tests/test_memory_plan.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from polyalign.engine.model_shapes import ModelShape

GIB = 2**30
BYTES_PER_PARAM = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "int8": 1.0 + 4 / 64, "nf4": 0.5 + 4 / 64}
UNEMBED_POSITIONS = 128  # as polyalign.engine.scoring: scored positions per unembedding
LOSS_CHUNK_BYTES = 128 * 2**20  # as polyalign.alignment.target_loss.CHUNK_BYTES
# Tensors a layer saves for backward, per token, in units of hidden / intermediate / head width
# (norm inputs and outputs, projections' inputs, rotary q/k, attention output, MLP gate/up/act/product).
SAVED_HIDDEN, SAVED_INTERMEDIATE, SAVED_HEADS = 6, 4, 5
# Transient tensors of one layer's forward under inference mode, per token, same units.
LIVE_HIDDEN, LIVE_INTERMEDIATE = 4, 3
ADAM_STATES = 2  # exp_avg and exp_avg_sq, fp32, per trainable parameter
# A fast (Rust) tokenizer resident in memory, per vocabulary entry (measured: gemma-3-270m's 262k
# entries 322 MiB, smollm2-135m's 49k entries 46 MiB). Counted only where the device is the host.
TOKENIZER_BYTES_PER_ENTRY = 1200


@dataclass(frozen=True)
class Estimate:
    """A step's peak memory as named parts (bytes), and the FLOPs of its unit of work."""

    what: str
    parts: dict[str, float]
    flops_per_unit: float  # one item scored (eval) or one training token
    unit: str
    loading: float = 0.0  # bytes held only while the weights load, besides them (see load_bytes)
    notes: list[str] = field(default_factory=list)

    @property
    def peak(self) -> float:
        """The larger of the load (weights, tokenizer, the checkpoint being read) and the step itself."""
        at_load = self.parts["weights"] + self.parts.get("tokenizer", 0.0) + self.loading
        return max(sum(self.parts.values()), at_load)

    def steady(self) -> float:
        """The step itself, once the weights are loaded."""
        return sum(self.parts.values())

    def largest_parts(self, n: int = 3) -> str:
        """The biggest terms of the peak, largest first ('checkpoint read' when loading is the peak)."""
        parts = dict(self.parts)
        if self.peak > self.steady():
            parts = {"checkpoint read at load": self.loading, "weights": parts["weights"]}
            parts["tokenizer"] = self.parts.get("tokenizer", 0.0)
        ranked = sorted(parts.items(), key=lambda kv: -kv[1])[:n]
        return ", ".join(f"{k} {gib(v)}" for k, v in ranked if v > 0)


def gib(nbytes: float) -> str:
    return f"{nbytes / GIB:.2f} GiB" if nbytes < 10 * GIB else f"{nbytes / GIB:.0f} GiB"


def dtype_bytes(precision: str) -> float:
    return {"fp32": 4.0, "float32": 4.0, "bf16": 2.0, "bfloat16": 2.0, "fp16": 2.0, "float16": 2.0}[precision]


def kv_bytes_per_token(shape: ModelShape, precision: str) -> float:
    return 2 * shape.layers * shape.kv_heads * shape.head_dim * dtype_bytes(precision)


def forward_flops_per_token(shape: ModelShape, context: int, unembed: bool) -> float:
    """2 x the body's matrix parameters, attention over `context` tokens, and the head if `unembed`."""
    body = shape.layers * (shape.layer_params() - shape.norms_per_layer * shape.hidden)
    attention = 4 * shape.layers * shape.heads * shape.head_dim * context
    return 2 * body + attention + (2 * shape.hidden * shape.vocab if unembed else 0)


def lora_params(shape: ModelShape, rank: int, modules: list[str]) -> int:
    per_layer = sum(rank * sum(shape.module_dims(m)) for m in modules)
    return shape.layers * per_layer


def weight_bytes(shape: ModelShape, precision: str, quantization: str | None = None) -> float:
    """The base model's weights; a quantized base keeps embeddings, head and norms in `precision`."""
    if quantization is None:
        return shape.params() * dtype_bytes(precision)
    linear = shape.layers * (shape.layer_params() - shape.norms_per_layer * shape.hidden)
    return linear * BYTES_PER_PARAM[quantization] + (shape.params() - linear) * dtype_bytes(precision)


def load_bytes(shape: ModelShape, precision: str, on_host: bool) -> float:
    """What loading holds besides the weights: on a CPU, safetensors maps the checkpoint into memory,
    and a checkpoint converted to another dtype is resident whole next to its copy (an fp32 model
    read in fp32 uses the mapped pages themselves). On a GPU the host holds it, not the device."""
    if not on_host or dtype_bytes(shape.stored) == dtype_bytes(precision):
        return 0.0
    return shape.params() * dtype_bytes(shape.stored)


def host_parts(shape: ModelShape, on_host: bool) -> dict[str, float]:
    return {"tokenizer": shape.vocab * TOKENIZER_BYTES_PER_ENTRY} if on_host else {}


@dataclass(frozen=True)
class EvalShape:
    """The sizes of one scoring batch: the shared few-shot prefix, the longest suffix, the rows."""

    prefix: int = 400
    suffix: int = 96
    batch: int = 16
    precision: str = "bf16"
    on_host: bool = False  # the device is the CPU: the tokenizer and the load count too
    rows: int = 10**6  # rows to score in all (a flush unembeds up to UNEMBED_POSITIONS + a batch of them)


def eval_estimate(shape: ModelShape, job: EvalShape) -> Estimate:
    """Scoring (polyalign.engine.scoring): weights, the prefix's KV cache and its per-row copies,
    one layer's live activations, and a flush of fp32 logits at the scored positions."""
    b, s, p, width = job.batch, job.suffix, job.prefix, dtype_bytes(job.precision)
    kv = kv_bytes_per_token(shape, job.precision)
    attention = b * shape.heads * s * (p + s) * 4  # fp32 scores where the kernel materializes them
    live = b * s * (LIVE_HIDDEN * shape.hidden + LIVE_INTERMEDIATE * shape.intermediate) * width
    parts = {
        "weights": weight_bytes(shape, job.precision),
        "prefix KV cache": p * kv,
        "batch KV cache": b * (p + s) * kv,
        "activations": live + attention,
        "logits": 3 * min(UNEMBED_POSITIONS + b, job.rows) * shape.vocab * 4,
        **host_parts(shape, job.on_host),
    }
    flops = (s * forward_flops_per_token(shape, p + s, unembed=False)) + 2 * shape.hidden * shape.vocab
    what = f"eval batch {b} x {s} tokens after a {p}-token prefix"
    return Estimate(what, parts, flops, "item", load_bytes(shape, job.precision, job.on_host))


def per_row_token_bytes(shape: ModelShape, precision: str, context: int) -> float:
    """What one token of a scoring batch costs: its KV cache and its share of a layer's live activations."""
    live = (LIVE_HIDDEN * shape.hidden + LIVE_INTERMEDIATE * shape.intermediate) * dtype_bytes(precision)
    return kv_bytes_per_token(shape, precision) + live + shape.heads * context * 4


@dataclass(frozen=True)
class TrainShape:
    """One optimizer micro-step: rows, tokens per row, the LoRA recipe and the precision."""

    batch: int = 4
    seq: int = 256
    rank: int = 8
    modules: tuple[str, ...] = ("q_proj", "v_proj")
    precision: str = "bf16"
    gradient_checkpointing: bool = False
    quantization: str | None = None  # nf4 / int8: a bitsandbytes base (QLoRA)
    on_host: bool = False  # the device is the CPU: the tokenizer and the load count too


def activation_bytes(shape: ModelShape, job: TrainShape) -> float:
    """Tensors saved for backward: every layer's, or each layer's input plus one layer's (checkpointing)."""
    per_token = SAVED_HIDDEN * shape.hidden + SAVED_INTERMEDIATE * shape.intermediate
    per_token += SAVED_HEADS * shape.heads * shape.head_dim
    per_layer = job.batch * job.seq * per_token * dtype_bytes(job.precision)
    attention = job.batch * shape.heads * job.seq * job.seq * 4 / 2  # masked scores, where materialized
    if job.gradient_checkpointing:
        inputs = shape.layers * job.batch * job.seq * shape.hidden * dtype_bytes(job.precision)
        return inputs + per_layer + attention
    return shape.layers * (per_layer + attention)


def train_estimate(shape: ModelShape, job: TrainShape) -> Estimate:
    """LoRA training (polyalign.alignment.training): frozen base weights, fp32 adapter with its
    gradients and Adam states, saved activations, and one chunk of fp32 logits with their gradient."""
    adapter = lora_params(shape, job.rank, list(job.modules))
    tokens = job.batch * job.seq
    chunk_rows = min(tokens, max(1, LOSS_CHUNK_BYTES // (shape.vocab * 4)))
    parts = {
        "weights": weight_bytes(shape, job.precision, job.quantization),
        "adapter, gradients, optimizer": adapter * 4 * (2 + ADAM_STATES),
        "activations": activation_bytes(shape, job),
        "logits": 3 * chunk_rows * shape.vocab * 4,
        **host_parts(shape, job.on_host),
    }
    flops = 2 * forward_flops_per_token(shape, job.seq, unembed=True)  # forward + input gradients
    if job.gradient_checkpointing:
        flops += forward_flops_per_token(shape, job.seq, unembed=False)  # the recomputed forward
    what = f"train batch {job.batch} x {job.seq} tokens, LoRA r{job.rank}"
    if job.quantization:
        what += f" on a {job.quantization} base"
    return Estimate(what, parts, flops, "token", load_bytes(shape, job.precision, job.on_host))
