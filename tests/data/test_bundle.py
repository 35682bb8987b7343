"""Data bundles (prunetune.data.bundle): per-item normalisation, the bundle's summary and example
input, the stratified split of a labelled set."""

from __future__ import annotations

import pytest
import torch

from prunetune.data.bundle import DataBundle, NormalizedTensorDataset, stratified_split


def test_stratified_split_gives_exact_sizes():
    """Rounding per class must neither drop samples nor shrink a part (60 -> 54 / 6 / 0)."""
    labels = torch.arange(60) % 10
    tr, va, te = stratified_split(labels, (54, 6, 0), 0)
    assert (len(tr), len(va), len(te)) == (54, 6, 0)
    assert sorted(torch.cat([tr, va]).tolist()) == list(range(60))
    uneven = torch.tensor([0] * 7 + [1] * 13 + [2] * 23)
    tr, va, te = stratified_split(uneven, (30, 5, 8), 3)
    assert (len(tr), len(va), len(te)) == (30, 5, 8)
    assert sorted(torch.cat([tr, va, te]).tolist()) == list(range(43))
    with pytest.raises(ValueError):
        stratified_split(uneven, (30, 10, 10), 0)


def test_items_are_normalised_on_access_like_all_at_once():
    images = torch.tensor([[[[0, 255]]], [[[51, 102]]]], dtype=torch.uint8)  # (2, 1, 1, 2)
    ds = NormalizedTensorDataset(images, torch.tensor([1.0, 0.0]), mean=(0.5,), std=(0.25,))
    x, y = ds[0]
    assert x.tolist() == [[[-2.0, 2.0]]] and y.dtype == torch.long and int(y) == 1
    all_x, all_y = ds.tensors()
    assert torch.allclose(all_x[1], ds[1][0]) and all_y.tolist() == [1, 0] and len(ds) == 2
    floats = NormalizedTensorDataset(images.float() / 255, torch.zeros(2), (0.0,), (1.0,), scale=1)
    assert torch.allclose(floats[0][0], images[0].float() / 255)


@pytest.mark.parametrize("shape, labels", [((2, 1, 2), 2), ((2, 1, 2, 2), 3)])
def test_images_must_be_nchw_with_one_label_each(shape, labels):
    with pytest.raises(ValueError, match="one label each"):
        NormalizedTensorDataset(torch.zeros(shape), torch.zeros(labels), (0.0,), (1.0,))


def test_a_bundle_summarises_its_splits_and_makes_inputs_of_its_shape():
    def split(n: int) -> NormalizedTensorDataset:
        return NormalizedTensorDataset(torch.zeros(n, 3, 4, 5), torch.zeros(n), (0.0,), (1.0,))

    bundle = DataBundle("toy", split(6), split(2), split(3), torch.zeros(6), (3, 4, 5), 7)
    assert bundle.summary() == {
        "dataset": "toy",
        "train": 6,
        "val": 2,
        "test": 3,
        "input_shape": [3, 4, 5],
        "num_classes": 7,
    }
    assert bundle.example_input().shape == (1, 3, 4, 5)
    assert bundle.example_input(batch_size=4).shape == (4, 3, 4, 5)
