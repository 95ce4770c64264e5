"""Classify images with a Distillery bundle: ``python predict.py IMAGE_OR_NPZ [...]``.

`convert` copies this file into every bundle as `predict.py`; it imports only onnxruntime, numpy
and Pillow, so a bundle runs without the Distillery repository. It reads `metadata.json` beside
the model: PNG/JPEG files are converted to grey (or RGB), resized to the model's H x W when
needed and multiplied by ``input_scale`` (1 / the dataset's max pixel value); an `.npz` holds
``x`` as (N, C, H, W), (N, H, W) or one image, integer pixels (scaled likewise) or floats
already in [0, 1]. Prints ``<input>\\t<label>`` per image.

``--profile NAME`` (default: the metadata's ``default_profile``) builds the session the way
`convert` measured fastest for that device profile: ``metadata["runtime"][NAME]`` names the model
file (which must lie inside the bundle folder), the graph optimisation level, the intra-op thread
count and whether idle intra-op threads spin.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def load_metadata(bundle: str | Path = HERE) -> dict:
    return json.loads((Path(bundle) / "metadata.json").read_text(encoding="utf-8"))


def load_image(path: Path, meta: dict) -> np.ndarray:
    """One image file as float32 (C, H, W), scaled the way the model was trained."""
    from PIL import Image

    c, h, w = meta["input"]["shape"][1:]
    with Image.open(path) as img:
        img = img.convert("L" if c == 1 else "RGB")
        if img.size != (w, h):
            img = img.resize((w, h), Image.BILINEAR)
        arr = np.asarray(img, dtype=np.float32)
    arr = arr[None] if c == 1 else arr.transpose(2, 0, 1)  # (H, W, C) -> (C, H, W)
    return arr * np.float32(meta["input"]["input_scale"])


def load_npz(path: Path, meta: dict) -> np.ndarray:
    """``x`` of an .npz as float32 (N, C, H, W)."""
    shape = tuple(meta["input"]["shape"][1:])
    with np.load(path, allow_pickle=False) as z:
        if "x" not in z.files:
            raise ValueError(f"{path}: no array `x` (has: {', '.join(z.files) or 'nothing'})")
        x = z["x"]
    scaled = x.astype(np.float32)
    if np.issubdtype(x.dtype, np.integer):
        scaled *= np.float32(meta["input"]["input_scale"])
    if scaled.shape == shape or scaled.ndim == 2:
        scaled = scaled.reshape((1, *shape))
    elif scaled.ndim == 3:
        scaled = scaled[:, None]  # (N, H, W), one channel
    if scaled.shape[1:] != shape:
        raise ValueError(f"{path}: x has shape {x.shape}, the model expects (N, {shape})")
    return scaled


def load_inputs(paths: list[Path], meta: dict) -> tuple[np.ndarray, list[str]]:
    """All inputs as one batch (N, C, H, W) and a name per sample."""
    arrays, names = [], []
    for p in map(Path, paths):
        if p.suffix.lower() == ".npz":
            x = load_npz(p, meta)
            arrays.append(x)
            names += [f"{p}[{i}]" for i in range(len(x))]
        else:
            arrays.append(load_image(p, meta)[None])
            names.append(str(p))
    return np.concatenate(arrays).astype(np.float32), names


LEVELS = {"all": "ORT_ENABLE_ALL", "extended": "ORT_ENABLE_EXTENDED", "basic": "ORT_ENABLE_BASIC"}
# What a bundle without a runtime section (format 1) or without CPU profiles runs with.
FALLBACK = {"graph_optimization_level": "all", "intra_op_num_threads": 1, "allow_spinning": True}


def runtime_entry(meta: dict, profile: str | None = None) -> dict:
    """The session config of ``profile`` (default: ``default_profile``) from ``meta``."""
    runtime = meta.get("runtime") or {}
    name = profile or meta.get("default_profile")
    if name is None:
        return {"model_file": meta["model_file"], **FALLBACK}
    if name not in runtime:
        raise ValueError(f"profile `{name}` is not in this bundle's metadata.json "
                         f"(has: {', '.join(sorted(runtime)) or 'none'})")
    return runtime[name]


def resolve_model_file(bundle: str | Path, name: str) -> Path:
    """``bundle / name``, refused unless it resolves (links followed) inside ``bundle``."""
    root = Path(bundle).resolve()
    path = (root / name).resolve()
    if not path.is_relative_to(root):
        raise ValueError(f"model_file `{name}` escapes the bundle folder {root}; refusing it")
    if not path.is_file():
        raise FileNotFoundError(f"model_file `{name}` is not a file in {root}")
    return path


def session_options(entry: dict):
    """SessionOptions holding ``entry``'s level, intra-op threads and spinning; sequential."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel,
                                          LEVELS[entry["graph_optimization_level"]])
    so.intra_op_num_threads = int(entry["intra_op_num_threads"])
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.add_session_config_entry("session.intra_op.allow_spinning",
                                "1" if entry["allow_spinning"] else "0")
    so.log_severity_level = 3
    return so


def open_session(bundle: str | Path, entry: dict):
    """A CPU InferenceSession of ``entry["model_file"]`` in ``bundle`` with ``entry``'s options."""
    import onnxruntime as ort

    path = resolve_model_file(bundle, entry["model_file"])
    return ort.InferenceSession(str(path), sess_options=session_options(entry),
                                providers=["CPUExecutionProvider"])


def predict(bundle: str | Path, paths: list[Path],
            profile: str | None = None) -> list[tuple[str, str]]:
    """(input name, class name) for every image in ``paths``, run as ``profile`` configures."""
    bundle = Path(bundle)
    meta = load_metadata(bundle)
    session = open_session(bundle, runtime_entry(meta, profile))
    x, names = load_inputs(paths, meta)
    scores = session.run(None, {meta["input"]["name"]: x})[0]
    classes = meta["classes"]
    return [(n, str(classes[int(k)])) for n, k in zip(names, scores.argmax(1), strict=True)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="+", type=Path, help="PNG/JPEG images or .npz files")
    parser.add_argument("--bundle", type=Path, default=HERE, help="bundle folder (default: here)")
    parser.add_argument("--profile", default=None,
                        help="device profile of metadata.json's `runtime` (default: its "
                             "`default_profile`)")
    args = parser.parse_args(argv)
    for name, label in predict(args.bundle, args.inputs, args.profile):
        print(f"{name}\t{label}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
