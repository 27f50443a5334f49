"""Every command's `--help` opens with a description: its one-line help from the command list where
it declares none of its own, so a command registered without one still says what it does."""

from __future__ import annotations

import argparse


def describe_commands(parser: argparse.ArgumentParser) -> None:
    """Give each subcommand (nested ones too) its help line as description where it has none."""
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {choice.dest: choice.help for choice in action._choices_actions}
        for name, command in action.choices.items():
            if not command.description and helps.get(name):
                command.description = str(helps[name])
            describe_commands(command)
