"""Configs declared once: a command's options, defaults and help come from the config's fields
(polyalign.cli.dataclass_args), and the config is read back from the parsed namespace in one place."""

import argparse
import dataclasses

import pytest

from polyalign.alignment.train_config import TrainConfig
from polyalign.analysis.analysis_spec import LensSpec, PcaSpec
from polyalign.cli.commands import build_parser
from polyalign.cli.dataclass_args import add_dataclass_arguments, fields_help
from polyalign.core.config import from_attributes, option
from polyalign.core.errors import PolyalignError
from polyalign.evaluation.eval_config import EvalConfig


def subparser(name: str) -> argparse.ArgumentParser:
    actions = build_parser()._subparsers._group_actions  # type: ignore[union-attr]
    return actions[0].choices[name]


def test_every_eval_config_field_is_an_eval_option_with_its_default_and_help():
    eval_parser = subparser("eval")
    args = eval_parser.parse_args(["--task", "emotion", "--out", "o"])
    cfg = from_attributes(EvalConfig, args)
    assert cfg == EvalConfig(model=cfg.model, task="emotion")  # the parser's defaults are the config's
    helps = {a.dest: a.help for a in eval_parser._actions}
    for f in dataclasses.fields(EvalConfig):
        assert f.metadata["help"] and helps[f.name], f.name


def test_eval_options_are_typed_from_the_fields():
    args = subparser("eval").parse_args(
        ["--task", "snli", "--out", "o", "--limit", "5", "--no-verify", "--verify-threshold", "0.5"]
    )
    cfg = from_attributes(EvalConfig, args)
    assert (cfg.limit, cfg.verify, cfg.verify_threshold) == (5, False, 0.5)
    args = subparser("eval").parse_args(["--task", "snli", "--out", "o", "--verify-threshold", "auto"])
    assert from_attributes(EvalConfig, args).verify_threshold == "auto"
    with pytest.raises(PolyalignError, match="unknown scoring 'vibes'"):
        from_attributes(EvalConfig, args, scoring="vibes")  # checked when made


def test_the_builder_on_a_small_config():
    @dataclasses.dataclass
    class Small:
        name: str = option(help="required: no default")
        count: int = option(3, "how many")
        flag: bool = option(False, "a switch")
        maybe: bool | None = option(None, "on, off or unset")
        words: list[str] = option(["a"], "a list")

    parser = argparse.ArgumentParser()
    add_dataclass_arguments(parser, Small, defaults={"count": 4})
    args = parser.parse_args(["--name", "x", "--flag", "--no-maybe", "--words", "b, c"])
    assert from_attributes(Small, args) == Small("x", 4, True, False, ["b", "c"])
    assert parser.parse_args(["--name", "x"]).words == ["a"]
    with pytest.raises(SystemExit):
        parser.parse_args([])  # --name is required
    assert "words (a): a list" in fields_help(Small) and "maybe (null)" in fields_help(Small)


def test_train_help_lists_every_recipe_key():
    text = subparser("train").format_help()
    for f in dataclasses.fields(TrainConfig):
        assert f"  {f.name} (" in text, f.name


@pytest.mark.parametrize("name,spec", [("lens", LensSpec), ("pca", PcaSpec)])
def test_lens_and_pca_options_are_their_specs(name, spec):
    """The commands' defaults are an experiment's: one declaration for both."""
    args = subparser(name).parse_args(["--task", "emotion", "--langs", "zh, ja", "--out", "o"])
    default_layers = spec("emotion", []).layers
    assert from_attributes(spec, args, layers=default_layers) == spec("emotion", ["zh", "ja"])
    with pytest.raises(SystemExit):
        subparser("pca").parse_args(["--task", "emotion", "--langs", "en", "--out", "o", "--pooling", "max"])
