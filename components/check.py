"""`check`: the pipeline's first stage, so an invalid `params.yaml` fails before DVC removes
any other stage's outputs.

DVC deletes a stage's outputs (cached or not) just before it runs the stage; a stage whose own
config check then fails leaves them gone. `check` depends on the whole params file and on the
config code, and every other stage depends on its one output, so `dvc repro` runs it first:
the runner validates the whole file before calling `run`, and a bad key stops the chain here.

Its output is the same bytes for every valid params file: a param change re-runs `check`, but
its unchanged output re-runs nothing downstream (only the stages that track that param do).
"""

from __future__ import annotations

from components.config import Params
from components.core.io import atomic_write_json
from components.core.stage import StageIO, StageResult


def params_sections() -> list[str]:
    """Every section `params.yaml` may have (by its YAML name), whichever the file uses."""
    return sorted(field.alias or name for name, field in Params.model_fields.items())


def run(cfg: Params, io: StageIO) -> StageResult:
    """The `check` stage: ``cfg`` is already validated (by the runner); record that it is."""
    summary = {"params_valid": True, "sections": params_sections()}
    atomic_write_json(io.out("check"), summary)
    return StageResult(metrics={"params_valid": 1}, params={})
