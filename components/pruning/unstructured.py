"""Unstructured global magnitude pruning: zero the smallest weights across all conv/linear layers.

The model keeps its dense shape: zeros are stored and multiplied like any other weight, so
dense runtimes (PyTorch, ONNX Runtime CPU) gain no speed and the file no size from it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from torch import nn
from torch.nn.utils import prune as torch_prune

from components.modeling.architectures import Classifier
from components.pruning.latency import LatencyProbe
from components.pruning.search import Evaluate, Finetune, Proposal, PruneResult, run_steps

DENSE_NOTE = ("unstructured sparsity: weights are zeroed but stored dense; dense runtimes "
              "(PyTorch, ONNX Runtime CPU) gain no speed and the file no size from it")


def _weights(model: nn.Module) -> list[tuple[nn.Module, str]]:
    return [(m, "weight") for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def measure_sparsity(model: nn.Module) -> float:
    """Share of exactly-zero weights over all Conv2d/Linear weight tensors."""
    ws = [m.weight.detach() for m, _ in _weights(model)]
    total = sum(w.numel() for w in ws)
    return float(sum(int((w == 0).sum()) for w in ws) / total) if total else 0.0


def prune_unstructured(model: Classifier, sparsity: float,
                       finetune: Callable[[nn.Module], None] | None = None
                       ) -> tuple[Classifier, float]:
    """Zero the globally smallest-|w| ``sparsity`` share of conv/linear weights (on a copy).

    ``finetune`` runs with the masks in place, so pruned weights stay zero while the rest adapt.
    Returns the model (masks made permanent) and its measured sparsity.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    pruned = copy.deepcopy(model)
    targets = _weights(pruned)
    torch_prune.global_unstructured(targets, pruning_method=torch_prune.L1Unstructured,
                                    amount=sparsity)
    if finetune is not None:
        finetune(pruned)
    for module, name in targets:
        torch_prune.remove(module, name)
    return pruned.eval(), measure_sparsity(pruned)


def search_sparsity(model: Classifier, arch: Any, in_shape: tuple[int, int, int], *,
                    evaluate: Evaluate, sparsity: float, steps: int = 1,
                    finetune: Finetune | None = None, max_accuracy_drop: float = 0.01,
                    seeds: int = 1, evaluate_test: Evaluate | None = None,
                    latency: LatencyProbe | None = None) -> PruneResult:
    """Raise sparsity to ``sparsity`` in ``steps`` equal steps; keep the sparsest that
    `select_step` accepts (each step's fine-tune repeated over ``seeds``)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")

    def step(current: Classifier, cur_arch: Any, k: int) -> Proposal:
        goal = sparsity * k / steps

        # already-zero weights are the smallest, so `goal` of ALL weights is the cumulative share
        def tune(seed: int) -> Classifier:
            seeded = None if finetune is None else (lambda m: finetune(m, seed))
            return prune_unstructured(current, goal, seeded)[0]

        return Proposal(tune, cur_arch, goal, goal)

    return run_steps(model, arch, in_shape, steps, step, evaluate, max_drop=max_accuracy_drop,
                     target="weights", reduction=lambda m, _t: measure_sparsity(m), seeds=seeds,
                     evaluate_test=evaluate_test, latency=latency)
