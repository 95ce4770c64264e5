"""Per device profile, the ONNX Runtime configuration a bundle runs fastest with, measured.

For each CPU profile (first provider ``CPUExecutionProvider``) `convert` times, on the profile's
batch of test images and interleaved (`components.core.timing`), one axis at a time:

1. the model file (the profile's ORT file, see `ort_target`, against ``model.onnx``) crossed with
   the graph optimisation level (``all``, ``extended``, ``basic``), at the profile's threads;
2. ``intra_op_num_threads`` (the profile's; when it is 0, also 1 and the core count);
3. ``session.intra_op.allow_spinning`` on and off (skipped at one thread, where no worker spins).

Each axis keeps the simplest candidate the fastest one is not measurably faster than (`choose`):
a difference inside the measured spread is no difference, and the default (the profile's ORT
file, level ``all``, the profile's threads, spinning on) wins ties. A configuration whose
outputs fail the caller's ``accept`` check (parity with the source) is never timed.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from components.core.timing import faster, interleaved, time_calls
from components.export.bundle_predict import open_session
from components.export.onnx_utils import save_ort

LEVELS = ("all", "extended", "basic")  # preference order: ORT's default first
CONFIG_KEYS = ("model_file", "graph_optimization_level", "intra_op_num_threads", "allow_spinning")
ROUNDS, RUNS, MIN_RUNS, WARMUP = 3, 20, 5, 2
BUDGET_MS = 100.0  # timed calls of one candidate, all rounds together (MIN_RUNS at the least)


def cpu_profiles(profiles: dict[str, Any]) -> dict[str, Any]:
    """The profiles measured on ONNX Runtime's CPU provider (others are left to `evaluate`)."""
    return {n: p for n, p in profiles.items() if p.providers[0] == "CPUExecutionProvider"}


def ort_target(profile: Any, host: str) -> tuple[str, str]:
    """(file name, `save_ort` target) of the ORT file ``profile`` runs.

    A profile standing for this host's x86 CPU gets the fully optimised file with NCHWc blocking
    (``model.<isa>.ort``; the blocking is this CPU's, 16 channels on AVX-512, so it is built
    only for the host's own ISA); any other (arm64, another x86) gets the portable ``model.ort``.
    """
    isa = profile.resolved_isa()
    if isa == host and isa.startswith("x86"):
        return f"model.{isa}.ort", "host"
    return "model.ort", "portable"


def build_ort_files(folder: Path, targets: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """Write ``folder/<file>`` from ``folder/model.onnx`` per ``{file: target}``.

    Returns ({file: target} of those written, {file: error} of those ORT could not convert).
    """
    built, errors = {}, {}
    for file, target in sorted(targets.items()):
        try:
            save_ort(folder / "model.onnx", folder / file, target)
            built[file] = target
        except Exception as e:  # noqa: BLE001 - recorded: a variant ORT cannot convert
            errors[file] = f"{type(e).__name__}: {e}"
    return built, errors


def choose(timings: dict[str, dict[str, Any]], preference: list[str]) -> str:
    """The first of ``preference`` (simplest first) that the fastest candidate does not beat.

    ``timings`` are `interleaved` results; a candidate ties with the fastest when `faster`
    cannot tell them apart, so the default (``preference[0]``) is kept unless something is
    faster than it by more than both spreads.
    """
    ranked = [n for n in preference if n in timings]
    best = min(ranked, key=lambda n: timings[n]["p50_ms"])
    return next(n for n in ranked if not faster(timings[best], timings[n]))


def config_name(config: dict[str, Any]) -> str:
    return (f"{config['model_file']}|{config['graph_optimization_level']}"
            f"|t{config['intra_op_num_threads']}|spin{int(config['allow_spinning'])}")


def thread_counts(threads: int, cores: int) -> list[int]:
    """The intra-op thread counts to try, the profile's first."""
    return list(dict.fromkeys([0, 1, cores])) if threads == 0 else [threads]


def host_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class _Tuner:
    """Times candidate configurations of one bundle for one profile, remembering every one."""

    def __init__(self, folder: Path, x: np.ndarray, accept: Callable[[Any], str | None],
                 verdicts: dict[str, str | None]):
        self.folder, self.x, self.accept = folder, x, accept
        self.verdicts = verdicts  # config name -> why rejected (None: accepted), shared
        self.candidates: list[dict[str, Any]] = []

    def measure(self, axis: str, configs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        sessions = {}
        for config in configs:
            name = config_name(config)
            session = None if self.verdicts.get(name) else open_session(self.folder, config)
            if name not in self.verdicts:
                self.verdicts[name] = self.accept(session)
            if self.verdicts[name]:
                self.candidates.append({**config, "axis": axis, "rejected": self.verdicts[name]})
                continue
            sessions[name] = session
        if not sessions:
            raise RuntimeError(f"{self.folder}: no runtime configuration matches the source")
        feed = {next(iter(sessions.values())).get_inputs()[0].name: self.x}
        calls = {n: (lambda s=s: s.run(None, feed)) for n, s in sessions.items()}
        probe = statistics.median(time_calls(next(iter(calls.values())), 3, warmup=1))
        runs = max(MIN_RUNS, min(RUNS, int(BUDGET_MS / (ROUNDS * max(probe, 1e-3)))))
        timings = interleaved(calls, rounds=ROUNDS, runs=runs, warmup=WARMUP)
        by_name = {config_name(c): c for c in configs}
        for name, t in timings.items():
            self.candidates.append({**by_name[name], "axis": axis, "runs": runs,
                                    **{k: t[k] for k in ("p50_ms", "spread_ms", "p95_ms")}})
        return timings

    def pick(self, axis: str, configs: Iterable[dict[str, Any]]) -> tuple[dict, dict]:
        """Measure ``configs`` (preference order) and return (chosen config, its timing)."""
        configs = list(configs)
        timings = self.measure(axis, configs)
        chosen = choose(timings, [config_name(c) for c in configs])
        return next(c for c in configs if config_name(c) == chosen), timings[chosen]


def tune_profile(folder: Path, profile: Any, ort_file: str | None, x: np.ndarray,
                 accept: Callable[[Any], str | None], cores: int | None = None,
                 verdicts: dict[str, str | None] | None = None) -> dict[str, Any]:
    """The measured runtime entry of ``profile`` for the bundle in ``folder``.

    ``x`` is the timed batch (profile.batch_size test images); ``accept(session)`` returns why a
    session's outputs are unacceptable, or None (``verdicts`` caches them by config name).
    Returns the chosen config (`CONFIG_KEYS`), its
    ``p50_ms``/``spread_ms``/``p95_ms`` and every measured or rejected candidate.
    """
    tuner = _Tuner(folder, x, accept, {} if verdicts is None else verdicts)
    files = [f for f in (ort_file, "model.onnx") if f]
    grid = [{"model_file": f, "graph_optimization_level": lv,
             "intra_op_num_threads": profile.threads, "allow_spinning": True}
            for f in files for lv in LEVELS]
    # simplest first: fewest departures from the default, then the level, then the file
    grid.sort(key=lambda c: ((c["model_file"] != files[0]) + (c["graph_optimization_level"]
                                                              != "all"),
                             LEVELS.index(c["graph_optimization_level"]),
                             files.index(c["model_file"])))
    config, timing = tuner.pick("file+level", grid)
    counts = thread_counts(profile.threads, cores or host_cores())
    if len(counts) > 1:
        config, timing = tuner.pick("threads", ({**config, "intra_op_num_threads": t}
                                                for t in counts))
    if config["intra_op_num_threads"] != 1:
        config, timing = tuner.pick("spinning", ({**config, "allow_spinning": s}
                                                 for s in (True, False)))
    return {**config, **{k: timing[k] for k in ("p50_ms", "spread_ms", "p95_ms")},
            "batch_size": profile.batch_size, "isa": profile.resolved_isa(),
            "candidates": tuner.candidates}


def tune_bundle(folder: Path, profiles: dict[str, Any], ort_files: dict[str, str],
                batch: Callable[[int], np.ndarray], accept: Callable[[Any], str | None],
                host: str) -> dict[str, dict[str, Any]]:
    """{profile: runtime entry} for every CPU profile; ``ort_files`` are the ORT files built,
    ``batch(n)`` the timed input of n test images."""
    runtime: dict[str, dict[str, Any]] = {}
    verdicts: dict[str, str | None] = {}
    for name, profile in cpu_profiles(profiles).items():
        file, _ = ort_target(profile, host)
        runtime[name] = tune_profile(folder, profile, file if file in ort_files else None,
                                     batch(profile.batch_size), accept, verdicts=verdicts)
    return runtime
