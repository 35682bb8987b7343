"""Search spaces derived from a model's inventory; YAML round-trip; Optuna and Ray renderings."""
from prunetune.spaces.space import GroupSpec, SearchSpace, block_of

__all__ = ["GroupSpec", "SearchSpace", "block_of"]
