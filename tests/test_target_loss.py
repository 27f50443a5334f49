"""The target-token loss equals HF's default loss: value, LoRA gradients, normalisation in the Trainer."""

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainerCallback, TrainingArguments

from polyalign.alignment.target_loss import (
    CHUNK_BYTES,
    TargetLossTrainer,
    chunk_rows,
    summed_cross_entropy,
    target_loss,
)
from polyalign.alignment.training_data import PadCollator, tokenize_pairs
from polyalign.engine.unembed import Unembed

ROWS = [
    {"prompt": "Translate: Der Hund schläft.\nEnglish:", "completion": " The dog is asleep."},
    {"prompt": "Q:", "completion": " Is this a much longer completion, with several more tokens than the others?"},
    {"prompt": "Translate this rather long prompt into English, please: 猫はどこ?\nEnglish:", "completion": " Cat?"},
    {"prompt": "¿Dónde está la biblioteca de la ciudad?\nEnglish:", "completion": " Where is the city library?"},
]
TOL = dict(rtol=1e-5, atol=1e-7)  # fp32 noise: the sums run in another order


def assert_same_gradient(got: torch.Tensor, want: torch.Tensor) -> None:
    """Equal within fp32 noise at the tensor's scale: the head's backward sums over a 262k vocabulary
    (sqrt(262144) x 2^-24 = 3e-5), in another blocking when a chunk has few rows; float64 puts HF's
    own fp32 gradients 2.5e-6 from the truth, and 7-row chunks 1.7e-5 (one chunk: HF's 2.5e-6)."""
    torch.testing.assert_close(got, want, rtol=1e-5, atol=3e-5 * float(want.abs().max()))


def lora_model(folder, dtype=torch.float32, **config):
    """A tiny random model with a random (non-zero) LoRA on q/v, so every LoRA matrix has a gradient."""
    base = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, **config)
    torch.manual_seed(1)
    return get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))


def lora_grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def padded_batch(folder) -> dict:
    """Rows of different lengths, right-padded: padding and prompt positions carry no target."""
    tok = AutoTokenizer.from_pretrained(folder)
    return PadCollator(tok.pad_token_id, targets_only=False)(tokenize_pairs(tok, ROWS, 256))


def test_a_chunk_of_logits_has_a_fixed_size():
    assert chunk_rows(262144) == 128 and chunk_rows(49152) == 682 and chunk_rows(10**9) == 1
    assert chunk_rows(262144) * 262144 * 4 == CHUNK_BYTES


@pytest.mark.slow
@pytest.mark.parametrize("family", ["tiny_gemma", "tiny_llama", "softcap"])
@pytest.mark.parametrize("chunk", [7, None], ids=["chunks-of-7", "default-chunks"])
@pytest.mark.parametrize("num_items", [None, 50], ids=["mean", "num-items"])
def test_loss_and_lora_gradients_equal_hf(family, chunk, num_items, request):
    """Padding, several chunks, a soft-capped head, HF's num_items_in_batch: same loss, same gradients."""
    folder = request.getfixturevalue("tiny_gemma" if family == "softcap" else family)
    # A cap small enough that tanh bends the tiny model's logits (Gemma 2's is 30 on larger logits).
    model = lora_model(folder, **({"final_logit_softcapping": 0.5} if family == "softcap" else {}))
    batch = padded_batch(folder)
    extra = {} if num_items is None else {"num_items_in_batch": torch.tensor(num_items)}
    want = model(**batch, **extra).loss
    want.backward()
    want_grads = lora_grads(model)
    model.zero_grad()
    got, outputs = target_loss(model, batch, Unembed(model), extra.get("num_items_in_batch"), chunk=chunk)
    got.backward()
    assert outputs.logits.numel() == 0  # the model computed no logits itself
    torch.testing.assert_close(got, want, **TOL)
    got_grads = lora_grads(model)
    assert want_grads.keys() == got_grads.keys() and len(got_grads) == 4 * model.config.num_hidden_layers  # q, v: A, B
    for name in want_grads:
        assert want_grads[name].abs().sum() > 0, name
        assert_same_gradient(got_grads[name], want_grads[name])


@pytest.mark.slow
def test_a_trainable_head_takes_plain_autograd(tiny_llama):
    """With the head trainable the chunk-wise gradient shortcut would drop its gradient: plain autograd, same sum."""
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    unembed = Unembed(model)
    rows = torch.randn(10, model.config.hidden_size, generator=torch.Generator().manual_seed(0), requires_grad=True)
    targets = torch.arange(10) * 7
    frozen_sum = summed_cross_entropy(rows, targets, unembed, chunk=3)
    (frozen,) = torch.autograd.grad(frozen_sum, rows)
    unembed.head.weight.requires_grad_(True)
    trainable_sum = summed_cross_entropy(rows, targets, unembed, chunk=3)
    trainable_sum.backward()
    torch.testing.assert_close(trainable_sum, frozen_sum, **TOL)
    assert_same_gradient(rows.grad, frozen)
    assert unembed.head.weight.grad is not None and unembed.head.weight.grad.abs().sum() > 0


class Gradients(TrainerCallback):
    """The accumulated LoRA gradients the optimizer is about to apply, at every step."""

    def __init__(self) -> None:
        self.steps: list[dict[str, torch.Tensor]] = []

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.steps.append(lora_grads(model))


def train_two_steps(folder, trainer_class, out, bf16: bool = False) -> tuple[list[dict], list[float]]:
    """Gradients and logged losses of two optimizer steps of 2 accumulated batches (no clipping);
    bf16: a bf16 model under the Trainer's autocast, as `polyalign train` runs it."""
    tok = AutoTokenizer.from_pretrained(folder)
    args = TrainingArguments(
        output_dir=str(out),
        max_steps=2,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        max_grad_norm=0,
        bf16=bf16,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=0,
        use_cpu=True,
        remove_unused_columns=False,
    )
    gradients = Gradients()
    trainer = trainer_class(
        model=lora_model(folder, torch.bfloat16 if bf16 else torch.float32),
        args=args,
        train_dataset=tokenize_pairs(tok, ROWS * 2, 256),
        data_collator=PadCollator(tok.pad_token_id, targets_only=False),
        callbacks=[gradients],
    )
    trainer.train()
    return gradients.steps, [r["loss"] for r in trainer.state.log_history if "loss" in r]


@pytest.mark.slow
def test_the_trainer_normalises_as_hf_under_gradient_accumulation(tiny_gemma, tmp_path):
    """Batches with different target counts, accumulated: HF divides by the step's targets
    (num_items_in_batch), not per batch; TargetLossTrainer gives the same gradients and logged losses."""
    want, want_losses = train_two_steps(tiny_gemma, Trainer, tmp_path / "hf")
    got, got_losses = train_two_steps(tiny_gemma, TargetLossTrainer, tmp_path / "ours")
    assert len(want_losses) == len(got_losses) == len(want) == len(got) == 2
    torch.testing.assert_close(torch.tensor(got_losses), torch.tensor(want_losses), **TOL)
    for got_step, want_step in zip(got, want):
        assert got_step.keys() == want_step.keys()
        for name in want_step:
            assert_same_gradient(got_step[name], want_step[name])


@pytest.mark.slow
def test_bf16_autocast_runs_the_head_as_the_model_does(tiny_gemma, tmp_path):
    """Under mixed precision, accelerate autocasts only the model's forward and hands back fp32 hidden
    states: the head must run under the same autocast (bf16 matmul, fp32 loss) to match HF's loss.
    Gradients agree within bf16 noise: HF's own bf16 gradients are 7% (of a tensor's largest) from its
    fp32 ones on this model, ours 5%, ours and HF's 2%; the fp32 test checks the normalisation."""
    want, want_losses = train_two_steps(tiny_gemma, Trainer, tmp_path / "hf", bf16=True)
    got, got_losses = train_two_steps(tiny_gemma, TargetLossTrainer, tmp_path / "ours", bf16=True)
    torch.testing.assert_close(torch.tensor(got_losses), torch.tensor(want_losses), rtol=1e-4, atol=0)
    for got_step, want_step in zip(got, want):
        for name in want_step:
            scale = float(want_step[name].abs().max())
            torch.testing.assert_close(got_step[name].float(), want_step[name].float(), rtol=0, atol=5e-2 * scale)


@pytest.mark.parametrize("cap", [None, 30.0])
def test_written_out_loss_equals_cross_entropy_even_where_a_target_probability_underflows(cap):
    """plain_head_loss's value and row gradient are autograd's cross-entropy's, also for a target whose
    probability is below float32's range (a softmax-then-log formulation would give log(0) = inf there)."""
    from types import SimpleNamespace

    from polyalign.alignment.target_loss import plain_head_loss

    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=False)
    rows, targets = torch.randn(6, 16), torch.randint(0, 50, (6,))
    with torch.no_grad():
        head.weight[targets[0]] = -200 * rows[0] / rows[0].norm() ** 2  # row 0's target logit: -200
    unembed = SimpleNamespace(head=head, cap=cap)
    loss, grad = plain_head_loss(rows, targets, unembed)
    piece = rows.clone().requires_grad_()
    logits = head(piece)
    logits = torch.tanh(logits / cap) * cap if cap else logits
    want = torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
    want.backward()
    assert torch.isfinite(loss) and (cap or loss > 200)
    torch.testing.assert_close(loss, want.detach(), **TOL)
    assert_same_gradient(grad, piece.grad)


def fused_or_skip():
    from polyalign.alignment.target_loss import fused_loss

    with torch.no_grad():
        kernel = fused_loss(torch.empty(0, 2, dtype=torch.bfloat16))
    if kernel is None:
        pytest.skip("no AOTInductor kernel on this machine (POLYALIGN_CPU_KERNELS=0 or no compiler)")
    return kernel


@pytest.mark.slow
def test_the_fused_bf16_loss_equals_the_formula_in_float64():
    """The compiled kernel's per-row losses are exact in float32 terms and its gradient (softmax -
    one-hot) is within one bf16 ulp of float64's, for targets at both ends of the vocabulary, rows of
    very different scales and a target whose probability underflows float32 (loss about 200)."""
    kernel = fused_or_skip()
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(9, 3001, generator=generator) * torch.tensor([0.1, 1, 3, 10, 30, 1, 1, 1, 1])[:, None]
    targets = torch.tensor([0, 3000, 17, 2999, 5, 1500, 8, 9, 10])
    logits[8, 10], logits[8, 11] = -100.0, 100.0  # row 8: its target 200 below the largest logit
    logits = logits.bfloat16()
    with torch.no_grad():
        losses, grads = kernel(logits, targets)
    exact = logits.double()
    want_losses = exact.logsumexp(-1) - exact.gather(1, targets[:, None]).squeeze(1)
    want_grads = exact.softmax(-1) - torch.nn.functional.one_hot(targets, 3001).double()
    assert losses.dtype == torch.float32 and grads.dtype == torch.bfloat16 and grads.shape == logits.shape
    torch.testing.assert_close(losses.double(), want_losses, rtol=2e-6, atol=1e-5)
    assert losses[8] > 199
    assert ((grads.double() - want_grads).abs() <= want_grads.abs() * 2.0**-8 + 1e-30).all()


@pytest.mark.slow
def test_the_fused_bf16_loss_gives_the_eager_loss_and_lora_gradients(tiny_gemma, monkeypatch):
    """A bf16 model's target loss through the fused kernel (its chunks hold bf16 logits) against the
    eager fp32 passes: the same loss within fp32 noise, LoRA gradients within bf16 rounding."""
    from polyalign.alignment import target_loss as module

    fused_or_skip()
    model = lora_model(tiny_gemma, torch.bfloat16)
    batch, unembed = padded_batch(tiny_gemma), Unembed(model)
    assert module.held_logit_bytes(unembed) == 2 and module.chunk_rows(262144, 2) == 256
    assert module.loss_kernels(model) == [module.FUSED_LOSS] and module.loss_kernels(lora_model(tiny_gemma)) == []
    got, _ = target_loss(model, batch, unembed, chunk=7)
    got.backward()
    got_grads = lora_grads(model)
    model.zero_grad()
    monkeypatch.setattr(module, "fused_loss", lambda logits: None)
    assert module.held_logit_bytes(unembed) == 4
    want, _ = target_loss(model, batch, unembed, chunk=7)
    want.backward()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=0)
    for name, grad in lora_grads(model).items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(got_grads[name].float(), grad.float(), rtol=0, atol=2e-2 * float(grad.abs().max()))


def test_a_fused_loss_that_fails_its_probe_or_does_not_apply_is_not_used(monkeypatch):
    """Wrong values from the compiled kernel, float32 logits or autograd on: the eager passes run."""
    from polyalign.alignment import target_loss as module
    from polyalign.engine import cpu_kernels

    logits = torch.zeros(1, 2, dtype=torch.bfloat16)
    with torch.no_grad():
        assert module.fused_loss(logits.float()) is None
    assert module.fused_loss(logits) is None  # autograd on
    monkeypatch.setattr(module, "_PROBED", {})
    monkeypatch.setattr(cpu_kernels, "load", lambda name, f, examples: lambda x, t: (torch.zeros(len(t)), x))
    with torch.no_grad():
        assert module.fused_loss(logits) is None
