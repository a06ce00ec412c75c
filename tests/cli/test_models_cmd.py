import pytest

from squeezelab.cli.main import main


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_models_lists_matching_models_with_params_size_and_macs(capsys):
    code, out, err = _run(capsys, "models", "squeezenet1_1*")
    assert code == 0 and err == ""
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:]}
    assert set(rows) == {
        "squeezenet1_1",
        "squeezenet1_1_cifar",
        "squeezenet1_1_mnist",
        "squeezenet1_1_simple_bypass",
        "squeezenet1_1_complex_bypass",
    }
    assert rows["squeezenet1_1"][1:] == ["1,235,496", "4.94", "4.71", "3x224x224", "349.2"]


def test_info_prints_per_layer_table_and_totals(capsys):
    code, out, _ = _run(capsys, "info", "squeezenet_tiny_cifar")
    assert code == 0
    assert out.splitlines()[0] == "squeezenet_tiny_cifar: input 3x32x32, 10 classes"
    assert "features.3.expand3x3" in out  # fire2 after conv, ReLU, pool
    total = next(line for line in out.splitlines() if line.startswith("total")).split()
    assert total[1:] == ["122,986", "13,991,936"]


def test_info_passes_model_arguments_to_the_builder(capsys):
    argv = ["info", "squeezenet_tiny_cifar", "--model-arg", "fire_pairing=2", "--model-arg", "remove_fires=[5]"]
    code, out, _ = _run(capsys, *argv, "--num-classes", "100", "--input-size", "28,28")
    assert code == 0
    assert out.splitlines()[0] == "squeezenet_tiny_cifar: input 3x28x28, 100 classes"
    assert "features.6.expand_fire.expand3x3" in out and "features.7" not in out  # fire5 removed


@pytest.mark.parametrize(
    "argv, message",
    [
        (["info", "sqeezenet1_0"], "squeezelab info: error: unknown model 'sqeezenet1_0'; did you mean: squeezenet1_0"),
        (["info", "squeezenet1_0", "--input-size", "16,16"], "squeezelab info: error: input (3, 16, 16) is too small"),
        (["info", "hp_sqnxt_w1_cifar", "--model-arg", "activation=gelu"], "squeezelab info: error: activation must be"),
        (["info", "vgg19_cifar", "--model-arg", "depth=16"], "squeezelab info: error: model 'vgg19_cifar': "),
        (["models", "resnet*"], "squeezelab models: error: no model matches 'resnet*'"),
    ],
)
def test_errors_are_one_line_with_exit_code_2(capsys, argv, message):
    code, out, err = _run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith(message) and err.count("\n") == 1


@pytest.mark.parametrize(
    "argv",
    [["info", "squeezenet1_0", "--model-arg", "fire_pairing"], ["info", "squeezenet1_0", "--input-size", "a,b"]],
)
def test_malformed_options_are_usage_errors(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "squeezelab info: error: argument" in capsys.readouterr().err


def test_errors_are_printed_once_under_torchrun_by_rank_0_only(capsys, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    code, out, err = _run(capsys, "info", "sqeezenet1_0")
    assert (code, out, err) == (2, "", "")
    monkeypatch.setenv("RANK", "0")
    code, _, err = _run(capsys, "info", "sqeezenet1_0")
    assert code == 2 and err.startswith("squeezelab info: error: unknown model 'sqeezenet1_0'")


def test_models_pretrained_lists_the_shipped_weights_with_their_figures(capsys):
    code, out, err = _run(capsys, "models", "--pretrained")
    assert code == 0 and err == ""
    rows = {line.split()[0]: line for line in out.splitlines()[2:] if line.startswith("squeezenet")}
    assert {"squeezenet1_0.dc_in1k", "squeezenet_fast_cifar.sl_cifar10"} <= set(rows)
    assert "imagenet" in rows["squeezenet1_0.dc_in1k"] and "Made by: squeezelab compress" in out
    code, _, err = _run(capsys, "models", "--pretrained", "resnet*")
    assert code == 2 and "no pretrained weights match 'resnet*'" in err
