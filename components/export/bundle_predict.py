"""Classify images with a Distillery bundle: ``python predict.py IMAGE_OR_NPZ [...]``.

`convert` copies this file into every bundle as `predict.py`; it imports only onnxruntime, numpy
and Pillow, so a bundle runs without the Distillery repository. It reads `metadata.json` beside
the model: PNG/JPEG files are converted to grey (or RGB), resized to the model's H x W when
needed and multiplied by ``input_scale`` (1 / the dataset's max pixel value); an `.npz` holds
``x`` as (N, C, H, W), (N, H, W) or one image, integer pixels (scaled likewise) or floats
already in [0, 1]. Prints ``<input>\\t<label>`` per image.
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


def predict(bundle: str | Path, paths: list[Path]) -> list[tuple[str, str]]:
    """(input name, class name) for every image in ``paths``."""
    import onnxruntime as ort

    bundle = Path(bundle)
    meta = load_metadata(bundle)
    x, names = load_inputs(paths, meta)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    session = ort.InferenceSession(str(bundle / meta["model_file"]), sess_options=so,
                                   providers=["CPUExecutionProvider"])
    scores = session.run(None, {meta["input"]["name"]: x})[0]
    classes = meta["classes"]
    return [(n, str(classes[int(k)])) for n, k in zip(names, scores.argmax(1), strict=True)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="+", type=Path, help="PNG/JPEG images or .npz files")
    parser.add_argument("--bundle", type=Path, default=HERE, help="bundle folder (default: here)")
    args = parser.parse_args(argv)
    for name, label in predict(args.bundle, args.inputs):
        print(f"{name}\t{label}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
