"""Machine translation of benchmark records, for languages that ship no parallel questions.

Why a module of its own: the translator (a seq2seq model, loaded only when a text is not in
the cache) and its resumable cache are independent of how alignment pairs are built from the
records (polyalign.alignment.alignment_data).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from polyalign.core.errors import PolyalignError
from polyalign.core.files import AppendOnlyJsonl

# NLLB-200 codes of the paper's 20 languages (Norwegian: Bokmål; Malay: Standard Malay).
NLLB_CODES = {
    "en": "eng_Latn",
    "zh": "zho_Hans",
    "de": "deu_Latn",
    "fr": "fra_Latn",
    "es": "spa_Latn",
    "it": "ita_Latn",
    "nl": "nld_Latn",
    "ja": "jpn_Jpan",
    "ru": "rus_Cyrl",
    "sv": "swe_Latn",
    "sl": "slv_Latn",
    "pl": "pol_Latn",
    "bg": "bul_Cyrl",
    "no": "nob_Latn",
    "ms": "zsm_Latn",
    "is": "isl_Latn",
    "hi": "hin_Deva",
    "th": "tha_Thai",
    "sw": "swh_Latn",
    "bn": "ben_Beng",
}


class Seq2SeqTranslator:
    """Greedy batched translation with a Hugging Face seq2seq model, loaded on first use
    (so a run served fully from the cache never loads it)."""

    def __init__(
        self,
        model: str,
        src: str,
        tgt: str,
        lang_codes: dict[str, str] | None = None,
        device: str | None = None,
        max_new_tokens: int = 256,
    ):
        self.model_id, self.src, self.tgt = model, src, tgt
        self.codes: dict[str, str | None] = dict(lang_codes or {})
        self.device, self.max_new_tokens = device, max_new_tokens
        self.model: Any = None
        self.tokenizer: Any = None
        self.batches: list[int] = []  # sizes of the batches actually sent to the model

    def _load(self) -> None:
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        from polyalign.engine.model_paths import resolve_model_path
        from polyalign.engine.models import pick_device

        path = resolve_model_path(self.model_id)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModelForSeq2SeqLM.from_pretrained(path)
        except (OSError, ValueError) as exc:
            raise PolyalignError(f"{self.model_id}: cannot load translator: {str(exc).splitlines()[0]}") from None
        self.model.to(pick_device(self.device)).eval()
        tok = self.tokenizer
        unk = tok.unk_token_id
        detected: dict[str, str | None] = {}
        if tok.convert_tokens_to_ids("eng_Latn") not in (None, unk):  # NLLB
            detected = {"src": NLLB_CODES.get(self.src), "tgt": NLLB_CODES.get(self.tgt)}
        elif tok.convert_tokens_to_ids("__en__") not in (None, unk):  # M2M100
            detected = {"src": self.src, "tgt": self.tgt}
        self.codes = {**detected, **self.codes}  # the user's codes win
        self.forced_bos: int | None = None
        if self.codes.get("tgt"):
            code = self.codes["tgt"]
            ident = tok.get_lang_id(code) if hasattr(tok, "get_lang_id") else tok.convert_tokens_to_ids(code)
            if ident in (None, unk):
                raise PolyalignError(
                    f"{self.model_id}: translator has no language code '{code}' "
                    f"(set --translator-lang-codes src=...,tgt=...)"
                )
            self.forced_bos = ident
            if self.codes.get("src") and hasattr(tok, "src_lang"):
                tok.src_lang = self.codes["src"]

    def __call__(self, texts: list[str]) -> list[str]:
        import torch

        if self.model is None:
            self._load()
        self.batches.append(len(texts))
        batch = self.tokenizer(texts, return_tensors="pt", padding=True, truncation=True).to(self.model.device)
        extra = {"forced_bos_token_id": self.forced_bos} if self.forced_bos is not None else {}
        with torch.no_grad():
            out = self.model.generate(
                **batch, do_sample=False, num_beams=1, max_new_tokens=self.max_new_tokens, **extra
            )
        return [t.strip() for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]


def cache_key(model: str, src: str, tgt: str, text: str) -> str:
    return hashlib.sha256(json.dumps([model, src, tgt, text], ensure_ascii=False).encode()).hexdigest()


def translate_records(
    records: list[dict],
    fields,
    src: str,
    tgt: str,
    model_id_or_path: str,
    batch_size: int = 16,
    cache_path: str | Path | None = None,
    lang_codes: dict[str, str] | None = None,
    translator: Callable | None = None,
    device: str | None = None,
) -> list[dict]:
    """Copies of `records` with `fields` translated src -> tgt.

    Each finished batch is appended to the JSONL cache and fsynced, keyed by sha256 of
    (model, src, tgt, text): an interrupted run resumes where it stopped, a repeated run
    costs no model calls, and identical texts are translated once.
    """
    if batch_size < 1:
        raise PolyalignError(f"translator batch size must be at least 1 (got {batch_size})")
    translator = translator or Seq2SeqTranslator(model_id_or_path, src, tgt, lang_codes, device)
    log = AppendOnlyJsonl(Path(cache_path)) if cache_path else None
    done = {
        r["key"]: r["text"] for r in (log.rows if log else []) if isinstance(r, dict) and "key" in r and "text" in r
    }
    try:
        texts = list(dict.fromkeys(r[f] for r in records for f in fields))
        todo = sorted((t for t in texts if cache_key(model_id_or_path, src, tgt, t) not in done), key=len)
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            outputs = translator(chunk)
            if len(outputs) != len(chunk):
                raise PolyalignError(f"{model_id_or_path}: translator returned {len(outputs)} texts for {len(chunk)}")
            rows = [
                {"key": cache_key(model_id_or_path, src, tgt, text), "text": out} for text, out in zip(chunk, outputs)
            ]
            done.update((r["key"], r["text"]) for r in rows)
            if log:
                log.append(rows)
    finally:
        if log:
            log.close()
    return [{**r, **{f: done[cache_key(model_id_or_path, src, tgt, r[f])] for f in fields}} for r in records]


def records_translator(
    model: str,
    fields,
    codes: dict[str, str],
    cache: Path,
    batch_size: int = 16,
    device: str | None = None,
    announce: bool = False,
) -> Callable:
    """The `translate(records, src, tgt)` that `build_pairs` calls: `codes` maps a language (or
    'src'/'tgt') to the translator's own code; NLLB's are built in."""

    def translate(records: list[dict], src: str, tgt: str) -> list[dict]:
        chosen = {"src": codes.get("src", codes.get(src)), "tgt": codes.get("tgt", codes.get(tgt))}
        if announce:
            print(f"translating {len(records)} {src}->{tgt} records with {model} (cache {cache})")
        return translate_records(
            records, fields, src, tgt, model, batch_size, cache, {k: v for k, v in chosen.items() if v}, device=device
        )

    return translate
