"""A base install (no extras) imports every subpackage and runs every command that needs no extra.

The extras are hidden from a child interpreter (``sys.modules[name] = None`` makes their import fail
exactly as an absent package does), so these tests hold whether or not the extras are installed here.
"""

import subprocess
import sys
import textwrap

import pytest

from squeezelab.utils.optional import EXTRAS, MissingDependency, require

HIDE_EXTRAS = "import sys\nfor name in {names!r}: sys.modules[name] = None\n".format(names=sorted(EXTRAS))


def _run_without_extras(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", HIDE_EXTRAS + textwrap.dedent(code)], capture_output=True, text=True, timeout=300
    )


def test_every_subpackage_and_the_cli_import_without_extras():
    done = _run_without_extras(
        """
        import importlib, pkgutil, squeezelab
        for info in pkgutil.iter_modules(squeezelab.__path__):
            if info.ispkg:
                importlib.import_module("squeezelab." + info.name)
        from squeezelab.cli.main import build_parser
        build_parser()
        print("ok")
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


@pytest.mark.parametrize(
    ("argv", "extra"),
    [
        (["sweep", "study.yaml"], "sweep"),
        (["export-onnx", "squeezenet1_1", "--out", "m.onnx"], "onnx"),
    ],
)
def test_a_command_needing_a_missing_extra_names_it_in_one_line(argv, extra, tmp_path):
    done = _run_without_extras(
        f"""
        import os
        os.chdir({str(tmp_path)!r})
        from squeezelab.cli.main import main
        raise SystemExit(main({argv!r}))
        """
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f'pip install "squeezelab[{extra}]"' in lines[0]


def test_a_command_without_extras_still_runs():
    done = _run_without_extras(
        """
        from squeezelab.cli.main import main
        raise SystemExit(main(["models", "squeezenet1_1"]))
        """
    )
    assert done.returncode == 0, done.stderr
    assert "squeezenet1_1" in done.stdout


def test_require_returns_an_installed_module_and_names_the_extra_of_a_missing_one(monkeypatch):
    assert require("json").dumps([1]) == "[1]"
    monkeypatch.setitem(sys.modules, "optuna", None)
    with pytest.raises(MissingDependency, match=r'pip install "squeezelab\[sweep\]"'):
        require("optuna")
