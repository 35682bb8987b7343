"""Which traced ops torch-pruning can index-map channels through (`unmappable` says why not), and
the channels-last regions of a traced graph (`channels_last_regions`): the shape checks behind
`graph.SafeDependencyGraph`. Shapes come from autograd's per-node metadata."""

from __future__ import annotations

import math

import torch_pruning as tp
from torch import nn
from torch_pruning import ops


def _out_shape(grad_fn) -> tuple[int, ...] | None:
    """Shape of the tensor the op produced (autograd keeps it as the backward's input metadata)."""
    meta = getattr(grad_fn, "_input_metadata", None)
    return tuple(meta[0].shape) if meta else None


def _in_shapes(grad_fn) -> list[tuple[int, ...]]:
    """Shapes of the op's non-parameter tensor inputs."""
    shapes = []
    for fn, idx in getattr(grad_fn, "next_functions", ()):
        if fn is None or fn.name().endswith("AccumulateGrad"):
            continue
        meta = getattr(fn, "_input_metadata", None)
        if meta and idx < len(meta):
            shapes.append(tuple(meta[idx].shape))
    return shapes


def _permute(node: tp.Node) -> tuple[int, ...] | None:
    fn = node.grad_fn
    if fn is None or not hasattr(fn, "name") or not fn.name().startswith("Permute"):
        return None
    return tuple(getattr(fn, "_saved_dims", ())) or None


def _to_last(dims: tuple[int, ...] | None) -> bool:
    return dims is not None and len(dims) == 4 and dims[0] == 0 and dims[-1] % 4 == 1


def _to_first(dims: tuple[int, ...] | None) -> bool:
    return dims is not None and len(dims) == 4 and dims[0] == 0 and dims[1] % 4 == 3


_FIRST_ONLY = (nn.modules.conv._ConvNd, nn.modules.batchnorm._BatchNorm)


def _region(start: tp.Node) -> tuple[set[tp.Node], str | None]:
    """The nodes fed (directly or not) by the channels-last permute `start`, up to and including
    the permutes back; and why the region cannot be mapped (None if it can)."""
    seen: set[tp.Node] = set()
    todo = list(start.outputs)
    while todo:
        node = todo.pop()
        if node in seen:
            continue
        seen.add(node)
        if isinstance(node.module, _FIRST_ONLY):
            return (
                seen,
                f"{start.grad_fn.name()} to channels-last feeds {type(node.module).__name__}",
            )
        if _to_last(_permute(node)):
            return seen, f"{start.grad_fn.name()} to channels-last is permuted again"
        if not _to_first(_permute(node)):
            todo.extend(node.outputs)
    return seen, None


def channels_last_regions(nodes) -> tuple[set[tp.Node], dict[tp.Node, str]]:
    """(nodes whose input is a channels-last tensor, {permute: reason} for regions that are not
    mappable)."""
    inside: set[tp.Node] = set()
    broken: dict[tp.Node, str] = {}
    for node in nodes:
        if _to_last(_permute(node)):
            region, reason = _region(node)
            inside |= region
            if reason is not None:
                broken[node] = reason
    return inside, broken


def _moves_channels(grad_fn, rank: int) -> bool:
    name = grad_fn.name()
    if name.startswith("Permute"):
        dims = tuple(getattr(grad_fn, "_saved_dims", ()))
        return len(dims) > 1 and dims[1] % rank != 1
    if name.startswith("Transpose"):
        d0, d1 = (getattr(grad_fn, f"_saved_dim{i}", 0) % rank for i in (0, 1))
        return d0 != d1 and 1 in (d0, d1)
    return False


_BROADCASTING = ("Add", "Sub", "Rsub", "Mul", "Div", "Maximum", "Minimum", "Where", "Pow")
_REDUCING = ("Mean", "Sum", "Amax", "Amin", "Norm", "LinalgVectorNorm", "Std", "Var")


def _same_channels(shape: tuple[int, ...], out: tuple[int, ...], op: str = "") -> bool:
    """Element-wise op input vs output: same channel count (a lower-rank operand broadcasts from
    the right, so its channel entry may also be 1 or absent; an arithmetic op's operand may also
    broadcast a channel entry of 1, and a reduction over channels may end at 1 channel: neither
    carries channel indices)."""
    missing = len(out) - len(shape)
    if missing <= 0:
        broadcast = op.startswith(_BROADCASTING) and len(shape) == len(out) and shape[1] == 1
        reduced = op.startswith(_REDUCING) and len(shape) == len(out) and out[1] == 1
        return len(shape) < 2 or shape[1] == out[1] or broadcast or reduced
    return missing > 1 or shape[0] in (1, out[1])


def _reshape_ok(shape: tuple[int, ...], out: tuple[int, ...]) -> bool:
    """A no-op, an (N, C, H, W) -> (N, C*H*W) flatten or an (N, C) -> (N, C, 1, 1) unsqueeze: the
    reshapes torch-pruning maps correctly."""
    flatten = len(shape) == 4 and len(out) == 2 and out[1] == math.prod(shape[1:])
    unsqueeze = len(shape) == 2 and len(out) == 4 and out[1] == shape[1] and out[2] == out[3] == 1
    return shape == out or flatten or unsqueeze


def _last_dim_kept(shape: tuple[int, ...], out: tuple[int, ...], op: str) -> bool:
    """Channels-last input vs output: the last (channel) dimension is unchanged, a broadcast 1, or
    reduced to 1 (as `_same_channels` for dimension 1)."""
    reduced = op.startswith(_REDUCING) and bool(out) and out[-1] == 1
    return not shape or not out or shape[-1] in (1, out[-1]) or reduced


def _inside_linear(node: tp.Node) -> bool:
    """The matmul of an nn.Linear applied to a > 2-D input (torch-pruning's node of that Linear is
    the view after it, so the matmul shows up as a separate op feeding only that Linear)."""
    name = node.grad_fn.name()
    return (
        name.startswith(("Addmm", "Mm"))
        and len(node.outputs) == 1
        and isinstance(node.outputs[0].module, nn.Linear)
    )


def unmappable(node: tp.Node, *, channels_last: bool = False) -> str | None:
    """Why torch-pruning cannot map channel indices through this op, or None if it can.
    `channels_last`: the op's input is a channels-last tensor (see `channels_last_regions`)."""
    fn = node.grad_fn
    if fn is None or not hasattr(fn, "name"):
        return None
    dims = _permute(node)
    if (_to_last(dims) and not channels_last) or (_to_first(dims) and channels_last):
        return None
    is_reshape = node.type == ops.OPTYPE.RESHAPE
    out = _out_shape(fn)
    if channels_last and _inside_linear(node):
        return None
    if channels_last and dims is None and out is not None:
        bad = [s for s in _in_shapes(fn) if not _last_dim_kept(s, out, fn.name())]
        return f"{fn.name()} {list(bad[0])} -> {list(out)} (channels-last)" if bad else None
    if out is None or len(out) < 2:
        return (
            f"{fn.name()} (output shape {list(out) if out else 'unknown'})" if is_reshape else None
        )
    if _moves_channels(fn, len(out)):
        return f"{fn.name()} moves the channel dimension"
    for shape in _in_shapes(fn):
        if not (_reshape_ok(shape, out) if is_reshape else _same_channels(shape, out, fn.name())):
            return f"{fn.name()} {list(shape)} -> {list(out)}"
    return None
