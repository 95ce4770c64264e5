"""What every variant maker gets and gives back."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.config import QuantizeConfig
from components.core.data import Dataset


@dataclass
class VariantContext:
    """The exported fp32 graph and what a variant may need to make and check itself."""

    cfg: QuantizeConfig
    fp32: Path
    prepared: Dataset
    fp32_val_accuracy: float
    work: Path  # scratch folder, removed after the stage

    def preprocessed(self) -> Path:
        """fp32 with constants folded and shapes inferred, for the quantizers (made once)."""
        from onnxruntime.quantization import quant_pre_process

        pre = self.work / "fp32-pre.onnx"
        if not pre.exists():
            quant_pre_process(str(self.fp32), str(pre))
        return pre


@dataclass
class VariantResult:
    """``path`` is None when the variant was not written; ``report`` joins the stage metrics."""

    path: Path | None
    report: dict[str, Any] = field(default_factory=dict)
