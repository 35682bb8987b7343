"""Search spaces derived from a model's inventory (`SearchSpace`; YAML round-trip), the
parametrizations built on it (allocation, sweep, targets) and the `Space` protocol they share."""

from prunetune.spaces.protocol import Space
from prunetune.spaces.space import GroupSpec, SearchSpace, block_of

__all__ = ["GroupSpec", "SearchSpace", "Space", "block_of"]
