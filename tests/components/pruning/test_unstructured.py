"""`components.pruning.unstructured`: zeroed weights, measured sparsity, masks kept in fine-tune."""

from __future__ import annotations

import pytest
import torch

from components.modeling.architectures import count_params
from components.pruning.unstructured import measure_sparsity, prune_unstructured
from tests.helpers_pruning import CONFIGS, K, batch, make


def test_unstructured_pruning_reports_measured_sparsity_and_keeps_masks_during_finetune():
    cfg, x = CONFIGS["cnn_gap"], batch()[0]
    model = make(cfg)

    def finetune(m):  # moves every weight; masked ones must stay zero
        with torch.no_grad():
            for p in m.parameters():
                p.add_(1.0)

    sparse, measured = prune_unstructured(model, 0.6, finetune)
    assert measured == pytest.approx(0.6, abs=0.005) and measured == measure_sparsity(sparse)
    assert measure_sparsity(model) == 0.0  # the input model is untouched
    assert sparse(x).shape == (6, K) and count_params(sparse) == count_params(model)
    assert all(not n.endswith(("_orig", "_mask")) for n in sparse.state_dict())
