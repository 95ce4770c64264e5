"""Structured channel surgery for the registry's architectures.

A *group* is a set of channels that must be removed together: the layers that produce them
(conv filters / linear rows), their BatchNorms, layers that merely follow them (a depthwise conv)
and the layers that read them (conv in-channels, linear in-features). A pruned model is rebuilt
from a smaller config with ``build_model`` and loaded with the kept slices, so the result is a
plain model of the same architecture, never a patched module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from components.modeling.architectures import Classifier, build_model

_SLICED = ("weight", "bias", "running_mean", "running_var")


@dataclass
class Group:
    """Channels pruned together; ``field`` is the config entry holding their count."""

    name: str  # e.g. "channels[1]", "width", "blocks[0]" (the config path)
    field: tuple[str | int, ...]  # e.g. ("channels", 1)
    size: int
    producers: list[str]  # conv/linear whose output dim 0 is this group (scored by l1/l2)
    norms: list[str] = field(default_factory=list)  # BatchNorm right after each producer
    followers: list[str] = field(default_factory=list)  # depthwise conv + BN: dim 0 only
    consumers: list[tuple[str, int]] = field(default_factory=list)  # (layer, features/channel)


def _conv_bn_blocks(seq: nn.Sequential, prefix: str) -> list[str]:
    """Names of the conv-BN-ReLU blocks of ``seq`` in order (`<prefix>.<i>`)."""
    return [f"{prefix}.{i}" for i, m in enumerate(seq)
            if isinstance(m, nn.Sequential) and isinstance(m[0], nn.Conv2d)]


def _linears(seq: nn.Sequential, prefix: str) -> list[str]:
    return [f"{prefix}.{i}" for i, m in enumerate(seq) if isinstance(m, nn.Linear)]


def _mlp_groups(model: Classifier, cfg: Any) -> list[Group]:
    # features: Flatten, then (Linear, BatchNorm1d, ReLU[, Dropout]) per hidden layer
    idx = [i for i, m in enumerate(model.body.features) if isinstance(m, nn.Linear)]
    lin = [f"body.features.{i}" for i in idx] + ["body.classifier"]
    return [Group(f"hidden[{k}]", ("hidden", k), h, [lin[k]],
                  norms=[f"body.features.{idx[k] + 1}"], consumers=[(lin[k + 1], 1)])
            for k, h in enumerate(cfg.hidden)]


def _cnn_groups(model: Classifier, cfg: Any) -> list[Group]:
    blocks = _conv_bn_blocks(model.body.features, "body.features")
    heads = _linears(model.body.features, "body.features") + ["body.classifier"]
    groups = []
    for i, c in enumerate(cfg.channels):
        if i + 1 < len(blocks):
            consumer = (f"{blocks[i + 1]}.0", 1)
        else:  # flatten head: channel c is h*w consecutive features; GAP head: one feature
            consumer = (heads[0], model.get_submodule(heads[0]).in_features // c)
        groups.append(Group(f"channels[{i}]", ("channels", i), c, [f"{blocks[i]}.0"],
                            norms=[f"{blocks[i]}.1"], consumers=[consumer]))
    if cfg.hidden:
        groups.append(Group("hidden", ("hidden",), cfg.hidden, [heads[0]],
                            consumers=[(heads[1], 1)]))
    return groups


def _resnet_groups(model: Classifier, cfg: Any) -> list[Group]:
    blocks = [f"body.blocks.{i}" for i, m in enumerate(model.body.blocks)
              if not isinstance(m, nn.MaxPool2d)]
    # the residual stream: every block adds into it, so all its writers and readers move together
    width = Group("width", ("width",), cfg.width,
                  ["body.stem.0"] + [f"{b}.conv2" for b in blocks],
                  norms=["body.stem.1"] + [f"{b}.bn2" for b in blocks],
                  consumers=[(f"{b}.conv1", 1) for b in blocks] + [("body.classifier", 1)])
    inner = [Group(f"blocks[{i}]", ("blocks", i), n, [f"{b}.conv1"], norms=[f"{b}.bn1"],
                   consumers=[(f"{b}.conv2", 1)])
             for i, (b, n) in enumerate(zip(blocks, cfg.blocks, strict=True))]
    return [width, *inner]


def _dscnn_groups(model: Classifier, cfg: Any) -> list[Group]:
    # blocks: [stem, dw0, pw0, dw1, pw1, ...]; a depthwise conv carries its input's channels
    blocks = _conv_bn_blocks(model.body.features, "body.features")
    specs: list[tuple[str, tuple[str | int, ...], int]] = [("stem", ("stem",), cfg.stem)] + [
        (f"channels[{i}]", ("channels", i), c) for i, c in enumerate(cfg.channels)]
    groups = []
    for j, (name, fld, size) in enumerate(specs):
        producer = blocks[2 * j]  # stem, then each pointwise
        if j + 1 < len(specs):
            dw, pw = blocks[2 * j + 1], blocks[2 * j + 2]
            followers, consumers = [f"{dw}.0", f"{dw}.1"], [(f"{pw}.0", 1)]
        else:
            followers, consumers = [], [("body.classifier", 1)]
        groups.append(Group(name, fld, size, [f"{producer}.0"], norms=[f"{producer}.1"],
                            followers=followers, consumers=consumers))
    return groups


GROUPS: dict[str, Callable[[Classifier, Any], list[Group]]] = {
    "mlp": _mlp_groups,
    "cnn": _cnn_groups,
    "resnet": _resnet_groups,
    "dscnn": _dscnn_groups,
}


def prunable_groups(model: Classifier, cfg: Any) -> list[Group]:
    """The channel groups of ``model`` (built from ``cfg``), checked against its weights."""
    if cfg.arch not in GROUPS:
        raise ValueError(f"no channel surgery for architecture `{cfg.arch}`")
    groups = GROUPS[cfg.arch](model, cfg)
    for g in groups:
        for name in g.producers + g.norms + g.followers:
            n = model.get_submodule(name).weight.shape[0]
            if n != g.size:
                raise ValueError(f"{g.name}: `{name}` has {n} channels, config says {g.size}")
    return groups


def channels_to_remove(group: Group, ratio: float) -> int:
    """Channels a ``ratio`` removes from ``group`` (rounded); refuses to empty a layer."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"pruning ratio must be in [0, 1), got {ratio}")
    n = int(ratio * group.size + 0.5)
    if n >= group.size:
        raise ValueError(f"ratio {ratio:g} would remove all {group.size} channels of "
                         f"`{group.name}` ({group.producers[0]}); at least 1 must remain")
    return n


def max_ratio(groups: list[Group]) -> float:
    """Largest ratio that leaves at least one channel in every group."""
    return min((g.size - 0.5) / g.size for g in groups) - 1e-9


def candidate_ratios(groups: list[Group]) -> list[float]:
    """Sorted ratios at which some group loses one more channel (0 first, all below max_ratio).

    Model size only changes at these points, so a search over them is exact (rounding to a
    channel block, `round_width`, only merges some of them).
    """
    top = max_ratio(groups)
    # int(r * s + 0.5) steps from n - 1 to n at r = (n - 0.5) / s; nudge past float error
    points = {(n - 0.5) / g.size + 1e-9 for g in groups for n in range(1, g.size)}
    return [0.0] + sorted(r for r in points if r <= top)


def round_width(kept: int, size: int, round_to: int | None) -> int:
    """``kept`` of a layer's ``size`` channels, rounded to the runtime's channel block.

    ONNX Runtime's CPU kernels work in blocks of ``round_to`` channels (16 with AVX-512): a
    width between two multiples pays for the next one up. The result is the nearest of the
    multiples of the block in [block, size] and ``size`` itself (ties keep more); a layer of
    one block or less is left whole. ``None`` or 1: no rounding.
    """
    if not round_to or round_to == 1 or kept >= size:
        return min(kept, size)
    if size <= round_to:
        return size
    lower = max(round_to, kept // round_to * round_to)
    upper = min(size, lower + round_to)
    return upper if kept - lower >= upper - kept else lower


def kept_sizes(groups: list[Group], ratio: float, round_to: int | None = None
               ) -> dict[tuple[str | int, ...], int]:
    """Config field path -> channels kept, for ``ratio`` (widths rounded to ``round_to``)."""
    return {g.field: round_width(g.size - channels_to_remove(g, ratio), g.size, round_to)
            for g in groups}


def _expand(keep: torch.Tensor, per_channel: int) -> torch.Tensor:
    # channel c of a flattened (C, H, W) map is features c*hw ... c*hw + hw - 1
    return (keep[:, None] * per_channel + torch.arange(per_channel)[None, :]).reshape(-1)


def resize_config(cfg: Any, sizes: dict[tuple[str | int, ...], int]) -> Any:
    """A copy of ``cfg`` with the widths at the given field paths replaced (re-validated)."""
    data = cfg.model_dump()
    for path, n in sizes.items():
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = n
    return type(cfg).model_validate(data)


def apply_pruning(model: Classifier, cfg: Any, in_shape: tuple[int, int, int], num_classes: int,
                  groups: list[Group], scores: list[torch.Tensor], ratio: float,
                  round_to: int | None = None) -> tuple[Classifier, Any]:
    """Remove the ``ratio`` lowest-scoring channels of every group (kept widths rounded to
    ``round_to``, see `round_width`); rebuild and load the rest."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    sizes = kept_sizes(groups, ratio, round_to)
    for g, score in zip(groups, scores, strict=True):
        n_keep = sizes[g.field]
        # stable order: kept channels stay in their original order, so ratio 0 is the identity
        keep = torch.argsort(score, descending=True, stable=True)[:n_keep].sort().values
        for name in g.producers + g.norms + g.followers:
            for p in _SLICED:
                if f"{name}.{p}" in state:
                    state[f"{name}.{p}"] = state[f"{name}.{p}"].index_select(0, keep)
        for name, per_channel in g.consumers:
            w = state[f"{name}.weight"]
            state[f"{name}.weight"] = w.index_select(1, _expand(keep, per_channel))
    new_cfg = resize_config(cfg, sizes)
    new = build_model(new_cfg, in_shape, num_classes,
                      float(model.norm.mean), float(model.norm.std))
    new.load_state_dict(state)
    return new.eval(), new_cfg
