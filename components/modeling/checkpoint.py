"""Self-describing checkpoints: `model.pt` (weights + architecture config) and `metadata.json`.

`model.pt` holds only plain containers and tensors, so it loads with
``torch.load(..., weights_only=True)``; the module is rebuilt from the config in the registry.
`metadata.json` records model.pt's sha256, and loading verifies it before unpickling anything:
a truncated, flipped or swapped weights file is refused, naming the file and both hashes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import TypeAdapter

from components.config import ArchConfig
from components.core.io import atomic_torch_save, atomic_write_json, read_json, sha256_file
from components.modeling.architectures import Classifier, build_model, count_params

FORMAT_VERSION = 1
_ARCH = TypeAdapter(ArchConfig)


@dataclass
class Checkpoint:
    model: Classifier
    arch: Any  # the validated architecture config
    in_shape: tuple[int, int, int]
    num_classes: int
    path: Path
    metadata: dict[str, Any]

    @property
    def sha256(self) -> str:
        return sha256_file(self.path)


def save_checkpoint(
    folder: str | Path,
    model: Classifier,
    arch: Any,
    in_shape: tuple[int, int, int],
    num_classes: int,
    metadata: dict[str, Any],
) -> Path:
    """Write `model.pt` and `metadata.json` into ``folder`` (each atomically); returns model.pt."""
    folder = Path(folder)
    payload = {
        "format_version": FORMAT_VERSION,
        "arch": arch.model_dump(),
        "in_shape": list(in_shape),
        "num_classes": int(num_classes),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    model_path = atomic_torch_save(payload, folder / "model.pt")
    meta = {
        "format_version": FORMAT_VERSION,
        "arch": arch.model_dump(),
        "in_shape": list(in_shape),
        "num_classes": int(num_classes),
        "params": count_params(model),
        **metadata,
        "sha256": sha256_file(model_path),  # last: what the file is, whatever the caller passed
    }
    atomic_write_json(folder / "metadata.json", meta)
    return model_path


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Rebuild the model from a `model.pt` (or the folder holding it) without unpickling code."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    meta_path = path.parent / "metadata.json"
    metadata = read_json(meta_path) if meta_path.exists() else {}
    verify_sha256(path, metadata.get("sha256"), meta_path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
        raise ValueError(f"{path}: not a readable weights-only checkpoint ({e})") from None
    for key in ("arch", "in_shape", "num_classes", "state_dict"):
        if key not in payload:
            raise ValueError(f"{path}: checkpoint lacks `{key}`")
    arch = _ARCH.validate_python(payload["arch"])
    in_shape = tuple(int(v) for v in payload["in_shape"])
    state = payload["state_dict"]
    mean = float(state.get("norm.mean", torch.tensor(0.0)))
    std = float(state.get("norm.std", torch.tensor(1.0)))
    model = build_model(arch, in_shape, int(payload["num_classes"]), mean, std)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"{path}: weights do not match the architecture spec: {e}") from None
    model.eval()
    return Checkpoint(model=model, arch=arch, in_shape=in_shape,  # type: ignore[arg-type]
                      num_classes=int(payload["num_classes"]), path=path, metadata=metadata)


def verify_sha256(path: Path, recorded: str | None, source: Path) -> None:
    """Refuse ``path`` when its content hash differs from the one ``source`` records."""
    if recorded is None:  # no metadata.json beside it (a bare weights file): nothing to check
        return
    actual = sha256_file(path)
    if actual != recorded:
        raise ValueError(f"{path}: sha256 {actual} differs from {recorded} recorded in {source} "
                         "(the weights were changed or corrupted after they were saved)")
