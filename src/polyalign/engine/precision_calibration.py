"""Whether bf16 is measured fast on this CPU: a short calibration, once per machine and model family, cached.

Why: "native bf16" says only that oneDNN has bf16 kernels here; how much faster they are than fp32
differs a lot between CPUs (6x on an AMX Xeon, less with AVX512-BF16 alone, and a CPU may report
the capability and still gain little), and a model is not its matmuls: on an AMX Xeon a
gemma-3-270m layer spends half its bf16 time in norms, activations and attention, which bf16 speeds
up far less. So `precision: auto` picks bf16 on a CPU only when bf16 ran at least MIN_SPEEDUP x
fp32's speed on one decoder layer of the model's own architecture and widths, built from its
config.json with random weights (`layer_calibration`); without a config at hand, on a Linear of a
small model's width (`calibration`). Results, with the figures behind them, are cached in the
polyalign cache (precision-calibration.json) per torch version, CPU capability, thread count and
layer shape, so every run on a machine makes the same choice for the same family. Both dtypes are
timed on one thread: on a machine shared with other jobs two threads wait on each other and
measured bf16 at 1.0x fp32 where one thread measured 3.1-3.6x (gemma-3-270m, AMX Xeon).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch

MIN_SPEEDUP = 1.3  # bf16 over fp32 on the calibration matmul; below it, fp32 is not worth leaving
ROWS, WIDTH, OUT = 512, 640, 2048  # gemma-3-270m's MLP shape


def cache_file() -> Path:
    root = Path(os.environ.get("POLYALIGN_CACHE", Path.home() / ".cache" / "polyalign"))
    return root / "precision-calibration.json"


def machine_key() -> str:
    return f"torch {torch.__version__}; {torch.backends.cpu.get_cpu_capability()}; {torch.get_num_threads()} threads"


def time_matmul(dtype: torch.dtype, repeats: int = 5) -> float:
    """Best seconds of one [ROWS, WIDTH] x [WIDTH, OUT] product in `dtype` (after a warm-up)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(ROWS, WIDTH, generator=generator).to(dtype)
    w = torch.randn(OUT, WIDTH, generator=generator).to(dtype)
    best = float("inf")
    with torch.inference_mode():
        torch.nn.functional.linear(x, w)
        for _ in range(repeats):
            start = time.perf_counter()
            torch.nn.functional.linear(x, w)
            best = min(best, time.perf_counter() - start)
    return best


def cached(key: str, measure: Callable[[], tuple[float, float]], what: str) -> dict:
    """The cached record under `key`, else `measure()`'s (fp32 seconds, bf16 seconds), stored."""
    path = cache_file()
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        found = {}
    if not isinstance(found, dict):
        found = {}
    if isinstance(found.get(key), dict) and "bf16_speedup" in found[key]:
        return found[key]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a busy machine makes two threads wait on each other, in both dtypes
    try:
        fp32, bf16 = measure()
    finally:
        torch.set_num_threads(threads)
    record = {"what": what, "fp32_s": fp32, "bf16_s": bf16, "bf16_speedup": fp32 / bf16, "min": MIN_SPEEDUP}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        partial.write_text(json.dumps({**found, key: record}, indent=2), encoding="utf-8")
        os.replace(partial, path)
    except OSError:
        pass  # a read-only cache: measured again next time
    return record


SHAPE_KEYS = ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "head_dim")
LAYER_TOKENS = (8, 128)  # batch x tokens of the layer calibration: an evaluation batch


def layer_config(model: str):
    """`model`'s config reduced to one decoder layer and a small vocabulary (None: no local config)."""
    from transformers import AutoConfig

    from polyalign.engine.model_paths import resolve_model_path

    folder = Path(resolve_model_path(model))
    if not (folder / "config.json").is_file():
        return None
    try:
        config = AutoConfig.from_pretrained(folder)
    except (OSError, ValueError):
        return None
    text = config.get_text_config()
    text.num_hidden_layers, text.vocab_size = 1, 256
    for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
        if getattr(text, name, None) is not None:
            setattr(text, name, 0)
    if hasattr(text, "layer_types") and text.layer_types:
        text.layer_types = text.layer_types[:1]
    return config


def time_layer(config, dtype: torch.dtype, repeats: int = 5) -> float:
    """Best seconds of the one-layer decoder (random weights, exact_norms as loaded) on LAYER_TOKENS."""
    from transformers import AutoModelForCausalLM

    from polyalign.engine import exact_norms

    torch.manual_seed(0)
    net = AutoModelForCausalLM.from_config(config, dtype=dtype).eval()
    exact_norms.install(net)
    decoder = net.get_decoder()
    embeds = torch.randn(*LAYER_TOKENS, config.get_text_config().hidden_size, dtype=dtype)
    best = float("inf")
    with torch.inference_mode():
        decoder(inputs_embeds=embeds)
        for _ in range(repeats):
            start = time.perf_counter()
            decoder(inputs_embeds=embeds)
            best = min(best, time.perf_counter() - start)
    return best


def calibration() -> dict:
    """This machine's cached matmul calibration (measured now if there is none): seconds and speed-up."""
    return cached(
        machine_key(),
        lambda: (time_matmul(torch.float32), time_matmul(torch.bfloat16)),
        f"Linear {ROWS}x{WIDTH} -> {OUT}",
    )


def layer_calibration(model: str) -> dict:
    """The cached calibration of one decoder layer of `model`'s family and widths (measured now if
    there is none); the matmul calibration where its config cannot be read or built."""
    config = layer_config(model)
    if config is None:
        return calibration()
    text = config.get_text_config()
    shape = {name: getattr(text, name, None) for name in SHAPE_KEYS}
    what = f"one {text.model_type} layer, " + ", ".join(f"{k} {v}" for k, v in shape.items() if v is not None)
    try:
        return cached(
            f"{machine_key()}; {what}",
            lambda: (time_layer(config, torch.float32), time_layer(config, torch.bfloat16)),
            what,
        )
    except (RuntimeError, ValueError, TypeError, AttributeError):  # a family that cannot be built so
        return calibration()


def bf16_measured_fast(model: str | None = None) -> bool:
    """bf16 ran at least MIN_SPEEDUP x fp32's speed here: on a layer of `model`, else on a matmul."""
    return (layer_calibration(model) if model else calibration())["bf16_speedup"] >= MIN_SPEEDUP
