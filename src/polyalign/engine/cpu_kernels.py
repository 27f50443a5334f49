"""bf16 CPU kernels for a decoder's RMSNorms and gated activation, compiled once per machine, cached.

Why: on a native-bf16 CPU bf16 makes the matmuls about 4x faster but torch's eager norms and
activations hardly at all. A Gemma RMSNorm is eight elementwise passes (upcast, square, mean, rsqrt,
two products, downcast) and torch's tanh-approximate gelu runs at about a fifth of erf-gelu's speed,
slower in bf16 than in fp32 (docs/benchmarks.md has the profile). Each kernel here is one fused pass:
a small torch function exported with dynamic shapes and compiled by AOTInductor into a package under
the polyalign cache (kernels/<torch version>-<CPU capability>-<CPU digest>/NAME.pt2), built the first
time a bf16 model needs it on a machine (about 15 s each), then loaded by torch's C++ package loader
in milliseconds (importing torch._inductor alone takes 1.5 s, more than most runs would gain).

The kernels compute in float32 and round to bf16 once: not the bits eager bf16 gives (it rounds after
every op) but closer to float32. A module gets its kernel only after a probe on random rows of its own
width: the kernel must equal the module's own float32 forward within one bf16 ulp. They run only
where the input is bf16 and on a CPU: with autograd off (evaluation, lens, PCA) alone, and in bf16
training inside an autograd Function with a fused backward kernel (polyalign.engine.cpu_backward;
a norm whose weight trains keeps its eager forward); float32 (the float32 view of a verified run
included) and GPUs keep the eager forward. A kernel that cannot be built or loaded is not used (one
warning line). POLYALIGN_CPU_KERNELS=0 turns them off.

`install(model)` returns the names of the kernels it put in use; a results file records them
(evaluation.eval_folder.run_identity), since bf16 scores depend on them.
"""

from __future__ import annotations

import copy
import fcntl
import functools
import hashlib
import math
import os
import platform
import sys
import types
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import NamedTuple

import torch
from torch.nn import functional as F

from polyalign.engine import cpu_backward, exact_norms
from polyalign.engine.exact_norms import GEMMA_NORMS, LLAMA_NORMS

GELU_C = math.sqrt(2.0 / math.pi)
PROBE_ROWS = 64
Kernel = Callable[..., torch.Tensor]  # bf16 [n, d] inputs -> bf16 [n, d]


class Fused(NamedTuple):
    """A module's forward kernel, and its backward kernel for bf16 training (polyalign.engine.cpu_backward),
    built and probed on the first training forward; None where that fails."""

    forward: Kernel
    backward: Callable[[], Callable | None]


def gelu_tanh_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """gelu_tanh(gate) * up; 0.5 * (1 + tanh(z)) is sigmoid(2z), which compiles to a faster kernel."""
    x = gate.float()
    z = x * (2 * GELU_C + (2 * GELU_C * 0.044715) * x * x)
    return (x * torch.sigmoid(z) * up.float()).to(gate.dtype)


def silu_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    x = gate.float()
    return (x * torch.sigmoid(x) * up.float()).to(gate.dtype)


ACTIVATIONS: dict[str, tuple[Kernel, Callable[[torch.Tensor], torch.Tensor]]] = {
    "gelu_tanh_mul": (gelu_tanh_mul, lambda x: F.gelu(x, approximate="tanh")),
    "silu_mul": (silu_mul, F.silu),
}


def norm_function(family: str, eps: float) -> Kernel:
    """The RMSNorm formula of `family` (exact_norms' own) with `eps` fixed and the weight an input."""
    forward, eps_name = (
        (exact_norms.gemma_forward, "eps") if family == "gemma" else (exact_norms.llama_forward, "variance_epsilon")
    )
    return lambda x, w: forward(SimpleNamespace(**{eps_name: eps, "weight": w}), x)


def enabled() -> bool:
    return os.environ.get("POLYALIGN_CPU_KERNELS", "1") != "0" and hasattr(torch._C, "_aoti")


def cpu_fingerprint(cpuinfo: str | None = None) -> str:
    """A digest of the CPU's model and instruction-set flags (from /proc/cpuinfo's text): a package
    compiled for one CPU may use instructions another lacks, and a cache on a shared home directory
    is seen by many machines."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8")
        except OSError:
            cpuinfo = f"model name: {platform.machine()} {platform.processor()}"
    described = "\n".join(sorted({ln for ln in cpuinfo.splitlines() if ln.startswith(("model name", "flags"))}))
    return hashlib.sha256(described.encode()).hexdigest()[:12]


def kernel_dir() -> Path:
    from polyalign.engine.model_paths import cache_dir

    capability = torch.backends.cpu.get_cpu_capability()
    tag = f"torch-{torch.__version__}-{capability}-{cpu_fingerprint()}".replace("+", "_")
    return cache_dir() / "kernels" / tag


class _Exported(torch.nn.Module):
    def __init__(self, function: Kernel):
        super().__init__()
        self.function = function

    def forward(self, *inputs: torch.Tensor):
        return self.function(*inputs)


Examples = tuple[tuple[torch.Tensor, ...], tuple[dict, ...]]  # example inputs, their dynamic dimensions


def row_examples(second_is_weight: bool) -> Examples:
    """bf16 [rows, width] and [rows, width] (or a [width] weight) inputs, any rows and width."""
    rows, width = torch.export.Dim("rows", min=1, max=1 << 30), torch.export.Dim("width", min=2, max=1 << 20)
    first = torch.randn(37, 96).bfloat16()
    second = torch.randn(96).bfloat16() if second_is_weight else torch.randn(37, 96).bfloat16()
    return (first, second), ({0: rows, 1: width}, {0: width} if second_is_weight else {0: rows, 1: width})


def build(name: str, function: Callable, examples: Callable[[], Examples]) -> Path:
    """Compile `function` (exported on `examples()`, its dimensions dynamic) into NAME.pt2, once: a
    lock keeps two processes from building it together, and the package appears only when whole."""
    path = kernel_dir() / f"{name}.pt2"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            return path
        from torch._inductor import aoti_compile_and_package

        inputs, dynamic = examples()
        program = torch.export.export(_Exported(function), inputs, dynamic_shapes=(dynamic,))  # for *inputs
        partial = path.with_name(f"{name}.{os.getpid()}.partial.pt2")
        aoti_compile_and_package(program, package_path=str(partial))
        os.replace(partial, path)
    return path


_LOADED: dict[str, Callable | None] = {}


def load(name: str, function: Callable, examples: Callable[[], Examples]) -> Callable | None:
    """The compiled kernel `name` (built on first use on this machine): its output, or a tuple of its
    outputs; None where it cannot be had."""
    if name not in _LOADED:
        try:
            path = build(name, function, examples)
            runner = torch._C._aoti.AOTIModelPackageLoader(str(path), "model", False, 1, -1)

            def kernel(*inputs: torch.Tensor, runner=runner):
                outputs = runner.run(list(inputs))
                return outputs[0] if len(outputs) == 1 else tuple(outputs)

            _LOADED[name] = kernel
        except Exception as exc:  # noqa: BLE001 - any compiler or loader failure: the eager forward stays
            print(f"polyalign: CPU kernel {name} unavailable ({type(exc).__name__}); eager bf16", file=sys.stderr)
            _LOADED[name] = None
    return _LOADED[name]


def on_rows(kernel: Kernel, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor | None:
    """`kernel` over the rows of `x` ([..., d]) as a [n, d] matrix, in `x`'s layout; None where `x`
    is neither contiguous nor a transposed [b, t, h, d] (attention's q/k norms) that is."""
    width = x.shape[-1]
    if x.is_contiguous():
        flat_other = other if other.dim() == 1 else other.reshape(-1, width)
        return kernel(x.view(-1, width), flat_other).view(x.shape)
    if x.dim() == 4 and other.dim() == 1 and x.transpose(1, 2).is_contiguous():
        swapped = x.transpose(1, 2)
        return kernel(swapped.reshape(-1, width), other).view(swapped.shape).transpose(1, 2)
    return None


def eligible(x: torch.Tensor) -> bool:
    """Inference on a bf16 CPU tensor: the only place a kernel runs."""
    return x.dtype == torch.bfloat16 and x.device.type == "cpu" and not torch.is_grad_enabled()


def close_to_float32(got: torch.Tensor, reference: torch.Tensor) -> bool:
    """Within one bf16 ulp (2^-7 relative: Llama's norm rounds twice, the others once) of the float32
    result, plus a little near 0."""
    return bool(((got.float() - reference).abs() <= reference.abs() * 2.0**-7 + 1e-6).all())


def norm_family(module: torch.nn.Module) -> str | None:
    name = type(module).__name__
    if name in GEMMA_NORMS and hasattr(module, "eps"):
        return "gemma"
    if name in LLAMA_NORMS and hasattr(module, "variance_epsilon"):
        return "llama"
    return None


def norm_kernel(module: torch.nn.Module) -> tuple[str, Fused] | None:
    """The compiled kernel for this norm, if it passes the probe against the module's float32 forward."""
    family = norm_family(module)
    weight = getattr(module, "weight", None)
    if family is None or not isinstance(weight, torch.Tensor) or weight.dim() != 1:
        return None
    eps = float(getattr(module, "eps" if family == "gemma" else "variance_epsilon"))
    name = f"{family}_norm_eps{eps:g}"
    kernel = load(name, norm_function(family, eps), lambda: row_examples(second_is_weight=True))
    rows = (torch.randn(PROBE_ROWS, weight.shape[0], generator=torch.Generator().manual_seed(0)) * 3).bfloat16()
    reference = copy.deepcopy(module).float()
    with torch.inference_mode():
        expected = type(reference).forward(reference, rows.float())
        ok = kernel is not None and close_to_float32(kernel(rows, weight), expected)
    if not ok or kernel is None:
        return None
    return name, Fused(kernel, functools.cache(lambda: norm_backward(name, module, family, eps)))


def activation_kernel(mlp: torch.nn.Module) -> tuple[str, Fused] | None:
    """The compiled gated-activation kernel whose formula the MLP's act_fn computes (probed in float32)."""
    act = getattr(mlp, "act_fn", None)
    if act is None or not all(isinstance(getattr(mlp, n, None), torch.nn.Module) for n in ("gate_proj", "up_proj")):
        return None
    generator = torch.Generator().manual_seed(0)
    gate, up = ((torch.randn(PROBE_ROWS, 64, generator=generator) * 3).bfloat16().float() for _ in range(2))
    with torch.inference_mode():
        for name, (function, formula) in ACTIVATIONS.items():
            if not torch.allclose(act(gate), formula(gate), rtol=1e-5, atol=1e-6):
                continue
            kernel = load(name, function, lambda: row_examples(second_is_weight=False))
            if kernel is not None and close_to_float32(kernel(gate.bfloat16(), up.bfloat16()), formula(gate) * up):
                return name, Fused(kernel, functools.cache(lambda n=name, f=formula: gated_backward(n, f)))
    return None


def triple_examples(second_is_weight: bool) -> Examples:
    """row_examples plus a gradient [rows, width]: a backward kernel's inputs."""
    (first, second), (first_dims, second_dims) = row_examples(second_is_weight)
    return (first, second, torch.randn(first.shape).bfloat16()), (first_dims, second_dims, first_dims)


def norm_backward(name: str, module: torch.nn.Module, family: str, eps: float) -> Callable | None:
    """The probed backward kernel of norm kernel `name` (polyalign.engine.cpu_backward)."""
    kernel = load(f"{name}_backward", cpu_backward.norm_backward_function(family, eps), lambda: triple_examples(True))
    return _agreed(name, kernel, kernel is not None and cpu_backward.norm_backward_agrees(kernel, module))


def gated_backward(name: str, formula: Callable) -> Callable | None:
    """The probed backward kernel of gated activation `name` (formula: its act_fn in float32)."""
    function = cpu_backward.GATED_BACKWARDS[name]
    kernel = load(f"{name}_backward", function, lambda: triple_examples(False))
    return _agreed(name, kernel, kernel is not None and cpu_backward.gated_backward_agrees(kernel, formula))


def _agreed(name: str, kernel: Callable | None, agrees: bool) -> Callable | None:
    if not agrees:
        print(f"polyalign: no backward kernel for {name}; bf16 training keeps its eager passes", file=sys.stderr)
    return kernel if agrees else None


def trains(x: torch.Tensor) -> bool:
    """bf16 training on a CPU: autograd on, where the paired backward kernels run."""
    return x.dtype == torch.bfloat16 and x.device.type == "cpu" and torch.is_grad_enabled()


def norm_forward(eager: Callable, fused: Fused) -> Callable:
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight
        if weight.dtype == torch.bfloat16 and eligible(x):
            out = on_rows(fused.forward, x, weight)
            if out is not None:
                return out
        elif weight.dtype == torch.bfloat16 and trains(x) and not weight.requires_grad:
            backward = fused.backward() if cpu_backward.as_rows(x) is not None else None
            if backward is not None:
                return cpu_backward.FusedNorm.apply(x, weight, fused.forward, backward)
        return eager(x)

    return forward


def mlp_forward(eager: Callable, fused: Fused) -> Callable:
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inference, training = eligible(x), trains(x)
        if not (inference or training):
            return eager(x)
        gate, up = self.gate_proj(x), self.up_proj(x)
        if gate.dtype != torch.bfloat16 or up.dtype != torch.bfloat16:
            return self.down_proj(self.act_fn(gate) * up)
        if inference:
            mixed = on_rows(fused.forward, gate, up)
        else:
            backward = fused.backward() if gate.is_contiguous() and up.is_contiguous() else None
            mixed = None if backward is None else cpu_backward.FusedGatedMul.apply(gate, up, fused.forward, backward)
        return self.down_proj(mixed if mixed is not None else self.act_fn(gate) * up)

    return forward


def install(model: torch.nn.Module) -> list[str]:
    """Give each bf16 CPU norm and gated MLP of `model` its probed kernel; the kernels' names in use."""
    first = next(model.parameters(), None)
    if not enabled() or first is None or first.device.type != "cpu":
        return []
    used: set[str] = set()
    verdicts: dict[tuple, tuple[str, Fused] | None] = {}  # one probe per class, width and eps
    for module in model.modules():
        if "polyalign_kernel" in vars(module):  # installed before
            used.add(vars(module)["polyalign_kernel"])
            continue
        chosen = choose(module, verdicts)
        if chosen is not None:
            (name, kernel), wrap = chosen
            module.forward = types.MethodType(wrap(module.forward, kernel), module)
            vars(module)["polyalign_kernel"] = name  # the kernel's name, for results files and tests
            used.add(name)
    model.polyalign_cpu_kernels = sorted(used)  # type: ignore[assignment]
    return sorted(used)


def choose(module: torch.nn.Module, verdicts: dict) -> tuple[tuple[str, Fused], Callable] | None:
    """(kernel name and kernel, forward wrapper) for a bf16 norm or gated MLP whose probe passed."""
    if norm_family(module) and _bf16(module):
        eps = getattr(module, "eps", getattr(module, "variance_epsilon", None))
        key: tuple = (type(module), next(module.parameters()).shape[0], eps)
        probe: Callable[[torch.nn.Module], tuple[str, Fused] | None] = norm_kernel
        wrap = norm_forward
    elif hasattr(module, "act_fn") and hasattr(module, "down_proj") and _bf16(module):
        key, probe, wrap = (type(module), type(module.act_fn)), activation_kernel, mlp_forward
    else:
        return None
    if key not in verdicts:
        verdicts[key] = probe(module)
    return None if verdicts[key] is None else (verdicts[key], wrap)


def _bf16(module: torch.nn.Module) -> bool:
    """bf16 parameters resident on the CPU (not offloaded to the meta device by a placement)."""
    params = list(module.parameters())
    return bool(params) and all(p.dtype == torch.bfloat16 and p.device.type == "cpu" for p in params)


def in_use(model) -> list[str]:
    """The kernels `install` put in use on `model` (or the model under a PEFT wrapper)."""
    from polyalign.engine.unembed import base_model

    found = getattr(model, "polyalign_cpu_kernels", None) or getattr(base_model(model), "polyalign_cpu_kernels", [])
    return list(found)
