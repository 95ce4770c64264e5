"""The shipped input contract: 8-bit pixels in, preprocessing inside the ONNX graph.

Every bundle's graph takes ``image`` uint8 (batch, H, W, C), as a camera or a PNG gives it, and
starts with ``Cast -> Mul(scale) -> Transpose`` to the float (batch, C, H, W) in [0, 1] that the
model was trained on (normalisation by the training mean/std is already inside the exported
model). It returns ``logits`` (batch, K) as before (the ensemble: ``probabilities``), plus
``probabilities`` (Softmax) and ``label`` (int64 ArgMax), so that a generic ONNX server (the
MLflow onnx pyfunc) returns labels rather than raw logits.

``scale`` maps one 8-bit step to the prepared float: ingest divides the source's raw values by
``max_value``; an 8-bit picture of a dataset image spans 0..255, so ``scale`` is 1/255, except
for sources whose raw values are themselves 8-bit pixels (imagefolder, or ``max_value`` 255),
where it is ``1 / max_value`` (an ``ingest.max_value`` override included). Sources with another
raw range (digits: 0..16) keep that range as the documented *raw-source form*, which
`bundle_predict` maps to pixels on request (``--raw``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from components.export.bundle_predict import IMAGE_MODES, MAX_PIXELS
from components.export.onnx_utils import INPUT_NAME, save_onnx

FLOAT_INPUT = "image_float"  # the inner graph's former input: (batch, C, H, W) float32
PROBABILITIES, LABEL = "probabilities", "label"
EIGHT_BIT_SOURCES = ("imagefolder",)


def input_scale(manifest: dict[str, Any]) -> float:
    """Prepared float per 8-bit step for the dataset ``manifest`` describes (see module doc)."""
    max_value = float(manifest["max_value"])
    kind = (manifest.get("source") or {}).get("kind")
    return 1.0 / max_value if kind in EIGHT_BIT_SOURCES or max_value == 255.0 else 1.0 / 255.0


def input_contract(manifest: dict[str, Any]) -> dict[str, Any]:
    """The ``input`` section of a bundle's metadata.json for the dataset ``manifest``."""
    c, h, w = (int(d) for d in manifest["shape"])
    scale = input_scale(manifest)
    max_value = float(manifest["max_value"])
    raw = None
    if abs(scale * max_value - 1.0) > 1e-12:  # the raw values are not 8-bit pixels
        raw = {"max_value": max_value, "source": (manifest.get("source") or {}).get("kind"),
               "flag": "--raw",
               "note": f"raw source values 0..{max_value:g} (as the source stores them) are "
                       f"mapped to pixels as round(v / {max_value:g} * 255) before the model"}
    return {
        "name": INPUT_NAME, "dtype": "uint8", "layout": "NHWC" if c > 1 else "NHW[C]",
        "shape": ["batch", h, w, c], "height": h, "width": w, "channels": c,
        "color": "L" if c == 1 else "RGB", "scale": scale,
        # the Mul is folded into the normalisation where the graph opens with one
        "in_graph": ["Cast(float32)", f"Mul({scale:.9g})", "Transpose(NHWC->NCHW)"],
        "resize": {"size": [h, w], "downscale": "box", "upscale": "bilinear",
                   "where": "predict.py / distillery predict (Pillow), before the model"},
        "raw_source": raw,
        "accepts": "uint8 (N, H, W, C); predict.py also takes (N, H, W) for grey, PNG/JPEG "
                   "files of any size, float .npz in [0, 1] (the prepared form); images with "
                   "an alpha channel, 16-bit or CMYK images are refused",
        # Pillow mode of an image file -> the mode it is converted to for this model
        "image_modes": IMAGE_MODES[1 if c == 1 else 3],
        "max_pixels": MAX_PIXELS,  # larger images are refused before they are decoded
    }


def fold_scale(graph: Any, scale: float) -> bool:
    """Fold the pixel scale into the graph's own normalisation when it opens with
    ``Sub(image, mean) -> Div(std)`` (or ``Mul(1/std)``) on constants no other node reads:
    ``(p * s - mean) / std == (p - mean / s) / (std / s)``, one node fewer per call (about
    1.5 us of a 15 us model at 8x8). Returns whether it did; the graph is unchanged otherwise."""
    from onnx import numpy_helper

    inits = {t.name: t for t in graph.initializer}
    readers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    first = readers.get(FLOAT_INPUT, [])
    if len(first) != 1 or first[0].op_type != "Sub" or list(first[0].input)[0] != FLOAT_INPUT:
        return False
    sub = first[0]
    mean = sub.input[1]
    after = readers.get(sub.output[0], [])
    if len(after) != 1 or after[0].op_type not in ("Div", "Mul") \
            or list(after[0].input)[0] != sub.output[0]:
        return False
    norm, std = after[0], after[0].input[1]
    if mean not in inits or std not in inits or len(readers[mean]) != 1 \
            or len(readers[std]) != 1:
        return False
    for name, factor in ((mean, 1 / scale), (std, 1 / scale if norm.op_type == "Div" else scale)):
        value = numpy_helper.to_array(inits[name])
        inits[name].CopyFrom(numpy_helper.from_array((value * factor).astype(value.dtype), name))
    return True


def add_preprocessing(src: str | Path, dst: str | Path, in_shape: tuple[int, int, int],
                      scale: float) -> Path:
    """Write ``src`` (float (batch, C, H, W) ``image`` in) to ``dst`` taking uint8 NHWC pixels.

    Prepends ``Cast -> Mul(scale) -> Transpose(0, 3, 1, 2)`` (the Mul folded into the graph's
    normalisation where `fold_scale` can) and appends ``probabilities`` (Softmax of the first
    output, unless it already holds probabilities) and ``label``.
    """
    import onnx
    from onnx import TensorProto, helper

    proto = onnx.load(str(src))
    graph = proto.graph
    inputs = [i.name for i in graph.input if i.name not in {t.name for t in graph.initializer}]
    if inputs != [INPUT_NAME]:
        raise ValueError(f"{src}: expected the single input `{INPUT_NAME}`, found {inputs}")
    c, h, w = in_shape
    for node in graph.node:  # the inner graph now reads the preprocessed tensor
        for k, name in enumerate(node.input):
            if name == INPUT_NAME:
                node.input[k] = FLOAT_INPUT
    batch = graph.input[0].type.tensor_type.shape.dim[0]
    batch_dim = batch.dim_param or batch.dim_value or "batch"
    del graph.input[:]
    graph.input.append(helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8,
                                                     [batch_dim, h, w, c]))
    head = [helper.make_node("Cast", [INPUT_NAME], ["image_f32"], name="preprocess/cast",
                             to=TensorProto.FLOAT)]
    scaled = "image_f32"
    if not fold_scale(graph, float(scale)):  # else the normalisation's constants carry it
        graph.initializer.append(helper.make_tensor("preprocess_scale", TensorProto.FLOAT, [],
                                                    [float(scale)]))
        head.append(helper.make_node("Mul", ["image_f32", "preprocess_scale"], ["image_scaled"],
                                     name="preprocess/scale"))
        scaled = "image_scaled"
    head.append(helper.make_node("Transpose", [scaled], [FLOAT_INPUT], name="preprocess/nchw",
                                 perm=[0, 3, 1, 2]))
    for node in reversed(head):
        graph.node.insert(0, node)
    first = graph.output[0].name
    k = graph.output[0].type.tensor_type.shape.dim[1]
    classes = k.dim_value or k.dim_param or "classes"
    # The first output passes a Mul by one before the new consumers read it: in an int8 (QDQ)
    # graph ORT would otherwise give each consumer of the last DequantizeLinear its own copy,
    # and a Quantize feeding several of them no longer fuses into QGemm/QLinearConv with its
    # producer, so the graph's own outputs would change (by a quantisation step or so).
    for node in graph.node:
        node.output[:] = [f"{first}_inner" if o == first else o for o in node.output]
    graph.initializer.append(helper.make_tensor("postprocess_one", TensorProto.FLOAT, [], [1.0]))
    graph.node.append(helper.make_node("Mul", [f"{first}_inner", "postprocess_one"], [first],
                                       name="postprocess/fence"))
    if first != PROBABILITIES:
        graph.node.append(helper.make_node("Softmax", [first], [PROBABILITIES],
                                           name="postprocess/softmax", axis=1))
        graph.output.append(helper.make_tensor_value_info(PROBABILITIES, TensorProto.FLOAT,
                                                          [batch_dim, classes]))
    graph.node.append(helper.make_node("ArgMax", [first], [LABEL], name="postprocess/argmax",
                                       axis=1, keepdims=0))
    graph.output.append(helper.make_tensor_value_info(LABEL, TensorProto.INT64, [batch_dim]))
    onnx.checker.check_model(proto)
    proto = onnx.shape_inference.infer_shapes(proto, check_type=True)
    return save_onnx(proto, dst)
