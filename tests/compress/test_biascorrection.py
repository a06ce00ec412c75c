import copy

import pytest
import torch

from squeezelab.compress import correct_biases, plain_copy, prunable_layers, quantize
from squeezelab.compress.biascorrection import _channel_means

from .conftest import tiny_model


def _images(count: int = 96, seed: int = 1) -> torch.Tensor:
    # Positive, image-like inputs: weight sharing then shifts channel means in a consistent direction.
    return torch.rand(count, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def _compressed_pair(**kwargs) -> tuple[torch.nn.Module, torch.nn.Module]:
    reference = tiny_model(**kwargs).eval()
    with torch.no_grad():  # away from a fresh batch norm's identity map, so the running mean matters
        for module in reference.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    model = plain_copy(reference)
    quantize(model, 1)  # two shared values per layer: a large, biased rounding
    return reference, model


@pytest.mark.parametrize("batch_norm", [None, "all"], ids=["bias", "batch-norm"])
def test_every_layer_mean_output_per_channel_matches_the_reference_after_correction(batch_norm):
    kwargs = {"batch_norm": batch_norm} if batch_norm else {}
    reference, model = _compressed_pair(**kwargs)
    images = _images()
    wanted = _channel_means(reference, images, 32)
    before = _channel_means(model, images, 32)
    shifts = correct_biases(model, reference, images, batch_size=32)
    after = _channel_means(model, images, 32)
    assert set(shifts) == set(prunable_layers(model))
    gap_before = max((before[n] - wanted[n]).abs().max().item() for n in wanted)
    gap_after = max((after[n] - wanted[n]).abs().max().item() for n in wanted)
    assert gap_before > 1e-2 and gap_after < 1e-4 * max(1.0, gap_before)


def _sequential_pair(norm: bool) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    layers = [torch.nn.Conv2d(1, 4, 3, bias=False)] + ([torch.nn.BatchNorm2d(4).eval()] if norm else [])
    reference = torch.nn.Sequential(*layers, torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 3)).eval()
    model = copy.deepcopy(reference)
    quantize(model, 1)
    return reference, model


def test_a_convolution_without_bias_is_corrected_in_the_running_mean_of_its_batch_norm():
    reference, model = _sequential_pair(norm=True)
    weights = {n: m.weight.detach().clone() for n, m in prunable_layers(model).items()}
    images = _images()
    shifts = correct_biases(model, reference, images)
    assert list(shifts) == ["0", "3"]
    assert all(torch.equal(m.weight, weights[n]) for n, m in prunable_layers(model).items())
    assert not torch.equal(model[1].running_mean, reference[1].running_mean)
    with torch.no_grad():
        gap = (model[1](model[0](images)) - reference[1](reference[0](images))).mean(dim=(0, 2, 3))
    assert gap.abs().max() < 1e-5


def test_correction_brings_the_outputs_closer_to_the_reference_on_other_images():
    reference, model = _compressed_pair()
    held_out = _images(64, seed=2)
    distance = lambda: (model(held_out) - reference(held_out)).square().mean().item()  # noqa: E731
    with torch.no_grad():
        before = distance()
        correct_biases(model, reference, _images())
        assert distance() < before


def test_a_layer_without_bias_or_batch_norm_is_left_alone():
    reference, model = _sequential_pair(norm=False)
    shifts = correct_biases(model, reference, _images())
    assert list(shifts) == ["2"]
