"""Dependency analysis shared by the inventory and the pruner.

torch-pruning's DependencyGraph traces a model and couples every layer whose channels must shrink
together (residual adds, depthwise convs, concatenations, the first linear after a flatten). This
module wraps it so that models it cannot fully map never crash or get silently mis-pruned, and
partitions a model into channel groups named after their first conv/linear layer.

Call order: `analyse(model, example_input)` -> `Analysis` (the graph, the groups in module order,
the layers left alone and why). The pruner then asks the graph for a pruning group per `GroupInfo`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn
from torch_pruning import ops

ROOT_TYPES = (nn.Conv2d, nn.Linear)

# the types torch-pruning gives its own graph nodes for tensor ops (they carry no channel count of
# their own; ELEMENTWISE is also its type for any module it does not know, which has none either)
_OP_TYPES = frozenset(
    {
        ops.OPTYPE.ELEMENTWISE,
        ops.OPTYPE.CONCAT,
        ops.OPTYPE.SPLIT,
        ops.OPTYPE.RESHAPE,
        ops.OPTYPE.UNBIND,
        ops.OPTYPE.EXPAND,
        ops.OPTYPE.SLICE,
        ops.OPTYPE.OUTPUT,
    }
)


class SafeDependencyGraph(tp.DependencyGraph):
    """A DependencyGraph that checks, after tracing, every reshape and element-wise op against the
    tensor shapes it really saw. An op that moves or resizes the channel dimension in a way
    torch-pruning cannot index-map (anything but a no-op or an (N, C, H, W) -> (N, C*H*W) flatten;
    e.g. the view/transpose/view of a channel shuffle, pixel shuffle) becomes *opaque*: it is kept
    out of the index mapping and `opaque[node]` says why. Groups that reach an opaque node must not
    be pruned. Shapes come from autograd's per-node metadata (`grad_fn._input_metadata`); where it
    is missing, every reshape counts as opaque.

    Channels-last regions are mapped as torch-pruning maps them (channel indices pass a permute
    unchanged): a permute of (N, C, H, W) to (N, H, W, C), ops on the channel-last tensor that keep
    the last dimension (LayerNorm, Linear, element-wise ops, (N, H, W, C) -> (N*H*W, C) views) and
    the permute back (ConvNeXt's blocks). A region that reaches a conv or batch norm, or reshapes
    the last dimension, keeps its permute opaque."""

    def __init__(self) -> None:
        super().__init__()
        self.opaque: dict[tp.Node, str] = {}

    def _trace(self, model, example_inputs, forward_fn, output_transform):  # type: ignore[override]
        module2node = super()._trace(model, example_inputs, forward_fn, output_transform)
        last, broken = _channels_last_regions(module2node.values())
        for node in module2node.values():
            if node.type in (ops.OPTYPE.ELEMENTWISE, ops.OPTYPE.RESHAPE):
                reason = broken.get(node) or _unmappable(node, channels_last=node in last)
                if reason is not None or node in last:
                    # keeps update_reshape_index_mapping away: channels-last views map channels 1:1
                    node.type = ops.OPTYPE.ELEMENTWISE
                if reason is not None:
                    self.opaque[node] = reason
        return module2node


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


def _channels_last_regions(nodes) -> tuple[set[tp.Node], dict[tp.Node, str]]:
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


def _unmappable(node: tp.Node, *, channels_last: bool = False) -> str | None:
    """Why torch-pruning cannot map channel indices through this op, or None if it can.
    `channels_last`: the op's input is a channels-last tensor (see `_channels_last_regions`)."""
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


@dataclass
class GroupInfo:
    """One set of channels that must be pruned together, rooted at its first conv/linear layer
    (in `model.named_modules()` order). `problem` is None for a prunable group."""

    name: str
    root: nn.Module
    channels: int
    divisor: int  # kept channels must be a multiple of this (grouped convolutions)
    kind: str
    layers: tuple[str, ...]  # every named layer the group touches (outputs or inputs)
    out_layers: tuple[str, ...]  # conv/linear layers whose outputs it removes
    full_group: tp.Group
    problem: str | None = None


@dataclass
class Analysis:
    """The traced graph of one model and its partition into channel groups."""

    graph: SafeDependencyGraph
    groups: list[GroupInfo]
    skipped: list[tuple[str, str]]

    @property
    def prunable(self) -> list[GroupInfo]:
        return [g for g in self.groups if g.problem is None]


def build_graph(model: nn.Module, example_input: torch.Tensor) -> SafeDependencyGraph:
    """Trace `model` (its train/eval mode and requires_grad flags are restored afterwards)."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(True)
        with torch.enable_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # a tuple: given a bare tensor, torch-pruning first tries model(*tensor), i.e. an
            # unbatched forward of the batch's first sample, and keeps that trace when it runs
            return SafeDependencyGraph().build_dependency(model, (example_input,), verbose=False)
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


def analyse(model: nn.Module, example_input: torch.Tensor) -> Analysis:
    """Partition `model` into channel groups. A conv/linear layer is left alone (listed in
    `skipped` with the reason) when its outputs are the model's output (the classifier), when its
    group reaches an op that cannot be index-mapped, when it has a single output channel, or when
    the traced forward pass never reaches it. If tracing itself fails, every layer is skipped."""
    names = {m: n for n, m in model.named_modules()}
    modules = {n: m for m, n in names.items()}
    try:
        graph = build_graph(model, example_input)
    except Exception as exc:  # noqa: BLE001 - any tracer failure means: nothing prunable
        reason = f"dependency tracing failed ({type(exc).__name__}: {_first_line(exc)})"
        return Analysis(
            SafeDependencyGraph(),
            [],
            [(n, reason) for m, n in names.items() if isinstance(m, ROOT_TYPES)],
        )
    groups: list[GroupInfo] = []
    skipped: list[tuple[str, str]] = []
    visited: set[nn.Module] = set()
    tied = tied_layers(model)
    for module, name in names.items():
        if not isinstance(module, ROOT_TYPES) or module in visited:
            continue
        if module not in graph.module2node:
            skipped.append((name, "not reached by the traced forward pass"))
            continue
        info = _group_info(graph, module, names)
        info.problem = info.problem or _tied_problem(info, tied)
        visited.update(modules[layer] for layer in info.out_layers)
        if info.problem is not None:
            skipped.extend((layer, info.problem) for layer in info.out_layers)
        groups.append(info)
    return Analysis(graph, groups, skipped)


def tied_layers(model: nn.Module) -> dict[str, str]:
    """Layers that share a parameter object with another module (tied weights), each mapped to one
    layer it shares with. Pruning or quantizing one of them would replace its tensor (untie it)."""
    owner: dict[int, str] = {}
    tied: dict[str, str] = {}
    for name, module in model.named_modules():
        for p in module.parameters(recurse=False):
            other = owner.setdefault(id(p), name)
            if other != name:
                tied.setdefault(name, other)
                tied.setdefault(other, name)
    return tied


def _tied_problem(info: GroupInfo, tied: dict[str, str]) -> str | None:
    """Why a group touching a tied layer is left alone (its pruning would untie the weights)."""
    layer = next((n for n in info.layers if n in tied), None)
    if layer is None:
        return None
    return f"{layer} shares its weights with {tied[layer]} (tied): pruning would untie them"


def _group_info(
    graph: SafeDependencyGraph, root: nn.Module, names: dict[nn.Module, str]
) -> GroupInfo:
    pruner = graph.get_pruner_of_module(root)
    channels = pruner.get_out_channels(root)
    try:
        group = graph.get_pruning_group(root, pruner.prune_out_channels, list(range(channels)))
    except Exception as exc:  # noqa: BLE001 - an index mapping torch-pruning cannot follow
        kind = "linear" if isinstance(root, nn.Linear) else "conv"
        problem = f"torch-pruning cannot build its group ({type(exc).__name__}: {_first_line(exc)})"
        return GroupInfo(
            names[root],
            root,
            channels,
            1,
            kind,
            (names[root],),
            (names[root],),
            tp.Group(),
            problem,
        )
    touched, outs, divisor, depthwise = [], [], 1, False
    for dep, _ in group:
        module, is_out = dep.target.module, graph.is_out_channel_pruning_fn(dep.handler)
        if module in names and names[module] not in touched:
            touched.append(names[module])
        if isinstance(module, ROOT_TYPES) and is_out and names.get(module) not in outs:
            outs.append(names[module])
        if isinstance(module, nn.Conv2d) and module.groups > 1:
            if ops.module2type(module) == ops.OPTYPE.DEPTHWISE_CONV:
                depthwise = True
            else:
                divisor = math.lcm(divisor, module.groups)
    order = {n: i for i, n in enumerate(names.values())}
    touched.sort(key=order.__getitem__)
    outs.sort(key=order.__getitem__)
    if depthwise:
        kind = "depthwise-coupled"
    elif divisor > 1:
        kind = "grouped"
    elif len(outs) > 1:
        kind = "residual"
    else:
        kind = "linear" if isinstance(root, nn.Linear) else "conv"
    info = GroupInfo(names[root], root, channels, divisor, kind, tuple(touched), tuple(outs), group)
    info.problem = _problem(graph, group, channels, divisor)
    return info


def _problem(
    graph: SafeDependencyGraph, group: tp.Group, channels: int, divisor: int
) -> str | None:
    """Why this group must be left alone, or None."""
    for dep, _ in group:
        node = dep.target
        keeps_width = isinstance(node.module, ROOT_TYPES) and not graph.is_out_channel_pruning_fn(
            dep.handler
        )
        if not node.outputs and not keeps_width:
            return "produces the model output"
    for dep, _ in group:
        if dep.target in graph.opaque:
            return f"coupled through an op torch-pruning cannot map: {graph.opaque[dep.target]}"
    for dep, idxs in group:
        limit = _width(graph, dep)
        if limit is not None and idxs and max(idxs) >= limit:
            return f"channel index mapping out of range at {dep.target.name}"
    if channels <= divisor:
        return (
            "has a single output channel"
            if divisor == 1
            else f"has one channel per convolution group ({channels} channels, {divisor} groups)"
        )
    return None


def _width(graph: SafeDependencyGraph, dep: tp.Dependency) -> int | None:
    pruner = graph.get_pruner_of_module(dep.target.module)
    if pruner is None or ops.module2type(dep.target.module) in _OP_TYPES:
        return None
    if isinstance(dep.target.module, nn.Parameter):  # its pruning dim lives on the node
        return dep.target.module.shape[dep.target.pruning_dim]
    if graph.is_out_channel_pruning_fn(dep.handler):
        return pruner.get_out_channels(dep.target.module)
    return pruner.get_in_channels(dep.target.module)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else "no message"
