"""`convert`: turn every quantized variant, each teacher and the teacher ensemble into bundles.

A bundle (`<out_dir>/<name>/`) runs without this repository: `model.onnx`, `model.ort` (ORT
format, portable: basic optimisations, for minimal/mobile builds and arm64 profiles) and
`model.<isa>.ort` (fully optimised with this x86 host's NCHWc blocking, for the profiles that
stand for it) where conversion succeeds, `predict.py` (onnxruntime, numpy and Pillow only) and
`metadata.json` (input contract, classes, normalisation, opset, sha256 of every file, lineage,
and per CPU profile the measured fastest runtime configuration, `runtime`). Every bundled graph
takes 8-bit pixels, ``image`` uint8 (batch, H, W, C), with cast, scaling and the NCHW transpose
prepended inside it, and returns ``logits``, ``probabilities`` and ``label``
(`components.export.preprocessing`); the references it is checked against are the source
models on the same pixels (the prepared test split rounded to 8 bits). The ensemble
outputs the mean of the teachers' softmax probabilities (as `components.ensemble` scores it),
not logits: probabilities of different teachers share a scale, logits need not. Each bundle is
re-loaded from disk and checked against its source (outputs within tolerance, same accuracy, and
the same labels through `predict.py`, per profile) before the stage succeeds.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from components.config import ConvertConfig, DeviceProfile, Params
from components.core.data import Dataset, Split, load_prepared
from components.core.host import host_isa
from components.core.io import (
    atomic_dir,
    atomic_save_npz,
    atomic_write_json,
    read_json,
    sha256_file,
)
from components.core.stage import StageIO, StageResult
from components.export import bundle_predict
from components.export.bundle_predict import nchw_to_pixels
from components.export.onnx_utils import (
    ParityError,
    check_parity,
    compare_outputs,
    export_onnx,
    make_session,
    run_session,
    torch_outputs,
)
from components.export.preprocessing import add_preprocessing, input_contract, input_scale
from components.export.runtime import (
    CONFIG_KEYS,
    build_ort_files,
    cpu_profiles,
    ort_target,
    tune_bundle,
)
from components.modeling.checkpoint import load_checkpoint
from components.modeling.teachers import load_teachers, teacher_dirs

BUNDLE_FORMAT = 3  # 2: per-profile `runtime`, `default_profile`, `ort_files`; 3: uint8 input


class AveragedSoftmax(nn.Module):
    """Mean of the members' softmax probabilities: (N, C, H, W) -> (N, K), rows sum to one."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x).softmax(1) for m in self.members]).mean(0)


def _opset(path: Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def pixel_splits(split: Split, scale: float) -> tuple[Split, Split]:
    """``split`` as a bundle takes it, uint8 pixels (N, H, W, C), and as the float
    (N, C, H, W) those pixels stand for (what the graph's Cast and Mul compute): the sources
    are judged on the latter, so that rounding to 8 bits is no parity difference."""
    pixels = nchw_to_pixels(split.x, scale, "prepared test split")
    x = (pixels.astype(np.float32) * np.float32(scale)).transpose(0, 3, 1, 2)
    return (Split(pixels, split.y, split.ids),
            Split(np.ascontiguousarray(x), split.y, split.ids))


def write_bundle(folder: Path, onnx_src: Path, prepared: Dataset, cfg: ConvertConfig,
                 info: dict[str, Any], reference: np.ndarray | None = None,
                 profiles: dict[str, DeviceProfile] | None = None,
                 default_profile: str | None = None) -> dict[str, Any]:
    """Fill ``folder`` with the model (``onnx_src``, float NCHW in, given the 8-bit input of
    `add_preprocessing`), its ORT forms, predict.py and metadata.json.

    With ``profiles`` and the source's outputs ``reference`` on the test split's pixels
    (`pixel_splits`), every CPU profile's fastest runtime configuration is measured
    (`components.export.runtime`) into ``runtime``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    scale = input_scale(prepared.manifest)
    add_preprocessing(onnx_src, folder / "model.onnx", prepared.in_shape, scale)
    host = host_isa()
    cpu = cpu_profiles(profiles or {})
    targets = {"model.ort": "portable"} | dict(ort_target(p, host) for p in cpu.values())
    ort_files, ort_errors = build_ort_files(folder, targets) if cfg.ort_format else ({}, {})
    shutil.copyfile(bundle_predict.__file__, folder / "predict.py")
    runtime = {}
    if cpu and reference is not None:
        pixels, _ = pixel_splits(prepared.test, scale)
        runtime = tune_bundle(folder, cpu, ort_files, lambda n: _batch(pixels, n),
                              _accept(reference, pixels, cfg), host)
    outputs = [o.name for o in make_session(folder / "model.onnx").get_outputs()]
    meta = {
        "format_version": BUNDLE_FORMAT,
        "model_file": "model.onnx",
        "ort_file": "model.ort" if "model.ort" in ort_files else None,
        "ort_error": ort_errors.get("model.ort"),
        "ort_files": {f: host if t == "host" else t for f, t in ort_files.items()},
        "ort_errors": ort_errors,
        "input": input_contract(prepared.manifest),
        "output": {"name": outputs[0], "shape": ["batch", prepared.num_classes],
                   "kind": info.pop("output_kind")},
        "outputs": outputs,  # logits (or the ensemble's probabilities), probabilities, label
        "normalization": {"mean": prepared.mean, "std": prepared.std, "in_graph": True},
        "classes": list(prepared.manifest["classes"]),
        "opset": _opset(folder / "model.onnx"),
        "runtime": runtime,
        "default_profile": (default_profile if default_profile in runtime
                            else next(iter(runtime), None)),
        "files": {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file()},
        **info,
    }
    atomic_write_json(folder / "metadata.json", meta)
    for p in folder.iterdir():
        p.chmod(0o644)  # temporary files are created 0600; a bundle is meant to be shipped
    folder.chmod(0o755)
    return meta


def _batch(pixels: Split, n: int) -> np.ndarray:
    """``n`` test images (repeated when the split is smaller), contiguous uint8 (n, H, W, C)."""
    x = pixels.x
    return np.ascontiguousarray(x[np.arange(n) % len(x)])


def _accept(reference: np.ndarray, pixels: Split, cfg: ConvertConfig):
    """Why a session's outputs on the test ``pixels`` fail the parity gates against
    ``reference``, or None."""

    def accept(session: Any) -> str | None:
        got = run_session(session, pixels.x)
        report = compare_outputs(reference, got, pixels.ids)
        if not report["max_abs_diff"] <= cfg.parity_max_abs_diff:
            return f"max |diff| {report['max_abs_diff']:.3g} > {cfg.parity_max_abs_diff:g}"
        if report["top1_agreement"] < cfg.parity_min_top1_agreement:
            return f"top-1 agreement {report['top1_agreement']:.4f}"
        if (got.argmax(1) == pixels.y).mean() != (reference.argmax(1) == pixels.y).mean():
            return "test accuracy differs from the source"
        return None

    return accept


def _file_key(name: str) -> str:
    """Metrics prefix of a file: model.onnx -> onnx, model.x86-avx512.ort -> ort_x86_avx512."""
    *middle, suffix = name.split(".")[1:]
    return "_".join([suffix, *middle]).replace("-", "_")


def verify_bundle(folder: Path, reference: np.ndarray, prepared: Dataset,
                  cfg: ConvertConfig) -> dict[str, Any]:
    """Re-load every model file of ``folder`` and compare it with ``reference`` (the source's
    outputs on the test split's pixels, `pixel_splits`).

    Raises :class:`ParityError` on a mismatch or a different test accuracy; also runs the
    bundle's own predict path on the test split (the prepared floats, as a user's .npz), once
    per runtime profile, and requires the source's labels; the graph's ``label`` output must
    be the top-1 of its first output.
    """
    meta = read_json(folder / "metadata.json")
    for name, digest in meta["files"].items():
        if sha256_file(folder / name) != digest:
            raise ParityError(f"{folder / name}: sha256 differs from metadata.json", {})
    test, _ = pixel_splits(prepared.test, float(meta["input"]["scale"]))
    ref_acc = float((reference.argmax(1) == test.y).mean())
    out: dict[str, Any] = {"test_accuracy": ref_acc,
                           "size_bytes": (folder / "model.onnx").stat().st_size}
    for file in [meta["model_file"], *meta.get("ort_files", {})]:
        parity = check_parity(reference, folder / file, test, cfg.parity_max_abs_diff,
                              cfg.parity_min_top1_agreement)
        session = make_session(folder / file)
        scores, labels = session.run([meta["outputs"][0], "label"], {meta["input"]["name"]:
                                                                     test.x})
        if not np.array_equal(labels, scores.argmax(1)):
            raise ParityError(f"{folder / file}: output `label` is not the top-1 of "
                              f"`{meta['outputs'][0]}`", parity)
        acc = float((labels == test.y).mean())
        if acc != ref_acc:
            raise ParityError(f"{folder / file}: test accuracy {acc:.4f} != source {ref_acc:.4f}",
                              parity)
        out[f"{_file_key(file)}_max_abs_diff"] = parity["max_abs_diff"]
        if file != meta["model_file"]:
            out[f"{_file_key(file)}_size_bytes"] = (folder / file).stat().st_size
    expected = [str(meta["classes"][k]) for k in reference.argmax(1)]
    with tempfile.TemporaryDirectory(prefix="convert.") as tmp:
        npz = atomic_save_npz(Path(tmp) / "test.npz", x=prepared.test.x)
        for profile in list(meta.get("runtime") or {}) or [None]:
            labels = [label for _, label in bundle_predict.predict(folder, [npz], profile)]
            if labels != expected:
                bad = [str(test.ids[i]) for i, (a, b) in enumerate(zip(labels, expected,
                                                                      strict=True)) if a != b]
                raise ParityError(f"{folder}/predict.py --profile {profile}: labels differ "
                                  f"from the source on {bad[:5]}", {})
    out["runtime"] = {p: {k: e[k] for k in CONFIG_KEYS}
                      for p, e in (meta.get("runtime") or {}).items()}
    return out


def convert_stage(cfg: ConvertConfig, quantized_dir: Path, teacher_dirs: dict[str, Path],
                  prepared: Dataset, out_dir: Path, metrics_path: Path,
                  references: dict[str, Path] | None = None,
                  profiles: dict[str, DeviceProfile] | None = None,
                  default_profile: str | None = None) -> dict[str, Any]:
    """Write one verified bundle per variant (and teacher, ensemble); return the metrics.

    ``references`` are further checkpoints bundled in fp32 as evaluation baselines, e.g.
    ``{"student": models/student}`` (the distilled student before pruning). Each bundle's
    runtime configuration is measured for every CPU profile of ``profiles``;
    ``default_profile`` (when among them) is the one `predict.py` uses without ``--profile``.
    """
    report = read_json(quantized_dir / "report.json")
    lineage = {"data_hash": prepared.manifest.get("data_hash"),
               "source_checkpoint_sha256": report["source"]["sha256"],
               "quantize_report_sha256": sha256_file(quantized_dir / "report.json")}
    metrics: dict[str, Any] = {"bundles": {}, "skipped": {}}
    metrics["skipped"].update(report.get("variants_dropped", {}))  # with quantize's reasons
    # the sources are judged on what the bundles see: the test split rounded to 8-bit pixels
    _, seen = pixel_splits(prepared.test, input_scale(prepared.manifest))
    with atomic_dir(out_dir) as tmp, tempfile.TemporaryDirectory(prefix="convert.") as w:
        sources: dict[str, tuple[Path, np.ndarray, dict]] = {}
        for variant in report["variants"]:
            src = quantized_dir / f"{variant}.onnx"
            ref = run_session(make_session(src), seen.x)
            sources[variant] = (src, ref, {
                "kind": "student", "variant": variant, "output_kind": "logits",
                "lineage": {**lineage, "source_onnx_sha256": sha256_file(src)}})
        exports = []
        for name, folder in (references or {}).items():
            ckpt = load_checkpoint(folder)
            exports.append((name, ckpt.model, "logits", name,
                            {"source_checkpoint_sha256": ckpt.sha256,
                             "data_hash": lineage["data_hash"]}))
        if cfg.include_teachers and teacher_dirs:
            teachers = load_teachers(teacher_dirs, prepared)
            exports += [(f"teacher-{n}", c.model, "logits", "teacher",
                         {"checkpoint_sha256": c.sha256, "data_hash": lineage["data_hash"]})
                        for n, c in teachers.items()]
            exports.append(("ensemble", AveragedSoftmax([c.model for c in teachers.values()]),
                            "probabilities", "ensemble",
                            {"members": {n: c.sha256 for n, c in teachers.items()},
                             "data_hash": lineage["data_hash"]}))
        for name, model, output, kind, lin in exports:
            src = export_onnx(model, prepared.in_shape, Path(w) / f"{name}.onnx", cfg.opset,
                              output_name=output)
            ref = torch_outputs(model, seen.x)
            check_parity(ref, src, seen, cfg.parity_max_abs_diff,
                         cfg.parity_min_top1_agreement)
            sources[name] = (src, ref, {"kind": kind, "output_kind": output, "lineage": lin})
        for name, (src, ref, info) in sources.items():
            write_bundle(tmp / name, src, prepared, cfg, info, ref, profiles, default_profile)
            metrics["bundles"][name] = verify_bundle(tmp / name, ref, prepared, cfg)
    atomic_write_json(metrics_path, metrics)
    return metrics


def predict_bundle(bundle_dir: Path, inputs: list[Path], profile: str | None = None,
                   raw: bool = False, max_pixels: int = bundle_predict.MAX_PIXELS) -> list[str]:
    """Class name for every image (PNG/JPEG, any size: resized) or .npz sample in ``inputs``,
    via the bundle, its session built as ``profile`` (default: the bundle's default profile)
    configures. Inputs are 8-bit pixels (0..255) or prepared floats in [0, 1]; ``raw``: the
    source's own raw values instead (metadata ``input.raw_source``, digits: 0..16). NaN/inf
    samples, unreadable files and images over ``max_pixels`` raise ValueError naming the file
    and sample."""
    return [label for _, label in bundle_predict.predict(bundle_dir, list(inputs), profile,
                                                         raw, max_pixels)]


def run(cfg: Params, io: StageIO) -> StageResult:
    """The `convert` stage: a verified bundle per variant, teacher and the ensemble."""
    metrics = convert_stage(cfg.convert, io.dep("quantized"), teacher_dirs(cfg, io),
                            load_prepared(io.dep("prepared")), io.out("bundles"), io.metrics,
                            references={"student": io.dep("student")},
                            profiles=cfg.evaluate.profiles,
                            default_profile=cfg.register_.policy.primary_profile)
    return StageResult(metrics=metrics, params=cfg.convert.model_dump())
