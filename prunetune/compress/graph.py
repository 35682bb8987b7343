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

from prunetune.compress.mappable import channels_last_regions, unmappable

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
        last, broken = channels_last_regions(module2node.values())
        for node in module2node.values():
            if node.type in (ops.OPTYPE.ELEMENTWISE, ops.OPTYPE.RESHAPE):
                reason = broken.get(node) or unmappable(node, channels_last=node in last)
                if reason is not None or node in last:
                    # keeps update_reshape_index_mapping away: channels-last views map channels 1:1
                    node.type = ops.OPTYPE.ELEMENTWISE
                if reason is not None:
                    self.opaque[node] = reason
        return module2node


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
