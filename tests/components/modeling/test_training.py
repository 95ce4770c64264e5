import io
import logging
import sys

import numpy as np
import pytest
import torch

from components.config import CNNConfig, TrainingConfig
from components.modeling.architectures import build_model
from components.modeling.training import (
    PROGRESS_ENV,
    accuracy,
    fit,
    random_shift,
    shift_images,
    show_progress_bar,
)


def test_random_shift_moves_pixels_by_at_most_the_limit():
    x = torch.zeros(64, 1, 5, 5)
    x[:, :, 2, 2] = 1.0
    out = random_shift(x, 1, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    pos = out[:, 0].flatten(1).argmax(1)
    rows, cols = pos // 5, pos % 5
    assert set(rows.tolist()) <= {1, 2, 3} and set(cols.tolist()) <= {1, 2, 3}
    assert len(set(zip(rows.tolist(), cols.tolist(), strict=True))) > 1  # it does shift
    assert torch.equal(out.sum((1, 2, 3)), x.sum((1, 2, 3)))  # nothing falls off at shift 1


def test_shift_images_matches_the_fit_loops_random_shift():
    x = torch.rand(6, 1, 8, 8)
    expected = random_shift(x, 2, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    dy, dx = torch.randint(0, 5, (6,), generator=g), torch.randint(0, 5, (6,), generator=g)
    assert torch.equal(shift_images(x, dy, dx, 2), expected)


def test_fit_lowers_the_loss_and_restores_the_best_epoch(tiny_dataset):
    ds = tiny_dataset
    model = build_model(CNNConfig(channels=[4, 8]), ds.in_shape, ds.num_classes, ds.mean, ds.std)
    cfg = TrainingConfig(epochs=8, batch_size=16, lr=0.01, patience=8, shift=0)
    result = fit(model, ds.train, ds.val, cfg)
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0]
    assert result.val_accuracy == max(h["val_accuracy"] for h in result.history)
    assert accuracy(model, ds.val) == result.val_accuracy  # best weights are back in the model
    assert result.val_accuracy > 0.9


def test_fit_is_deterministic_for_a_seed(tiny_dataset):
    ds = tiny_dataset
    outs = []
    for _ in range(2):
        torch.manual_seed(3)
        model = build_model(CNNConfig(channels=[4]), ds.in_shape, ds.num_classes)
        fit(model, ds.train, ds.val, TrainingConfig(epochs=2, batch_size=16, seed=3))
        outs.append(torch.cat([p.flatten() for p in model.parameters()]))
    assert torch.equal(outs[0], outs[1])


def test_fit_early_stops_when_validation_stalls(tiny_dataset):
    ds = tiny_dataset
    model = build_model(CNNConfig(channels=[4]), ds.in_shape, ds.num_classes)
    result = fit(model, ds.train, ds.val, TrainingConfig(epochs=50, patience=2, lr=0.05))
    assert result.epochs_run < 50
    assert np.isfinite(result.seconds)


def _tiny_fit(ds, desc="teacher-x"):
    model = build_model(CNNConfig(channels=[4]), ds.in_shape, ds.num_classes)
    return fit(model, ds.train, ds.val, TrainingConfig(epochs=2, batch_size=16, patience=5),
               desc=desc)


def test_fit_draws_a_progress_bar_per_epoch_on_stderr_when_forced(tiny_dataset, capsys, caplog,
                                                                   monkeypatch):
    monkeypatch.setenv(PROGRESS_ENV, "1")
    caplog.set_level(logging.INFO, logger="distillery.training")
    _tiny_fit(tiny_dataset)
    err = capsys.readouterr().err
    assert "teacher-x" in err
    assert "epoch 1/2" in err and "epoch 2/2" in err
    assert "loss " in err and "val_acc " in err
    assert not [r for r in caplog.records if r.name == "distillery.training"]  # bar, not logs


def test_fit_logs_one_info_line_per_epoch_when_stderr_is_not_a_terminal(tiny_dataset, capsys,
                                                                        caplog, monkeypatch):
    monkeypatch.delenv(PROGRESS_ENV, raising=False)  # pytest's captured stderr is no TTY
    caplog.set_level(logging.INFO, logger="distillery.training")
    result = _tiny_fit(tiny_dataset, desc="distill")
    err = capsys.readouterr().err  # no bar (log handlers other tests set up may echo lines)
    assert "\r" not in err and "it/s" not in err and "s/it" not in err
    lines = [r.getMessage() for r in caplog.records if r.name == "distillery.training"]
    assert len(lines) == result.epochs_run == 2
    assert lines[0].startswith("distill: epoch 1/2 train_loss ")
    assert lines[1].startswith("distill: epoch 2/2 train_loss ")
    assert all("val_accuracy " in line and line.endswith(" s") for line in lines)
    assert all(r.levelno == logging.INFO for r in caplog.records if r.name == "distillery.training")


def test_progress_env_forces_log_lines_and_rejects_other_values(monkeypatch):
    monkeypatch.setenv(PROGRESS_ENV, "0")
    assert show_progress_bar() is False
    monkeypatch.setenv(PROGRESS_ENV, "yes")
    with pytest.raises(ValueError, match="DISTILLERY_PROGRESS='yes'"):
        show_progress_bar()


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_fit_draws_the_bar_by_itself_when_stderr_is_a_terminal(tiny_dataset, caplog,
                                                               monkeypatch):
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    caplog.set_level(logging.INFO, logger="distillery.training")
    _tiny_fit(tiny_dataset)
    assert "epoch 2/2" in terminal.getvalue()
    assert not [r for r in caplog.records if r.name == "distillery.training"]
