"""Hidden states of every item, per layer, and the checks shared by the logit lens and PCA.

Why a module of its own: the lens and PCA read the same forward (shared few-shot prefix
computed once, its KV cache copied per batch, as in scoring) and differ only in how
positions are pooled.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from tqdm import tqdm

from polyalign.declarations import POOLINGS, check_analysis_limit, check_choice, resolve_layers
from polyalign.errors import PolyalignError
from polyalign.evaluate import EvalConfig
from polyalign.inputs import check_inputs
from polyalign.paths import slug
from polyalign.prompts import PromptPack
from polyalign.scoring import Item, Scorer
from polyalign.tasks import TaskSpec
from polyalign.unembed import num_layers


def setup_analysis(
    what: str,
    models: list[tuple[str, object]],
    task: str,
    langs: str | list[str],
    mode: str,
    limit: int | None,
    data_dir: str | Path | None,
    prompts: str | Path | None,
    layers: list[int | str] | None,
    batch_size: int,
    items: str | None = None,
) -> tuple[EvalConfig, TaskSpec, PromptPack, list[str], int, list[int]]:
    """Checks shared by the lens and PCA: distinct labels, enough items, same depth, valid layers.

    Returns (the config items are prepared with, task spec, pack, language codes, number of
    layers, chosen layers).
    """
    if len({slug(label) for label, _ in models}) != len(models):
        raise PolyalignError(f"model labels must differ ({', '.join(m[0] for m in models)})")
    check_analysis_limit(limit, what)
    if batch_size < 1:
        raise PolyalignError("--batch-size must be at least 1")
    spec, pack, codes = check_inputs(task, langs, mode, items, limit, data_dir, prompts)
    cfg = EvalConfig(
        model=models[0][0],
        task=task,
        langs=",".join(codes),
        mode=mode,
        scoring="exact",
        limit=limit,
        items=items,
        data_dir=str(data_dir) if data_dir else None,
        prompts=str(prompts) if prompts else None,
        batch_size=batch_size,
    )
    total = num_layers(models[0][1])
    if any(num_layers(m) != total for _, m in models):
        raise PolyalignError("compared models have different numbers of layers")
    return cfg, spec, pack, codes, total, resolve_layers(layers, total)


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
    The final layer is the decoder's `last_hidden_state` (already normed); HF also puts it at
    hidden_states[-1], but reading it directly does not depend on that convention.
    """
    check_choice(pooling, POOLINGS, "pooling")
    scorer = Scorer(model, tokenizer)
    total = num_layers(model)
    cache, prefix_sums = _prefix(scorer, items[0].ids[:shared] if items else [], layers, total, pooling)
    order = sorted(items, key=lambda it: -len(it.ids))  # longest first: memory errors surface at once
    bar = tqdm(total=len(order), desc=desc, unit="item", leave=False)
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        bar.update(len(batch))
        suffixes = [it.ids[shared:] for it in batch]
        if not all(suffixes):
            raise PolyalignError("an item's prompt is entirely the shared prefix")
        lengths = torch.tensor([len(s) for s in suffixes], device=scorer.device)
        out = scorer.forward_suffixes(suffixes, cache, output_hidden_states=True)
        if len(out.hidden_states) != total + 1:
            raise PolyalignError(f"model returned {len(out.hidden_states)} hidden states, expected {total + 1}")
        mask = (torch.arange(out.last_hidden_state.shape[1], device=scorer.device)[None, :] < lengths[:, None]).float()
        picked = []
        for k, layer in enumerate(layers):
            h = _layer(out, layer, total)
            if pooling == "last":
                picked.append(h[torch.arange(len(batch), device=scorer.device), lengths - 1])
                continue
            sums = (h.float() * mask[..., None]).sum(1)
            if pooling == "all" and prefix_sums is not None:
                picked.append((sums + prefix_sums[k]) / (lengths[:, None].float() + shared))
            else:
                picked.append(sums / lengths[:, None].float())
        yield [it.index for it in batch], torch.stack(picked)
    bar.close()
