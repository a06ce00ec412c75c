import pytest
import torch
from torch import nn

from squeezelab.compress import LatentWeightSharing, WeightSharing, fix_assignments, prunable_layers, prune, quantize, shared_layers
from squeezelab.compress.pruning import magnitude_mask, set_mask
from squeezelab.compress.sharing import share_weights
from squeezelab.train import fit

from .conftest import tiny_model, trained_tiny


def test_shared_weights_use_at_most_2_to_the_bits_values_and_keep_the_mask():
    model = tiny_model()
    prune(model, {"default": 0.5})
    masks = {n: m.weight != 0 for n, m in prunable_layers(model).items()}
    sizes = quantize(model, {"conv3x3": 3, "default": 4})
    for name, module in prunable_layers(model).items():
        values = module.weight[masks[name]].unique()
        assert len(values) == sizes[name] <= (8 if "expand3x3" in name else 16)
        assert torch.equal(module.weight != 0, masks[name])
    assert set(shared_layers(model)) == set(prunable_layers(model))


@pytest.mark.parametrize("update", ["sum", "mean"])
def test_centroid_gradient_is_the_sum_or_mean_over_its_cluster(update):
    conv = torch.nn.Conv2d(4, 6, 3)
    set_mask(conv, magnitude_mask(conv.weight, 0.5))
    sharing = share_weights(conv, 2, centroid_update=update)
    x = torch.randn(3, 4, 8, 8)
    conv(x).square().sum().backward()
    reference = torch.nn.Conv2d(4, 6, 3)
    with torch.no_grad():
        reference.weight.copy_(conv.weight)
        reference.bias.copy_(conv.bias)
    reference(x).square().sum().backward()
    kept = sharing.mask.flatten()
    clusters = sharing.indices.flatten()[kept]
    expected = torch.zeros_like(sharing.codebook).index_add_(0, clusters, reference.weight.grad.flatten()[kept])
    if update == "mean":
        expected /= torch.bincount(clusters, minlength=len(expected)).clamp(min=1)
    torch.testing.assert_close(sharing.codebook.grad, expected)


@pytest.mark.parametrize("option, value, choices", [("centroid_update", "median", "sum, mean"),
                                                     ("shared_training", "all", "centroids, latent")])  # fmt: skip
def test_unknown_option_names_the_choices(option, value, choices):
    with pytest.raises(ValueError, match=f"{option} must be one of {choices}, got '{value}'"):
        share_weights(torch.nn.Conv2d(4, 6, 3), 2, **{option: value})


def test_fine_tuning_moves_centroids_not_assignments(digits, tiny_config, trained_state):
    model = trained_tiny(trained_state)
    prune(model, 0.5)
    quantize(model, 3)
    before = {n: (s.codebook.detach().clone(), s.indices.clone()) for n, s in shared_layers(model).items()}
    fit(model, tiny_config.updated(lr=0.01), digits, progress=False, log=None)
    moved = 0
    for name, sharing in shared_layers(model).items():
        assert isinstance(sharing, WeightSharing)
        assert torch.equal(sharing.indices, before[name][1])
        moved += int(not torch.equal(sharing.codebook, before[name][0]))
    assert moved >= 0.9 * len(before)  # a layer behind dead ReLUs may get no gradient


def test_bits_out_of_range():
    with pytest.raises(ValueError, match="bits must be in"):
        quantize(tiny_model(), 0)


def _latent_conv(bits: int = 2) -> tuple[torch.nn.Conv2d, LatentWeightSharing]:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 6, 3)
    set_mask(conv, magnitude_mask(conv.weight, 0.5))
    return conv, share_weights(conv, bits, shared_training="latent")


def test_latent_sharing_computes_with_nearest_centroids_and_passes_gradients_straight_through():
    conv, sharing = _latent_conv()
    conv.eval()
    latent = conv.parametrizations.weight.original
    distances = (latent.detach().unsqueeze(-1) - sharing.codebook).abs()
    expected = sharing.codebook[distances.argmin(-1)] * sharing.mask
    torch.testing.assert_close(conv.weight, expected, rtol=0, atol=0)
    x = torch.randn(3, 4, 8, 8)
    conv(x).square().sum().backward()
    reference = torch.nn.Conv2d(4, 6, 3)
    with torch.no_grad():
        reference.weight.copy_(expected)
        reference.bias.copy_(conv.bias)
    reference(x).square().sum().backward()
    torch.testing.assert_close(latent.grad, reference.weight.grad * sharing.mask)  # pruned weights get none


def test_training_forward_moves_centroids_to_their_cluster_means_eval_forward_does_not():
    conv, sharing = _latent_conv()
    with torch.no_grad():
        conv.parametrizations.weight.original.mul_(1.5)  # the weights moved since k-means
    before = sharing.codebook.clone()
    conv.eval()
    conv.weight
    assert torch.equal(sharing.codebook, before)
    conv.train()
    conv.weight
    kept = conv.parametrizations.weight.original.detach()[sharing.mask]
    labels = ((kept.unsqueeze(-1) - before).abs()).argmin(-1)
    # a centroid left without weights stays where it was
    means = torch.stack([kept[labels == k].mean() if (labels == k).any() else before[k] for k in range(len(before))])
    torch.testing.assert_close(sharing.codebook, means)


def test_latent_fine_tuning_reassigns_weights_and_fixing_keeps_the_outputs(digits, tiny_config, trained_state):
    model = trained_tiny(trained_state)
    prune(model, 0.5)
    masks = {n: m.weight != 0 for n, m in prunable_layers(model).items()}
    quantize(model, 2, shared_training="latent")
    assert not shared_layers(model)  # latent sharing is no fixed assignment yet
    initial = {n: m.weight.detach().clone() for n, m in prunable_layers(model).items()}
    fit(model, tiny_config.updated(lr=0.05), digits, progress=False, log=None)
    model.eval()
    x = torch.randn(5, 1, 8, 8)
    outputs = model(x)
    fixed = fix_assignments(model)
    assert set(fixed) == set(shared_layers(model)) == set(prunable_layers(model))
    torch.testing.assert_close(model(x), outputs, rtol=0, atol=0)
    reassigned = 0
    for name, module in prunable_layers(model).items():
        mask = masks[name]
        assert torch.equal(module.weight != 0, mask) and len(module.weight[mask].unique()) <= 4
        kmeans_labels = torch.unique(initial[name][mask], return_inverse=True)[1]
        reassigned += int(not torch.equal(fixed[name].indices[mask], kmeans_labels))
    assert reassigned >= 0.9 * len(masks)


def test_loaded_assignment_brings_its_cluster_sizes():
    mask = torch.ones(1, 4, dtype=torch.bool)
    sharing = WeightSharing(torch.tensor([0.0, 1.0, 2.0]), torch.tensor([[0, 0, 1, 2]]), mask)
    other = WeightSharing(torch.tensor([0.0, 1.0, 2.0]), torch.tensor([[2, 2, 2, 1]]), mask)
    nn.Sequential(sharing).load_state_dict({f"0.{key}": value for key, value in other.state_dict().items()})
    # the mean update divides each centroid's summed gradient by the size of its cluster in the loaded assignment
    assert torch.equal(sharing.gradient_scale, torch.tensor([1.0, 1.0, 1 / 3]))
