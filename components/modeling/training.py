"""The one training loop shared by teachers, baselines, distillation and pruning fine-tunes.

AdamW, a one-cycle or cosine schedule, small random shifts as augmentation, early stopping on
validation accuracy with the best weights restored, fixed seeds, CUDA when present.

Progress: a tqdm bar per fit on stderr (epoch k/N, train loss, val accuracy, seconds) when stderr
is a terminal; otherwise one INFO line per epoch on the `distillery.training` logger, so logs
forwarded to Prefect carry it. ``DISTILLERY_PROGRESS=1`` forces the bar, ``=0`` the log lines.
"""

from __future__ import annotations

import copy
import logging
import os
import random
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from components.config import TrainingConfig
from components.core.data import Split

# loss(model, x, y) -> scalar; x is the (augmented) batch on the training device
# loss(model, x, y, index): an augmented batch, its labels and its rows in the train split
# (a loss may look precomputed per-sample values up by them, as the KD teacher table does)
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

log = logging.getLogger("distillery.training")
PROGRESS_ENV = "DISTILLERY_PROGRESS"


@dataclass
class FitResult:
    best_epoch: int
    val_accuracy: float
    epochs_run: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def seconds_per_epoch(self) -> float:
        return self.seconds / max(self.epochs_run, 1)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("training.device is `cuda` but no CUDA device is available")
    return torch.device(name)


def shift_images(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, s: int) -> torch.Tensor:
    """Shift image n by (dy[n] - s, dx[n] - s) pixels, zero-filled: (N, C, H, W) -> same.

    Pad by s, then crop a per-sample window via gathered indices; dy, dx in [0, 2s].
    """
    if s <= 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (s, s, s, s)).permute(0, 2, 3, 1)  # (N, H+2s, W+2s, C)
    rows = dy[:, None] + torch.arange(h, device=x.device)[None, :]  # (N, H)
    cols = dx[:, None] + torch.arange(w, device=x.device)[None, :]  # (N, W)
    idx_n = torch.arange(n, device=x.device)[:, None, None]
    out = padded[idx_n, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image by an integer offset in [-max_shift, max_shift]^2, zero-filled."""
    if max_shift <= 0:
        return x
    n, s = len(x), max_shift
    dy = torch.randint(0, 2 * s + 1, (n,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * s + 1, (n,), generator=generator).to(x.device)
    return shift_images(x, dy, dx, s)


def show_progress_bar() -> bool:
    """True for a tqdm bar, False for log lines: ``DISTILLERY_PROGRESS`` (0|1), else whether
    stderr is a terminal."""
    value = os.environ.get(PROGRESS_ENV, "").strip()
    if value not in {"", "0", "1"}:
        raise ValueError(f"environment variable {PROGRESS_ENV}={value!r}: expected 0 (log "
                         "lines) or 1 (progress bar), or unset (bar when stderr is a terminal)")
    if value:
        return value == "1"
    return bool(getattr(sys.stderr, "isatty", None) and sys.stderr.isatty())


def cross_entropy_loss(label_smoothing: float = 0.0) -> LossFn:
    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor
             ) -> torch.Tensor:
        return F.cross_entropy(model(x), y, label_smoothing=label_smoothing)

    return loss


@torch.no_grad()
def predict_logits(model: nn.Module, x: np.ndarray | torch.Tensor, batch_size: int = 512,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """Logits (N, K) of ``model`` in eval mode, on CPU."""
    model.eval()
    xt = torch.as_tensor(x, dtype=torch.float32)
    outs = [model(xt[i : i + batch_size].to(device)).float().cpu()
            for i in range(0, len(xt), batch_size)]
    return torch.cat(outs) if outs else torch.empty(0)


def accuracy(model: nn.Module, split: Split, device: torch.device | str = "cpu") -> float:
    logits = predict_logits(model, split.x, device=device)
    return float((logits.argmax(1).numpy() == split.y).mean())


def evaluate_split(model: nn.Module, split: Split, device: torch.device | str = "cpu"
                   ) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of ``model`` on ``split``."""
    logits = predict_logits(model, split.x, device=device)
    y = torch.as_tensor(split.y)
    return float((logits.argmax(1) == y).float().mean()), float(F.cross_entropy(logits, y))


def fit(
    model: nn.Module,
    train: Split,
    val: Split,
    cfg: TrainingConfig,
    loss_fn: LossFn | None = None,
    extra_params: Iterable[nn.Parameter] = (),
    seed: int | None = None,
    desc: str = "train",
) -> FitResult:
    """Train ``model`` in place and restore its best-validation weights.

    ``loss_fn`` gets the model and an augmented batch; the default is cross-entropy on labels.
    ``extra_params`` are trained too (e.g. a hint projection owned by the loss).
    """
    seed = cfg.seed if seed is None else seed
    seed_everything(seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    model.to(device)
    loss_fn = loss_fn or cross_entropy_loss(cfg.label_smoothing)
    params = list(model.parameters()) + list(extra_params)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, -(-len(train) // cfg.batch_size))
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total)
    else:
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    gen = torch.Generator().manual_seed(seed)
    x_all = torch.as_tensor(train.x, dtype=torch.float32, device=device)
    y_all = torch.as_tensor(train.y, dtype=torch.long, device=device)

    # best = highest val accuracy, ties broken by lower val loss (small val sets saturate)
    best_key, best_acc, best_epoch, best_state, stale = (-1.0, 0.0), -1.0, 0, None, 0
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    use_bar = show_progress_bar()
    bar = tqdm(range(cfg.epochs), desc=desc, leave=False, file=sys.stderr, disable=not use_bar,
               unit="epoch")
    epoch = 0
    for epoch in bar:
        model.train()
        order = torch.randperm(len(train), generator=gen).to(device)
        total_loss = 0.0
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            if len(idx) < 2 and len(order) > 1:
                continue  # a batch of one breaks batch norm statistics
            xb = random_shift(x_all[idx], cfg.shift, gen)
            loss = loss_fn(model, xb, y_all[idx], idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step() if sched.last_epoch < total else None
            total_loss += loss.item() * len(idx)
        val_acc, val_loss = evaluate_split(model, val, device)
        history.append({"epoch": epoch, "train_loss": total_loss / len(train),
                        "val_accuracy": val_acc, "val_loss": val_loss,
                        "lr": opt.param_groups[0]["lr"]})
        elapsed = time.perf_counter() - start
        if use_bar:
            bar.set_postfix_str(f"epoch {epoch + 1}/{cfg.epochs} loss {total_loss / len(train):.4f}"
                                f" val_acc {val_acc:.4f} {elapsed:.1f}s")
        else:
            log.info("%s: epoch %d/%d train_loss %.4f val_accuracy %.4f val_loss %.4f %.1f s",
                     desc, epoch + 1, cfg.epochs, total_loss / len(train), val_acc, val_loss,
                     elapsed)
        if (val_acc, -val_loss) > best_key:
            best_key, best_acc, best_epoch, stale = (val_acc, -val_loss), val_acc, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    bar.close()
    seconds = time.perf_counter() - start
    if best_state is not None:
        model.load_state_dict(best_state)
    model.to("cpu").eval()
    return FitResult(best_epoch=best_epoch, val_accuracy=best_acc, epochs_run=epoch + 1,
                     seconds=seconds, history=history)
