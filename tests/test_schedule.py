"""The dry run's schedule and the resources each step asks a Ray cluster for."""

from __future__ import annotations

import pytest

from polyalign.core.errors import PolyalignError
from polyalign.study.schedule import schedule
from polyalign.study.step_resources import StepResources, check_resources, step_resources
from polyalign.study.steps import Step


def _step(kind: str, key: str, after=(), model: str | None = "m") -> Step:
    return Step(kind, key, {}, key, lambda folder: {}, depends_on=tuple(after), model=None if kind == "data" else model)


# one data step, three trainings on it, an evaluation of each adapter, two of the base model
GRID = [_step("data", "d")]
GRID += [_step("train", f"t{i}", ["d"]) for i in range(3)]
GRID += [_step("eval", f"e{i}", [f"t{i}"]) for i in range(3)] + [_step("eval", "b0"), _step("eval", "b1")]
SECONDS = {"d": 1, "t0": 100, "t1": 100, "t2": 300, "e0": 10, "e1": 10, "e2": 10, "b0": 50, "b1": 50}


def test_steps_at_once_and_the_critical_path_follow_the_gpus():
    seconds = lambda step: SECONDS[step.key]  # noqa: E731
    one = schedule(GRID, {}, cpus=16, gpus=1, seconds_of=seconds)
    assert one.most_at_once == 2  # the data step beside one GPU step
    assert one.wall_seconds == 100 + 100 + 300 + 30 + 100  # the GPU steps in turn (the data step beside one)
    many = schedule(GRID, {}, cpus=16, gpus=8, seconds_of=seconds)
    assert many.most_at_once == 5  # three trainings and two base evaluations
    assert [s.key for s in many.critical_path] == ["d", "t2", "e2"] and many.critical_seconds == 311
    assert many.wall_seconds == 311 and many.serial_seconds == sum(SECONDS.values())
    two_per_training = {"train": StepResources(gpus=2)}
    assert schedule(GRID, two_per_training, cpus=16, gpus=4, seconds_of=seconds).most_at_once == 3  # 2 + 2 GPUs
    with pytest.raises(PolyalignError, match="needs 1 CPUs and 2 GPUs, more than the 16 CPUs and 1 GPUs"):
        schedule(GRID, two_per_training, cpus=16, gpus=1, seconds_of=seconds)


def test_resources_per_kind_and_model_with_defaults():
    declared = {"train": StepResources(cpus=4, gpus=1), "big": StepResources(gpus=2)}
    assert step_resources(declared, "train", "big", cluster_gpus=8) == (4, 2)  # the model's entry first
    assert step_resources(declared, "train", "small", cluster_gpus=8) == (4, 1)
    assert step_resources(declared, "eval", "small", cluster_gpus=8) == (1, 1)  # a model step: one GPU
    assert step_resources(declared, "eval", "small", cluster_gpus=0) == (1, 0)  # none on a CPU cluster
    assert step_resources(declared, "data", None, cluster_gpus=8) == (1, 0)  # data steps: CPU only
    with pytest.raises(PolyalignError, match="unknown key"):
        check_resources({"trian": StepResources()}, ["big"])
    with pytest.raises(PolyalignError, match="data steps use no GPU"):
        check_resources({"data": StepResources(gpus=1)}, ["big"])
    with pytest.raises(PolyalignError, match="cpus must be > 0"):
        StepResources(cpus=0)


def test_the_dry_run_times_model_steps_by_their_flops_on_the_devices_named(data_dir, capsys):
    """With --devices, the schedule's step times scale with the model (a 14B step is not priced as
    a 1.8B one): the paper's Table 2 grid's critical path runs through Qwen1.5-14B."""
    from polyalign.cli.run import spread_lines
    from polyalign.study.experiment import validate_experiment
    from polyalign.study.experiment_files import resolve_experiment

    path = resolve_experiment("paper/table2_model_sizes")
    exp, _ = validate_experiment(path, [f'data_dir="{data_dir}"'], data=True)
    priors = spread_lines(exp, path, gpus=8, cpus=64)
    priced = spread_lines(exp, path, gpus=8, cpus=64, devices="8x80GB")
    assert "gemma-3-270m priors" in priors[0] and "timed by their FLOPs on 8x80GB" in priced[0]
    assert "Qwen/Qwen1.5-14B" in priced[1] and priors[1] != priced[1]
