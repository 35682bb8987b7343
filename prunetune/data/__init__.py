"""Datasets: a registry of factories returning DataBundles, and class-balanced subset sampling."""

from prunetune.data.bundle import DataBundle, NormalizedTensorDataset
from prunetune.data.registry import DATASETS, create_dataset
from prunetune.data.sampling import BalancedSubsetSampler, balanced_indices

__all__ = [
    "DATASETS",
    "BalancedSubsetSampler",
    "DataBundle",
    "NormalizedTensorDataset",
    "balanced_indices",
    "create_dataset",
]
