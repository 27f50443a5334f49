"""Hidden states of every item, per layer, and the checks shared by the logit lens and PCA.

Why a module of its own: the lens and PCA read the same forward (shared few-shot prefix
computed once, its KV cache copied per batch, batches planned as in scoring) and differ only
in how positions are pooled.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from tqdm import tqdm

from polyalign.analysis.analysis_spec import LensSpec, PcaSpec
from polyalign.core.config import from_attributes
from polyalign.core.declarations import POOLINGS, check_analysis_limit, check_choice, resolve_layers
from polyalign.core.errors import PolyalignError
from polyalign.core.paths import slug
from polyalign.core.prompts import PromptPack
from polyalign.core.tasks import TaskSpec
from polyalign.engine.scoring import Item, Scorer, plan_batches
from polyalign.engine.unembed import num_layers
from polyalign.evaluation.eval_config import EvalConfig
from polyalign.evaluation.inputs import check_inputs

Pooler = Callable[[torch.Tensor], torch.Tensor]  # block output [batch, length, hidden] -> [batch, hidden]


def setup_analysis(
    what: str,
    models: list[tuple[str, object]],
    spec: LensSpec | PcaSpec,
    data_dir: str | Path | None,
    prompts: str | Path | None,
    batch_size: int,
) -> tuple[EvalConfig, TaskSpec, PromptPack, list[str], int, list[int]]:
    """Checks shared by the lens and PCA: distinct labels, enough items, same depth, valid layers.

    Returns (the config items are prepared with, task spec, pack, language codes, number of
    layers, chosen layers).
    """
    if len({slug(label) for label, _ in models}) != len(models):
        raise PolyalignError(f"model labels must differ ({', '.join(m[0] for m in models)})")
    check_analysis_limit(spec.limit, what)
    if batch_size < 1:
        raise PolyalignError("--batch-size must be at least 1")
    task, pack, codes = check_inputs(spec.task, spec.langs, spec.mode, spec.items, spec.limit, data_dir, prompts)
    cfg = from_attributes(  # task, mode, limit and items: the spec's; exact scoring prepares every label
        EvalConfig,
        spec,
        model=models[0][0],
        langs=",".join(codes),
        data_dir=str(data_dir) if data_dir else None,
        prompts=str(prompts) if prompts else None,
        batch_size=batch_size,
    )
    total = num_layers(models[0][1])
    if any(num_layers(m) != total for _, m in models):
        raise PolyalignError("compared models have different numbers of layers")
    return cfg, task, pack, codes, total, resolve_layers(spec.layers, total)


def _layer(out, layer: int, total: int) -> torch.Tensor:
    """Block `layer`'s output; the last is the decoder's `last_hidden_state` (already normed)."""
    return out.last_hidden_state if layer == total else out.hidden_states[layer]


@torch.inference_mode()
def _prefix(scorer: Scorer, prefix_ids: list[int], layers: list[int], total: int, pooling: str):
    """(KV cache, per-layer float32 sums over the prefix's positions or None) of the shared prefix."""
    if not prefix_ids:
        return None, None
    if pooling != "all":
        return scorer.prefix_cache(prefix_ids), None
    ids = torch.tensor([prefix_ids], device=scorer.device)
    out = scorer.decoder(input_ids=ids, use_cache=True, output_hidden_states=True)
    sums = torch.stack([_layer(out, layer, total)[0].float().sum(0) for layer in layers])
    return out.cache, sums


@contextmanager
def _block_outputs(decoder, layers: list[int], total: int, pool: Pooler) -> Iterator[dict[int, torch.Tensor]]:
    """While open, each chosen block but the last leaves `pool(its output)` [batch, hidden] in the dict.

    Why hooks rather than `output_hidden_states`: that keeps every block's [batch, length, hidden]
    output alive until the forward ends; the lens needs one position of each.
    """
    blocks = getattr(decoder, "layers", None)
    if not isinstance(blocks, torch.nn.ModuleList) or len(blocks) != total:
        raise PolyalignError(f"{type(decoder).__name__}: expected its {total} decoder blocks in `.layers`")
    kept: dict[int, torch.Tensor] = {}

    def keeper(layer: int):
        def hook(module, args, output) -> None:
            kept[layer] = pool(output[0] if isinstance(output, tuple) else output)

        return hook

    handles = [blocks[layer - 1].register_forward_hook(keeper(layer)) for layer in layers if layer != total]
    try:
        yield kept
    finally:
        for handle in handles:
            handle.remove()
    if len(kept) != len(handles):
        raise PolyalignError(f"{type(decoder).__name__}: {len(handles) - len(kept)} chosen blocks did not run")


def _pooler(pooling: str, lengths: torch.Tensor) -> Pooler:
    """hidden [batch, length, hidden] -> [batch, hidden]: the answer position, or float32 sums over real tokens."""
    rows = torch.arange(len(lengths), device=lengths.device)
    if pooling == "last":
        return lambda h: h[rows, lengths - 1]
    mask = torch.arange(int(lengths.max()), device=lengths.device)[None, :] < lengths[:, None]  # [batch, length]
    return lambda h: (h.float() * mask[..., None]).sum(1)


@torch.inference_mode()
def collect_states(
    model,
    tokenizer,
    items: list[Item],
    shared: int,
    layers: list[int],
    pooling: str,
    batch_size: int,
    desc: str = "forward",
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """Per batch: item indices and hidden states [len(layers), batch, hidden].

    pooling 'last': the answer position (model dtype, ready for the norm and unembedding);
    'mean': float32 average over the item's own tokens after the shared prefix, pads masked;
    'all': float32 average over every prompt position (the prefix's sums are computed once).
    Batches are planned as scoring plans them (`plan_batches`: longest first, at most `batch_size`
    rows, least padding plus per-batch cost). The final layer is the decoder's `last_hidden_state`
    (already normed); HF also puts it at hidden_states[-1], but reading it directly does not
    depend on that convention.
    """
    check_choice(pooling, POOLINGS, "pooling")
    scorer = Scorer(model, tokenizer)
    total = num_layers(model)
    cache, prefix_sums = _prefix(scorer, items[0].ids[:shared] if items else [], layers, total, pooling)
    order = sorted(items, key=lambda it: -len(it.ids))  # longest first: memory errors surface at once
    suffixes = [it.ids[shared:] for it in order]
    if not all(suffixes):
        raise PolyalignError("an item's prompt is entirely the shared prefix")
    starts = plan_batches([len(s) for s in suffixes], batch_size, scorer.batch_overhead)
    bar = tqdm(total=len(order), desc=desc, unit="item", leave=False)
    for start, stop in zip(starts, starts[1:] + [len(order)]):
        bar.update(stop - start)
        lengths = torch.tensor([len(s) for s in suffixes[start:stop]], device=scorer.device)
        pool = _pooler(pooling, lengths)
        with _block_outputs(scorer.decoder, layers, total, pool) as kept:
            last = pool(scorer.forward_suffixes(suffixes[start:stop], cache).last_hidden_state)
        picked = torch.stack([last if layer == total else kept[layer] for layer in layers])  # [layers, batch, hidden]
        if pooling == "all" and prefix_sums is not None:
            picked = (picked + prefix_sums[:, None]) / (lengths[:, None].float() + shared)
        elif pooling != "last":
            picked = picked / lengths[:, None].float()
        yield [it.index for it in order[start:stop]], picked
    bar.close()
