"""The time-left estimate printed at each step start: units, priors, measured rates, precision."""

from __future__ import annotations

from pathlib import Path

import pytest

from polyalign.study import step_clock
from polyalign.study.executor import execute_steps
from polyalign.study.step_clock import PRIOR_SECONDS, StepClock
from polyalign.study.steps import Step
from polyalign.study.store import Store


def _step(kind: str, key: str, config: dict, run=None) -> Step:
    return Step(kind, key, config, key, run or (lambda folder: {}))


DATA = _step("data", "d1", {"per_language": 250, "sources": ["zh", "es"]})
TRAIN = _step(
    "train", "t1", {"data": "d1", "train": {"max_steps": 20, "per_device_batch": 4, "grad_accum": 4, "epochs": 3}}
)
TRAIN_EPOCHS = _step("train", "t2", {"data": "d1", "train": {"max_steps": -1, "epochs": 2.0}})
EVAL = _step("eval", "e1", {"langs": ["en", "zh", "de"], "items": "0:120", "limit": None, "dtype": "float32"})
LENS = _step("lens", "l1", {"langs": ["zh", "ru"], "adapters": {"a": "k"}, "spec": {"items": "0:120", "limit": 8}})


def test_units_are_pairs_seen_and_items_scored():
    clock = StepClock([DATA, TRAIN, TRAIN_EPOCHS, EVAL, LENS], precision_of=lambda s: "fp32")
    assert clock.units(DATA) == 0
    assert clock.units(TRAIN) == 20 * 16
    assert clock.units(TRAIN_EPOCHS) == 2.0 * 500  # epochs x the data step's pairs
    assert clock.units(EVAL) == 3 * 120
    assert clock.units(LENS) == 2 * 8 * 2  # languages x limit x (base + one adapter)


def test_time_left_uses_priors_then_measured_rates(monkeypatch):
    steps = [DATA, TRAIN, EVAL]
    clock = StepClock(steps, precision_of=lambda s: None if s.kind == "data" else "fp32")
    prior = 320 * PRIOR_SECONDS[("train", "fp32")] + 360 * PRIOR_SECONDS[("eval", "fp32")]
    assert clock.start(0, [True, True, True]) == f" (about {prior / 60:.0f} min left, estimated)"
    now = iter([100.0, 132.0, 200.0, 300.0])  # training takes 32 s for 320 pairs: 0.1 s per pair
    monkeypatch.setattr(step_clock.time, "perf_counter", lambda: next(now))
    clock.start(1, [False, True, True])
    clock.finish(TRAIN)
    left = 320 * 0.1 + 360 * PRIOR_SECONDS[("eval", "fp32")]
    assert clock.start(1, [False, True, True]) == f" (fp32; about {step_clock._minutes(left)} left, estimated)"
    eval_only = step_clock._minutes(360 * PRIOR_SECONDS[("eval", "fp32")])
    assert clock.start(2, [False, False, True]).startswith(f" (fp32; about {eval_only} left")  # done steps not counted


def test_step_precision_resolves_auto_for_this_machine(monkeypatch):
    monkeypatch.setattr(step_clock, "_cuda", lambda: False)
    monkeypatch.setattr("polyalign.engine.precision.cpu_has_native_bf16", lambda: False)
    assert step_clock.step_precision(TRAIN) == "fp32"  # no precision key: auto
    assert step_clock.step_precision(EVAL) == "fp32"
    monkeypatch.setattr("polyalign.engine.precision.cpu_has_native_bf16", lambda: True)
    assert step_clock.step_precision(TRAIN) == "bf16"
    assert step_clock.step_precision(_step("eval", "e2", {"langs": [], "dtype": None})) == "bf16"
    assert step_clock.step_precision(DATA) is None


def test_execute_steps_prints_the_estimate_only_for_steps_that_run(tmp_path: Path):
    steps = [_step("eval", f"e{i}", {"langs": ["en"], "items": "0:10", "dtype": "float32"}) for i in range(2)]
    store = Store(tmp_path / "results.sqlite")
    lines: list[str] = []
    execute_steps(store, tmp_path, steps[:1], lines.append)  # the first step is done before
    lines.clear()
    execute_steps(store, tmp_path, steps, lines.append, clock=StepClock(steps, precision_of=lambda s: "fp32"))
    store.close()
    assert lines[0].endswith("done earlier, skipped")
    assert "(fp32; about" in lines[1] and "left, estimated)" in lines[1]


def test_a_14b_step_is_priced_by_its_flops_not_at_a_1_8b_rate(monkeypatch):
    from polyalign.study.step_cost import unit_flops

    small, big = ({"hub": f"Qwen/Qwen1.5-{size}"} for size in ("1.8B", "14B"))
    config = {"langs": ["en", "zh"], "items": "0:100", "limit": None, "dtype": "bfloat16"}
    steps = [_step("eval", "small", {**config, "model": small}), _step("eval", "big", {**config, "model": big})]
    names = {'{"hub": "Qwen/Qwen1.5-1.8B"}': "Qwen/Qwen1.5-1.8B", '{"hub": "Qwen/Qwen1.5-14B"}': "Qwen/Qwen1.5-14B"}
    clock = StepClock(steps, precision_of=lambda s: "bf16", flops_of=unit_flops(names, "cuda"))
    ratio = clock.flops_of(steps[1]) / clock.flops_of(steps[0])
    assert 9 < ratio < 11  # 12.6B vs 1.2B parameters outside the embeddings (attention: same contexts)
    assert clock.seconds(steps[1]) == pytest.approx(ratio * clock.seconds(steps[0]))  # priors scale too
    now = iter([0.0, 100.0])
    monkeypatch.setattr(step_clock.time, "perf_counter", lambda: next(now))
    clock.start(0, [True, True])
    clock.finish(steps[0])  # the 1.8B evaluation took 100 s
    assert clock.seconds(steps[1]) == pytest.approx(100 * ratio)
