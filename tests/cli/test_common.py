"""Option types and checks shared by the command modules: errors are one line naming the option."""

import argparse

import pytest

from squeezelab.cli.common import checked_input_size, non_negative_int, positive_int
from squeezelab.cli.main import build_parser, main
from squeezelab.models import InputTooSmallError, create_model


def _commands_with(option: str) -> list[str]:
    """Every subcommand that takes ``option``, found in the real parser (new commands are covered too)."""
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(name for name, parser in subparsers.choices.items() if option in parser._option_string_actions)


def test_counts_and_seeds_are_checked_by_their_option_types():
    assert positive_int("3") == 3 and non_negative_int("0") == 0
    for parse, text, message in (
        (positive_int, "0", "must be >= 1, got 0"),
        (positive_int, "two", "expected a whole number, got 'two'"),
        (non_negative_int, "-1", "must be >= 0, got -1"),
    ):
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            parse(text)


@pytest.mark.parametrize("command", _commands_with("--threads"))
def test_every_threads_option_refuses_less_than_one(command, capsys):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args([command, "--threads", "-1"])
    assert info.value.code == 2
    assert "argument --threads: must be >= 1, got -1" in capsys.readouterr().err


def test_the_threads_commands_are_found():
    assert {"bench", "classify", "quantize-int8"} <= set(_commands_with("--threads"))


def test_input_size_is_checked_against_the_model():
    model = create_model("squeezenet1_1_cifar")
    assert checked_input_size(model, None) == (3, 32, 32)
    assert checked_input_size(model, (40, 48)) == (3, 40, 48)
    with pytest.raises(InputTooSmallError, match=r"input \(3, 1, 1\) is too small for this network"):
        checked_input_size(model, (1, 1))
    with pytest.raises(ValueError, match="--input-size: 1 channels, but the model takes 3"):
        checked_input_size(model, (1, 32, 32))


@pytest.mark.parametrize("command", [["info", "squeezenet1_1_cifar"], ["export-onnx", "squeezenet1_1_cifar", "--out", "x.onnx"]])
def test_too_small_input_size_is_one_line_naming_the_size(command, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main([*command, "--input-size", "1,1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "input (3, 1, 1) is too small for this network" in err
    assert not (tmp_path / "x.onnx").exists()
