"""Every flag of every command has help that states its default; help text never breaks a word."""

from __future__ import annotations

import argparse
import io
from contextlib import redirect_stdout

import pytest

from gpudiff.cli._main import build_parser, main

PARSER = build_parser()


def _actions():
    for name, sub in PARSER.subcommands.items():
        for a in sub._actions:
            if not isinstance(a, (argparse._HelpAction, argparse._VersionAction)):
                yield name, sub, a


@pytest.mark.parametrize("name,sub,action", list(_actions()), ids=lambda x: getattr(x, "dest", str(x)))
def test_every_argument_has_help_and_shows_its_default(name, sub, action):
    assert action.help, f"gpudiff {name} {action.option_strings or action.dest}: no help"
    d = action.default
    if action.option_strings and not (d is None or d is False or d is argparse.SUPPRESS):
        text = sub.formatter_class(prog="x")._get_help_string(action) % {"default": d}
        assert "default" in text, (name, action.option_strings, text)


@pytest.mark.parametrize("name,sub,action", list(_actions()), ids=lambda x: getattr(x, "dest", str(x)))
def test_no_help_token_is_too_long_to_wrap(name, sub, action):
    """argparse breaks a word only when a token has no space in it and is wider than the help
    column (80 - 24 = 56 characters at COLUMNS=80): what split 'correlatio n' in --metrics."""
    text = sub.formatter_class(prog="x")._get_help_string(action) % {"default": action.default}
    longest = max(text.split(), key=len, default="")
    assert len(longest) <= 40, (name, action.option_strings, longest)


def test_metrics_help_reads_whole_words_at_80_columns(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(["compare", "--help"]) == 0
    flat = " ".join(buf.getvalue().split())
    assert "intersection, correlation" in flat
