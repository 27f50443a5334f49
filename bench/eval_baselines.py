"""The two methods polyalign's scorer is measured against, on byte-identical prompts: the paper's
naive loop and lm-evaluation-harness's HF backend (bench/eval_throughput.py runs them).

Why apart: they are baselines to reproduce faithfully, not polyalign code, and each keeps the
cost of the method it stands for (autograd on and a full-vocabulary softmax in the naive loop;
lm-eval's own model copy and batch size 8).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from polyalign.core.prompts import PromptPack
from polyalign.core.tasks import gold_labels, load_task, load_test_records
from polyalign.engine.scoring import prefix_sets

MODE = "english"  # label words of every method: the paper's English labels


@dataclass
class Items:
    """The benchmark's items (languages in order, then indices): prompts, label words, golds.

    `words[i]` maps class -> label word of item i's language. Prefix scoring adds, per item, the
    candidate token sets and the shared stem's token ids appended to the prompt (polyalign's rule).
    """

    task: str
    prompts: list[str]
    words: list[dict[str, str]]
    golds: list[str]
    langs: list[str]
    token_sets: list[dict[str, list[int]]] = field(default_factory=list)
    stems: list[list[int]] = field(default_factory=list)


@dataclass
class Outcome:
    """One method's result: wall time and per-item class scores (summed label log-probs)."""

    name: str
    seconds: float
    scores: list[dict[str, float]]
    preds: list[str | None] = field(init=False)
    verify: dict | None = field(default=None, init=False)  # results.json's verify entry (bf16+verify)

    def __post_init__(self) -> None:
        self.preds = [argmax(s) for s in self.scores]


def argmax(scores: dict[str, float]) -> str | None:
    """Top class; None on an exact tie (polyalign's rule), so ties never count as agreement by luck."""
    best = max(scores.values())
    top = [c for c, v in scores.items() if v == best]
    return top[0] if len(top) == 1 else None


def load_items(data_dir: Path, task_name: str, langs: list[str], count: int) -> Items:
    """The first `count` items of each language, rendered with polyalign's renderer so every method
    reads the same bytes."""
    pack = PromptPack.load(data_dir / "prompts.json")
    task = load_task(task_name)
    items = Items(task_name, [], [], [], [])
    for lang in langs:
        records = load_test_records(task, lang, data_dir)
        n = min(count, len(records))
        items.golds += gold_labels(task, lang, records, data_dir).classes[:n]
        items.prompts += [pack.render(task, lang, MODE, records[i]) for i in range(n)]
        items.words += [pack.label_words(task, lang, MODE)] * n
        items.langs += [lang] * n
    return items


def add_prefix_rule(tokenizer, items: Items) -> None:
    """The prefix rule's candidate sets and stems, per language from its first prompt (as polyalign)."""
    rule: dict[str, tuple] = {}
    for lang, prompt, words in zip(items.langs, items.prompts, items.words):
        if lang not in rule:
            stem_ids, _, sets = prefix_sets(tokenizer, tokenizer(prompt)["input_ids"], prompt, words)
            rule[lang] = (stem_ids, sets)
        items.stems.append(rule[lang][0])
        items.token_sets.append(rule[lang][1])


def label_tokens(tokenizer, prompt_ids: list[int], prompt: str, word: str) -> list[int]:
    """Label tokens as read right after the prompt (tokenize prompt+word, keep the tail)."""
    joint = tokenizer(prompt + word)["input_ids"]
    if joint[: len(prompt_ids)] == prompt_ids and len(joint) > len(prompt_ids):
        return joint[len(prompt_ids) :]
    return tokenizer(word, add_special_tokens=False)["input_ids"]


def run_naive(model, tokenizer, items: Items, scoring: str = "exact") -> Outcome:
    """The paper's loop: batch 1, a full forward per item with no KV reuse, full-vocab softmax.

    Faithful to its scripts' cost: autograd state kept, softmax over all positions.

    Prefix scoring sums the last position's probabilities over each label's candidate set. Exact:
    a single-token label is read from the last position's log-softmax; a multi-token label costs
    one more full forward of prompt+label (the naive way), summing its tokens' log-probs.
    """
    scores = []
    start = time.perf_counter()
    # As the paper's scripts do: autograd left on (no no_grad/inference_mode) and a softmax
    # over every position's full-vocabulary logits, of which only the last row is read.
    with torch.enable_grad():
        for i, prompt in enumerate(items.prompts):
            ids = tokenizer(prompt)["input_ids"] + (items.stems[i] if scoring == "prefix" else [])
            logits = model(torch.tensor([ids], device=model.device)).logits
            probs = torch.softmax(logits.float(), -1)[0, -1].detach()
            if scoring == "prefix":
                scores.append({cls: float(probs[cand].sum()) for cls, cand in items.token_sets[i].items()})
                continue
            last = probs.log()
            item = {}
            for cls, word in items.words[i].items():
                cont = label_tokens(tokenizer, ids, prompt, word)
                if len(cont) == 1:
                    item[cls] = float(last[cont[0]])
                    continue
                full = model(torch.tensor([ids + cont[:-1]], device=model.device)).logits[0].float().log_softmax(-1)
                item[cls] = float(sum(full[len(ids) - 1 + j, t] for j, t in enumerate(cont)))
            scores.append(item)
    return Outcome("naive (paper)", time.perf_counter() - start, scores)


def run_lm_eval(model_path: str, items: Items, device: str = "cpu", dtype: str = "float32") -> Outcome:
    """lm-eval's HF backend on (prompt, label word) loglikelihood requests, batch size 8.

    Loading HFLM (its own copy of the model) is excluded from the timing, as for the others.
    """
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model_path, batch_size=8, device=device, dtype=dtype)
    classes = list(items.words[0])
    requests = [
        Instance(request_type="loglikelihood", doc={}, arguments=(p, w[c]), idx=j)
        for p, w in zip(items.prompts, items.words)
        for j, c in enumerate(classes)
    ]
    with torch.inference_mode():
        lm.loglikelihood(requests[:1], disable_tqdm=True)  # warm-up, untimed (first-call overhead)
        start = time.perf_counter()
        results = lm.loglikelihood(requests, disable_tqdm=True)
        seconds = time.perf_counter() - start
    del lm
    lls = [float(ll) for ll, _greedy in results]
    scores = [dict(zip(classes, lls[i * len(classes) : (i + 1) * len(classes)])) for i in range(len(items.prompts))]
    return Outcome("lm-eval HFLM", seconds, scores)
