"""Classify images with a Distillery bundle: ``python predict.py IMAGE_OR_NPZ [...]``.

`convert` copies this file into every bundle as `predict.py`; it imports only onnxruntime, numpy
and Pillow, so a bundle runs without the Distillery repository. The model takes 8-bit pixels,
``image`` uint8 (N, H, W, C); casting, scaling and normalisation are inside the graph, and
`metadata.json`'s ``input`` records the contract (H, W, C, scale, the raw-source form). Here:

- PNG/JPEG files are read as grey "L" (or "RGB"), resized to the model's H x W when needed
  (box filter when shrinking, bilinear when enlarging) and fed as they are. Pillow modes
  (`IMAGE_MODES`): a grey model takes L as is and converts 1, P and RGB to L by Pillow's luma
  rule (L = 0.299 R + 0.587 G + 0.114 B, what the imagefolder source does at ingest); an RGB
  model takes RGB as is and converts 1, L and P to RGB (grey copied to R = G = B). Images with
  an alpha channel (LA, RGBA, PA, P with transparency), 16/32-bit (I;16, I, F) and other modes
  (CMYK, YCbCr, ...) are refused naming the file and mode: flatten or convert them first;
- an image over `MAX_PIXELS` (width x height; ``--max-pixels``) is refused from its header,
  before any pixel is decoded, so a 20000 x 20000 PNG cannot exhaust memory;
- an `.npz` holds ``x``: uint8 pixels (N, H, W), (N, H, W, C) or one image; other integers
  must lie in 0..255; floats are the prepared form in [0, 1] (N, C, H, W) or (N, H, W[, C]),
  rounded to the nearest pixel value;
- ``--raw``: the inputs hold the source's own raw values (``input.raw_source``, e.g. 0..16 for
  scikit-learn's digits), mapped to pixels as ``round(v / max_value * 255)``.

NaN or inf samples, unreadable files (not an image, not an .npz, missing) are refused with an
error naming the file (and sample). Paths may hold spaces. Prints ``<input>\\t<label>`` per image.

``--profile NAME`` (default: the metadata's ``default_profile``) builds the session the way
`convert` measured fastest for that device profile: ``metadata["runtime"][NAME]`` names the model
file (which must lie inside the bundle folder), the graph optimisation level, the intra-op thread
count and whether idle intra-op threads spin.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
# Largest image (width x height) decoded: 8000 x 8000, 64 MP (192 MB as RGB) - a phone photo
# fits, a decompression bomb does not. Below Pillow's own warning threshold (about 89 MP).
MAX_PIXELS = 64_000_000
# Pillow mode of an image file -> what it becomes, per model channel count (module doc).
IMAGE_MODES = {1: {"L": "L", "1": "L", "P": "L", "RGB": "L"},
               3: {"RGB": "RGB", "1": "RGB", "L": "RGB", "P": "RGB"}}


def load_metadata(bundle: str | Path = HERE) -> dict:
    return json.loads((Path(bundle) / "metadata.json").read_text(encoding="utf-8"))


def _contract(meta: dict, where: str) -> dict:
    spec = meta["input"]
    if spec.get("dtype") != "uint8":
        raise ValueError(f"{where}: this bundle's model takes {spec.get('dtype')} input "
                         f"(bundle format {meta.get('format_version')}); re-run `convert` for "
                         "one that takes uint8 pixels")
    return spec


def _refuse_non_finite(x: np.ndarray, where: str) -> None:
    bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{where}: sample {i} (x[{i}]) holds NaN or inf ({int(bad.sum())} "
                         "such samples); the model takes finite pixel values")


def to_pixels(x: np.ndarray, scale: float, where: str = "x") -> np.ndarray:
    """Prepared floats ``x`` (values / ``scale`` are pixels) as uint8, same layout.

    Refuses NaN/inf and values outside 0..255 (after rounding), naming ``where`` and the sample.
    """
    x = np.asarray(x)
    _refuse_non_finite(x, where)
    v = np.rint(x.astype(np.float64) / scale)
    out = (v < 0) | (v > 255)
    if out.any():
        i = int(np.flatnonzero(out.reshape(len(v), -1).any(axis=1))[0])
        raise ValueError(f"{where}: sample {i} (x[{i}]) has values outside the pixel range "
                         f"(min {float(x[i].min()):g}, max {float(x[i].max()):g}; "
                         f"expected 0..{255 * scale:g})")
    return v.astype(np.uint8)


def nchw_to_pixels(x: np.ndarray, scale: float, where: str = "x") -> np.ndarray:
    """Prepared (N, C, H, W) floats as the model's uint8 (N, H, W, C) input."""
    return np.ascontiguousarray(to_pixels(x, scale, where).transpose(0, 2, 3, 1))


def _from_raw(x: np.ndarray, spec: dict, where: str) -> np.ndarray:
    """Raw-source values (0..max_value) as uint8 pixels."""
    raw = spec.get("raw_source")
    if not raw:  # the source's raw values are 8-bit pixels already
        return to_pixels(x, 1.0, where)
    return to_pixels(np.asarray(x, dtype=np.float64) / float(raw["max_value"]), 1 / 255, where)


def load_image(path: Path, meta: dict, raw: bool = False,
               max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """One image file as the model's uint8 (H, W, C), resized to the model's H x W.

    Refuses, naming the file: a file Pillow cannot read, an image of more than ``max_pixels``
    pixels (judged from the header, before decoding) and a mode `IMAGE_MODES` does not map.
    """
    from PIL import Image

    spec = _contract(meta, str(path))
    h, w, c = spec["height"], spec["width"], spec["channels"]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if c not in IMAGE_MODES:
        raise ValueError(f"{path}: this model takes {c}-channel input; image files are read "
                         "as grey or RGB only, pass an .npz of uint8 (N, H, W, C) instead")
    try:
        with warnings.catch_warnings():  # the size check below is ours, and stricter
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)  # lazy: reads the header, decodes nothing yet
    except Image.DecompressionBombError as e:
        # Pillow's header check fires first for the largest images (about 179 MP and more)
        raise ValueError(f"{path}: image over the limit of {max_pixels} pixels, refused "
                         f"before decoding (Pillow: {e})") from None
    except Exception as e:  # noqa: BLE001 - Pillow raises many types for non-images
        raise ValueError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None
    with img:
        width, height = img.size
        if width * height > max_pixels:
            raise ValueError(f"{path}: image is {width} x {height} = {width * height} pixels, "
                             f"over the limit of {max_pixels} (refused before decoding; "
                             "shrink it first or raise --max-pixels)")
        mode = "PA" if img.mode == "P" and "transparency" in img.info else img.mode
        target = IMAGE_MODES[c].get(mode)
        if target is None:
            accepted = ", ".join(sorted(IMAGE_MODES[c]))
            raise ValueError(f"{path}: image mode {mode} ({_describe_mode(mode)}) does not fit "
                             f"this {'grey' if c == 1 else 'RGB'} model, which reads modes "
                             f"{accepted}; convert the image first")
        try:
            img = img.convert(target)
            if img.size != (w, h):
                shrink = img.size[0] > w or img.size[1] > h
                img = img.resize((w, h), Image.BOX if shrink else Image.BILINEAR)
            arr = np.asarray(img, dtype=np.uint8)
        except Exception as e:  # noqa: BLE001 - truncated or corrupt pixel data
            raise ValueError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None
    arr = arr[:, :, None] if arr.ndim == 2 else arr  # (H, W) -> (H, W, 1)
    return _from_raw(arr[None], spec, str(path))[0] if raw else arr


def _describe_mode(mode: str) -> str:
    if mode in {"LA", "RGBA", "PA", "La", "RGBa"}:
        return "has an alpha channel; flatten it onto a background"
    if mode in {"I;16", "I;16B", "I;16L", "I", "F"}:
        return "16/32-bit pixels, not 8-bit"
    return "not grey or RGB"


def _as_nhwc(x: np.ndarray, spec: dict, path: Path) -> np.ndarray:
    """``x`` in one of the accepted layouts as (N, H, W, C)."""
    h, w, c = spec["height"], spec["width"], spec["channels"]
    if x.shape in {(h, w), (h, w, c), (c, h, w)}:
        x = x[None]  # one image
    if x.ndim == 3 and x.shape[1:] == (h, w) and c == 1:
        return x[..., None]
    if x.ndim == 4 and x.shape[1:] == (c, h, w):
        return x.transpose(0, 2, 3, 1)
    if x.ndim == 4 and x.shape[1:] == (h, w, c):
        return x
    raise ValueError(f"{path}: x has shape {x.shape}, the model expects (N, {h}, {w}, {c}), "
                     f"(N, {c}, {h}, {w})" + (f" or (N, {h}, {w})" if c == 1 else ""))


def load_npz(path: Path, meta: dict, raw: bool = False) -> np.ndarray:
    """``x`` of an .npz as the model's uint8 (N, H, W, C)."""
    spec = _contract(meta, str(path))
    try:
        with np.load(path, allow_pickle=False) as z:
            if "x" not in z.files:
                raise ValueError(f"{path}: no array `x` (has: {', '.join(z.files) or 'nothing'})")
            x = z["x"]
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: not a readable .npz file ({e})") from None
    except ValueError as e:
        if str(e).startswith(f"{path}:"):
            raise
        # np.load takes any non-zip, non-.npy bytes for a pickle, which allow_pickle=False
        # then refuses with a message that names no file
        raise ValueError(f"{path}: not a readable .npz file (not a zip archive of .npy "
                         "arrays)") from None
    x = _as_nhwc(x, spec, path)
    where = str(path)
    if raw:
        return np.ascontiguousarray(_from_raw(x, spec, where))
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if np.issubdtype(x.dtype, np.integer):  # pixels in a wider integer type
        return np.ascontiguousarray(to_pixels(x, 1.0, where))
    if np.issubdtype(x.dtype, np.floating):  # the prepared form
        return np.ascontiguousarray(to_pixels(x, float(spec["scale"]), where))
    raise ValueError(f"{path}: x has dtype {x.dtype}; expected uint8 pixels or floats")


def load_inputs(paths: list[Path], meta: dict, raw: bool = False,
                max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, list[str]]:
    """All inputs as one uint8 batch (N, H, W, C) and a name per sample."""
    arrays, names = [], []
    for p in map(Path, paths):
        if p.suffix.lower() == ".npz":
            x = load_npz(p, meta, raw)
            arrays.append(x)
            names += [f"{p}[{i}]" for i in range(len(x))]
        else:
            arrays.append(load_image(p, meta, raw, max_pixels)[None])
            names.append(str(p))
    spec = meta["input"]
    empty = np.empty((0, spec["height"], spec["width"], spec["channels"]), np.uint8)
    return np.concatenate(arrays) if arrays else empty, names


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


def verify_file(path: Path, files: dict | None) -> None:
    """Refuse ``path`` unless its sha256 is the one ``metadata.json`` (``files``) records."""
    import hashlib

    if files is None:
        return  # a bare model file, not a bundle: nothing recorded to check against
    if path.name not in files:
        raise ValueError(f"{path}: not listed in the bundle's metadata.json `files`; refusing "
                         "an unverified model file")
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != files[path.name]:
        raise ValueError(f"{path}: sha256 {digest.hexdigest()} differs from the "
                         f"{files[path.name]} its metadata.json records; the bundle was changed "
                         "after convert verified it")


def open_session(bundle: str | Path, entry: dict, files: dict | None = None):
    """A CPU InferenceSession of ``entry["model_file"]`` in ``bundle`` with ``entry``'s options,
    after checking the file against the sha256 in ``files`` (metadata.json) when given."""
    import onnxruntime as ort

    path = resolve_model_file(bundle, entry["model_file"])
    verify_file(path, files)
    return ort.InferenceSession(str(path), sess_options=session_options(entry),
                                providers=["CPUExecutionProvider"])


def predict(bundle: str | Path, paths: list[Path], profile: str | None = None,
            raw: bool = False, max_pixels: int = MAX_PIXELS) -> list[tuple[str, str]]:
    """(input name, class name) for every image in ``paths``, run as ``profile`` configures;
    ``raw``: the inputs hold the source's raw values (``input.raw_source``); image files over
    ``max_pixels`` pixels are refused before decoding."""
    bundle = Path(bundle)
    meta = load_metadata(bundle)
    x, names = load_inputs(paths, meta, raw, max_pixels)
    session = open_session(bundle, runtime_entry(meta, profile), meta.get("files", {}))
    outputs = [o.name for o in session.get_outputs()]
    wanted = "label" if "label" in outputs else outputs[0]
    out = session.run([wanted], {meta["input"]["name"]: x})[0]
    labels = out if wanted == "label" else out.argmax(1)
    classes = meta["classes"]
    return [(n, str(classes[int(k)])) for n, k in zip(names, labels, strict=True)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="+", type=Path, help="PNG/JPEG images or .npz files")
    parser.add_argument("--bundle", type=Path, default=HERE, help="bundle folder (default: here)")
    parser.add_argument("--profile", default=None,
                        help="device profile of metadata.json's `runtime` (default: its "
                             "`default_profile`)")
    parser.add_argument("--raw", action="store_true",
                        help="inputs hold the source's raw values (metadata.json "
                             "input.raw_source, e.g. 0..16 for digits), not 0..255 pixels")
    parser.add_argument("--max-pixels", type=int, default=MAX_PIXELS,
                        help=f"refuse image files over this many pixels, before decoding "
                             f"(default {MAX_PIXELS})")
    args = parser.parse_args(argv)
    try:
        results = predict(args.bundle, args.inputs, args.profile, args.raw, args.max_pixels)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for name, label in results:
        print(f"{name}\t{label}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
