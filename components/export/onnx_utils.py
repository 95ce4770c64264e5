"""ONNX helpers shared by `quantize` and `convert`: export, deterministic sessions, parity, fp16.

Exported and quantized graphs take ``image`` (batch, C, H, W) float32 in [0, 1] and return
``logits`` (batch, K) (the ensemble: ``probabilities``); normalisation is inside the graph.
`convert` then prepends the 8-bit input (`components.export.preprocessing`) for the bundles.
onnx and onnxruntime are imported inside the functions that need them, so importing this module
stays cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from components.core.data import Split
from components.core.io import atomic_write_bytes

INPUT_NAME = "image"
OUTPUT_NAME = "logits"


class ParityError(RuntimeError):
    """An exported graph disagrees with its source model; the message names the worst samples."""

    def __init__(self, message: str, report: dict[str, Any]):
        super().__init__(message)
        self.report = report


def export_onnx(model: nn.Module, in_shape: tuple[int, int, int], path: str | Path,
                opset: int = 17, output_name: str = OUTPUT_NAME) -> Path:
    """Export ``model`` (eval mode) with a dynamic batch axis, check it, write it atomically.

    The TorchScript exporter (``dynamo=False``) is used: ~0.05 s per model against ~4 s for the
    dynamo exporter, and the small CNNs of the registry need nothing it lacks.
    """
    import io

    import onnx

    model = model.eval().cpu()
    dummy = torch.zeros(2, *in_shape, dtype=torch.float32)
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(
            model, (dummy,), buf, dynamo=False, opset_version=opset,
            input_names=[INPUT_NAME], output_names=[output_name],
            dynamic_axes={INPUT_NAME: {0: "batch"}, output_name: {0: "batch"}},
        )
    proto = onnx.load_from_string(buf.getvalue())
    onnx.checker.check_model(proto, full_check=True)
    proto = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    return save_onnx(proto, path)


def save_onnx(proto: Any, path: str | Path) -> Path:
    """Serialise an in-memory ModelProto (< 2 GB) to ``path`` atomically."""
    return atomic_write_bytes(path, proto.SerializeToString())


def make_session(model: str | Path | bytes, threads: int = 1,
                 level: str = "all") -> Any:
    """A CPU InferenceSession with fixed threading, so runs are repeatable and comparable."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    so.log_severity_level = 3
    src = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(src, sess_options=so, providers=["CPUExecutionProvider"])


def save_ort(src: str | Path, dst: str | Path, target: str = "portable") -> Path:
    """Convert an ONNX file to ORT format, as onnxruntime.tools.convert_onnx_models_to_ort does.

    ``target="portable"``: basic (platform-independent) optimisations only, ONNX ops that any
    build and CPU can run; a full build applies the rest when it loads the file (the tool's
    "Runtime" style without the saved records). ``target="host"``: every optimisation at level
    "all" including the NCHWc layout transformer (the tool's ``--target_platform amd64``), so
    the file carries this host's x86 channel blocking and runs only on such a CPU. Written to a
    temporary name, renamed.
    """
    import os
    import tempfile

    import onnxruntime as ort

    level = {"portable": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
             "host": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[target]
    dst = Path(dst)
    so = ort.SessionOptions()
    so.graph_optimization_level = level
    so.log_severity_level = 3
    so.add_session_config_entry("session.save_model_format", "ORT")
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".ort", dir=dst.parent)
    os.close(fd)
    try:
        so.optimized_model_filepath = tmp
        ort.InferenceSession(str(src), sess_options=so, providers=["CPUExecutionProvider"])
        os.replace(tmp, dst)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return dst


INPUT_DTYPES = {"tensor(float)": np.float32, "tensor(uint8)": np.uint8}


def run_session(session: Any, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """First output of ``session`` on ``x``, batched; float32 (N, K).

    ``x`` is what the graph takes: float (N, C, H, W) for exported and quantized graphs,
    uint8 pixels (N, H, W, C) for a bundle's graph (`components.export.preprocessing`).
    """
    inp = session.get_inputs()[0]
    name, dtype = inp.name, INPUT_DTYPES.get(inp.type, np.float32)
    outs = [session.run(None, {name: np.ascontiguousarray(x[i : i + batch_size],
                                                          dtype=dtype)})[0]
            for i in range(0, len(x), batch_size)]
    return np.concatenate(outs).astype(np.float32) if outs else np.empty((0, 0), np.float32)


def onnx_accuracy(session: Any, split: Split) -> float:
    return float((run_session(session, split.x).argmax(1) == split.y).mean())


def torch_outputs(model: nn.Module, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Outputs (N, K) of a torch model in eval mode, float32 numpy."""
    model.eval()
    with torch.no_grad():
        outs = [model(torch.as_tensor(x[i : i + batch_size])).float().numpy()
                for i in range(0, len(x), batch_size)]
    return np.concatenate(outs) if outs else np.empty((0, 0), np.float32)


def compare_outputs(reference: np.ndarray, candidate: np.ndarray, ids: np.ndarray,
                    top_k: int = 5) -> dict[str, Any]:
    """Max |difference|, top-1 agreement and the ``top_k`` worst samples as (id, max diff)."""
    if reference.shape != candidate.shape:
        raise ParityError(f"output shape {candidate.shape} != reference {reference.shape}", {})
    diff = np.abs(reference.astype(np.float64) - candidate.astype(np.float64)).max(axis=1)
    diff = np.nan_to_num(diff, nan=np.inf)
    order = np.argsort(-diff, kind="stable")[:top_k]
    return {
        "max_abs_diff": float(diff.max()) if len(diff) else 0.0,
        "top1_agreement": float((reference.argmax(1) == candidate.argmax(1)).mean())
        if len(diff) else 1.0,
        "worst": [(str(ids[i]), float(diff[i])) for i in order],
        "samples": int(len(diff)),
    }


def check_parity(reference: nn.Module | np.ndarray, onnx_path: str | Path, split: Split,
                 max_abs_diff: float | None = 1e-4,
                 min_top1_agreement: float | None = 1.0) -> dict[str, Any]:
    """Compare the ONNX graph at ``onnx_path`` with ``reference`` over the whole ``split``.

    ``reference`` is the source torch model or its precomputed outputs (N, K). Returns
    ``{max_abs_diff, top1_agreement, worst: [(sample id, diff), ...], samples}``; raises
    :class:`ParityError` naming the worst samples when a threshold given is not met
    (``None`` disables that gate, e.g. for int8 graphs that are judged on accuracy instead).
    """
    ref = reference if isinstance(reference, np.ndarray) else torch_outputs(reference, split.x)
    got = run_session(make_session(onnx_path), split.x)
    report = compare_outputs(ref, got, split.ids)
    failures = []
    if max_abs_diff is not None and not report["max_abs_diff"] <= max_abs_diff:
        failures.append(f"max |diff| {report['max_abs_diff']:.3g} > {max_abs_diff:g}")
    if min_top1_agreement is not None and report["top1_agreement"] < min_top1_agreement:
        failures.append(f"top-1 agreement {report['top1_agreement']:.4f} < {min_top1_agreement:g}")
    if failures:
        worst = ", ".join(f"{sid} ({d:.3g})" for sid, d in report["worst"])
        raise ParityError(f"{Path(onnx_path).name}: parity failed over {report['samples']} "
                          f"samples: {'; '.join(failures)}; worst samples: {worst}", report)
    return report


def convert_fp16(src: str | Path, dst: str | Path) -> Path:
    """Store weights and activations as float16, keeping float32 ``image`` in and output out.

    Uses onnxruntime.transformers.float16 (shipped with onnxruntime); ``keep_io_types`` puts a
    Cast at the graph input and output so callers feed and read float32 as for every variant.
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    proto = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    _sort_topologically(proto.graph)  # the converter appends its input Casts after their users
    onnx.checker.check_model(proto)
    return save_onnx(proto, dst)


def _sort_topologically(graph: Any) -> None:
    """Reorder ``graph.node`` in place so that every node follows the producers of its inputs."""
    known = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in known for i in n.input)]
        if not ready:
            raise ValueError("graph has a cycle or an input that nothing produces")
        for n in ready:
            ordered.append(n)
            known.update(n.output)
        pending = [n for n in pending if all(n is not r for r in ready)]
    copies = [type(n)() for n in ordered]
    for c, n in zip(copies, ordered, strict=True):
        c.CopyFrom(n)
    del graph.node[:]
    graph.node.extend(copies)


def rank_sensitive_nodes(float_path: str | Path, qdq_path: str | Path,
                         x: np.ndarray) -> list[tuple[str, float]]:
    """Quantized nodes of ``qdq_path`` ranked by the error they add, most harmful first.

    Both graphs run on ``x`` with every float activation exposed as an output. For tensor T the
    error is the mean over channels (axis 1) of ||q(T)_c - T_c|| / ||T_c||, q(T) being the value
    the int8 graph passes on (after its Quantize/Dequantize pair when it has one): per channel,
    so that one wide-range channel cannot hide the small channels that per-tensor scales crush.
    A node's score is its output's error minus the largest error among its inputs, i.e. the
    error it adds rather than the error it inherits.
    """
    import onnx

    fp = onnx.shape_inference.infer_shapes(onnx.load(str(float_path)))
    qp = onnx.load(str(qdq_path))
    floats = {v.name for v in list(fp.graph.value_info) + list(fp.graph.output)
              if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    q_of = {n.input[0]: n.output[0] for n in qp.graph.node if n.op_type == "QuantizeLinear"}
    dq_of = {n.input[0]: n.output[0] for n in qp.graph.node if n.op_type == "DequantizeLinear"}
    # the quantizer fuses e.g. Conv+Relu, so match nodes by name and tensors by the float name
    float_names = {n.name for n in fp.graph.node}
    nodes = [n for n in qp.graph.node if n.name in float_names and n.output
             and n.output[0] in floats and any(i in dq_of.values() for i in n.input)]
    seen = {n.output[0]: dq_of.get(q_of.get(n.output[0], ""), n.output[0]) for n in nodes}
    float_name = {dq: t for t, dq in seen.items()} | {
        dq_of[q]: t for t, q in q_of.items() if q in dq_of and t in floats}
    f_vals = _run_exposed(fp, list(seen), x)
    q_vals = _run_exposed(qp, list(seen.values()), x)
    err = {t: _channel_error(f_vals[t], q_vals[s]) for t, s in seen.items()}
    scores = []
    for node in nodes:
        inherited = max((err.get(float_name.get(i, i), 0.0) for i in node.input), default=0.0)
        scores.append((node.name, err[node.output[0]] - inherited))
    return sorted(scores, key=lambda s: -s[1])


def _channel_error(ref: np.ndarray, got: np.ndarray) -> float:
    """Mean over channels (axis 1) of the relative L2 error; all-zero channels are left out."""
    if ref.ndim < 2:
        ref, got = ref[:, None], got[:, None]
    r = np.moveaxis(ref, 1, 0).reshape(ref.shape[1], -1)
    d = np.moveaxis(got - ref, 1, 0).reshape(ref.shape[1], -1)
    norms = np.linalg.norm(r, axis=1)
    live = norms > 1e-12 * max(float(norms.max()), 1e-30)
    return float((np.linalg.norm(d, axis=1)[live] / norms[live]).mean()) if live.any() else 0.0


def _run_exposed(proto: Any, names: list[str], x: np.ndarray) -> dict[str, np.ndarray]:
    """Run a copy of ``proto`` with ``names`` added as outputs; name -> array on ``x``."""
    import onnx

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    have = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None)
                              for n in names if n not in have)
    session = make_session(model.SerializeToString())
    out_names = [o.name for o in session.get_outputs()]
    values = session.run(None, {session.get_inputs()[0].name: x.astype(np.float32)})
    return {n: v.astype(np.float64) for n, v in zip(out_names, values, strict=True) if n in names}
