"""Figures use matplotlib's object API: neither importing squeezelab nor plotting changes a notebook's backend."""

import subprocess
import sys
import textwrap

from squeezelab.utils.plotting import label_axes, new_figure, save_figure


def test_importing_squeezelab_and_plotting_leave_the_backend_alone(tmp_path):
    code = """
        import importlib, pkgutil, sys
        import matplotlib
        matplotlib.use("svg")  # a backend that is not Agg, as a notebook's inline one is not
        import squeezelab
        for info in pkgutil.walk_packages(squeezelab.__path__, "squeezelab."):
            if info.name == "squeezelab.__main__":  # it is the command line, run on import
                continue
            try:
                importlib.import_module(info.name)
            except ImportError:  # a module of an optional extra not installed here
                pass
        from squeezelab.train.plots import plot_curves
        plot_curves([{"epoch": 1, "train_loss": 1.0, "train_top1": 50.0}], sys.argv[1])
        print(matplotlib.get_backend(), "matplotlib.pyplot" in sys.modules)
    """
    path = tmp_path / "curves.png"
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code), str(path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["svg", "False"]  # the backend as set, and pyplot never imported
    assert path.read_bytes().startswith(b"\x89PNG")


def test_a_figure_is_saved_whole_and_titles_keep_their_size_unless_given(tmp_path):
    figure = new_figure(4, 2)
    styled, sized, plain = figure.subplots(1, 3)
    label_axes(styled, "x", "y", "title")
    label_axes(sized, "x", "y", "title", title_size=9)
    plain.set_title("title")
    assert styled.title.get_fontsize() == plain.title.get_fontsize() and sized.title.get_fontsize() == 9
    save_figure(figure, tmp_path / "figure.png")
    assert [p.name for p in tmp_path.iterdir()] == ["figure.png"]  # no temporary file left behind
    assert (tmp_path / "figure.png").read_bytes().startswith(b"\x89PNG")
