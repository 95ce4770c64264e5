"""`bundle_predict` (each bundle's standalone predict.py) on bad inputs: files that are no image
or no .npz, images of another channel count than the model, huge images, paths with spaces.

One real grey bundle (a briefly trained CNN through the real `quantize` and `convert`) serves
every test; image files are made in tmp_path with Pillow (the huge ones written by hand: a
1-bit all-black PNG of 20000 x 20000 compresses to a few kB).
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from components.config import ConvertConfig, QuantizeConfig
from components.convert import convert_stage
from components.core.data import Dataset
from components.export import bundle_predict
from components.quantize import quantize_stage
from tests.helpers_data import make_dataset
from tests.helpers_models import make_checkpoint


@pytest.fixture(scope="module")
def data() -> Dataset:
    return make_dataset(20)  # 3 classes of (1, 8, 8) blobs


@pytest.fixture(scope="module")
def bundle(data: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bundle_predict")
    student = make_checkpoint(root / "student", data, epochs=2)
    quantize_stage(QuantizeConfig(calibration_size=16, max_accuracy_drop=1.0, variants=["fp32"]),
                   student, data, root / "quantized", root / "quantize.json")
    convert_stage(ConvertConfig(include_teachers=False, ort_format=False), root / "quantized",
                  {}, data, root / "bundles", root / "convert.json")
    return root / "bundles" / "fp32"


@pytest.fixture(scope="module")
def meta(bundle: Path) -> dict:
    return bundle_predict.load_metadata(bundle)


def _grey(data: Dataset, i: int = 0) -> np.ndarray:
    """Test image ``i`` as (8, 8) uint8 pixels."""
    return np.rint(data.test.x[i, 0] * 255).astype(np.uint8)


def naming(path: Path, rest: str) -> str:
    """A pattern for an error that starts with ``path`` and goes on with the pattern ``rest``."""
    return re.escape(f"{path}: ") + rest


def write_blank_png(path: Path, width: int, height: int) -> Path:
    """An all-black 1-bit grey PNG of width x height, compressed row by row (never in memory)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body)))

    row = b"\0" * (1 + (width + 7) // 8)  # filter byte + packed bits
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1 bit, grey
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat)
                     + chunk(b"IEND", b""))
    return path


def test_predict_refuses_a_file_that_is_no_image_naming_it(bundle: Path, tmp_path: Path):
    for name in ("notes.png", "notes.txt", "empty.jpg"):
        path = tmp_path / name
        path.write_text("" if name.startswith("empty") else "not an image\n")
        with pytest.raises(ValueError, match=naming(path, "not a readable image")):
            bundle_predict.predict(bundle, [path])


def test_predict_refuses_a_file_that_is_no_npz_naming_it(bundle: Path, tmp_path: Path):
    text, cut = tmp_path / "text.npz", tmp_path / "cut.npz"
    text.write_text("x,y\n1,2\n")  # np.load takes this for a pickle and names no file
    np.savez(cut, x=np.zeros((4, 8, 8), np.uint8))
    cut.write_bytes(cut.read_bytes()[:60])
    for path in (text, cut):
        with pytest.raises(ValueError, match=naming(path, r"not a readable \.npz file")):
            bundle_predict.predict(bundle, [path])


def test_predict_says_which_file_is_missing(bundle: Path, tmp_path: Path):
    for name in ("gone.png", "gone.npz"):
        with pytest.raises(FileNotFoundError, match=naming(tmp_path / name, "no such file")):
            bundle_predict.predict(bundle, [tmp_path / name])


def test_rgb_png_for_a_grey_model_is_converted_by_the_luma_rule(bundle: Path, meta: dict,
                                                               data: Dataset, tmp_path: Path):
    grey = _grey(data)
    rgb = np.stack([grey, grey // 2, 255 - grey], axis=-1)  # (8, 8, 3), channels differ
    Image.fromarray(rgb, mode="RGB").save(tmp_path / "rgb.png")
    luma = Image.fromarray(rgb, mode="RGB").convert("L")  # L = 0.299 R + 0.587 G + 0.114 B
    luma.save(tmp_path / "luma.png")
    got = bundle_predict.load_image(tmp_path / "rgb.png", meta)
    assert got.shape == (8, 8, 1)
    r, g, b = (rgb[..., k].astype(int) for k in range(3))
    expected = (299 * r + 587 * g + 114 * b) / 1000
    assert np.abs(got[..., 0].astype(int) - expected).max() <= 1
    assert (bundle_predict.predict(bundle, [tmp_path / "rgb.png"])[0][1]
            == bundle_predict.predict(bundle, [tmp_path / "luma.png"])[0][1])


def test_grey_png_for_an_rgb_model_is_copied_to_every_channel(meta: dict, data: Dataset,
                                                             tmp_path: Path):
    rgb_meta = {**meta, "input": {**meta["input"], "channels": 3}}
    Image.fromarray(_grey(data), mode="L").save(tmp_path / "grey.png")
    got = bundle_predict.load_image(tmp_path / "grey.png", rgb_meta)
    assert got.shape == (8, 8, 3)
    assert (got == _grey(data)[..., None]).all()


def test_alpha_16_bit_and_cmyk_images_are_refused_naming_file_and_mode(bundle: Path,
                                                                       data: Dataset,
                                                                       tmp_path: Path):
    grey = _grey(data)
    images = {"two channels.png": Image.fromarray(np.stack([grey, grey], -1), mode="LA"),
              "rgba.png": Image.fromarray(np.stack([grey] * 4, -1), mode="RGBA"),
              "deep.png": Image.fromarray(grey.astype(np.uint16) * 257).convert("I;16"),
              "print.jpg": Image.fromarray(np.stack([grey] * 3, -1), mode="RGB").convert("CMYK")}
    for name, img in images.items():
        img.save(tmp_path / name)
        mode = Image.open(tmp_path / name).mode
        with pytest.raises(ValueError, match=naming(tmp_path / name, f"image mode {mode} ")):
            bundle_predict.predict(bundle, [tmp_path / name])
    rgb_meta = {**bundle_predict.load_metadata(bundle)}
    rgb_meta["input"] = {**rgb_meta["input"], "channels": 3}
    with pytest.raises(ValueError, match=r"rgba\.png: image mode RGBA \(has an alpha channel"):
        bundle_predict.load_image(tmp_path / "rgba.png", rgb_meta)


def test_an_image_over_the_pixel_limit_is_refused_from_its_header(bundle: Path, tmp_path: Path):
    big = write_blank_png(tmp_path / "big.png", 9000, 9000)  # 81 MP: Pillow alone decodes it
    assert big.stat().st_size < 100_000
    with pytest.raises(ValueError, match=naming(big, r"image is 9000 x 9000 = 81000000 pixels, "
                                                r"over the limit of 64000000 \(refused before")):
        bundle_predict.predict(bundle, [big])
    huge = write_blank_png(tmp_path / "huge.png", 20000, 20000)
    with pytest.raises(ValueError, match=naming(huge, r"image over the limit of 64000000 pixels, "
                                                 r"refused before decoding \(Pillow: .*400000000")):
        bundle_predict.predict(bundle, [huge])
    small = write_blank_png(tmp_path / "small.png", 300, 200)  # a limit of our own choosing
    with pytest.raises(ValueError, match=r"300 x 200 = 60000 pixels, over the limit of 50000"):
        bundle_predict.predict(bundle, [small], max_pixels=50_000)
    assert len(bundle_predict.predict(bundle, [small])) == 1


REFUSE_AND_REPORT_RSS = """
import sys
sys.path.insert(0, sys.argv[1])
import predict
try:
    predict.load_image(predict.Path(sys.argv[2]), predict.load_metadata(sys.argv[1]))
    print("decoded")
except ValueError as e:
    print("refused:", e)
# peak RSS of this process's own image (ru_maxrss would carry the forking pytest's peak)
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(int(hwm.split()[1]) // 1024)  # MiB
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM (Linux)")
def test_refusing_a_huge_image_keeps_memory_bounded(bundle: Path, tmp_path: Path):
    # 12000 x 12000 sits between Pillow's warning (89 MP) and its refusal (179 MP): decoded,
    # it would take 144 MiB as 1-bit and as much again converted to L
    big = write_blank_png(tmp_path / "big.png", 12000, 12000)
    proc = subprocess.run([sys.executable, "-c", REFUSE_AND_REPORT_RSS, str(bundle), str(big)],
                          capture_output=True, text=True, timeout=120,
                          env={"OPENBLAS_NUM_THREADS": "1", "PATH": ""})
    assert proc.returncode == 0, proc.stderr
    said, peak_mib = proc.stdout.splitlines()
    assert said.startswith(f"refused: {big}: image is 12000 x 12000")
    assert int(peak_mib) < 140, f"peak RSS {peak_mib} MiB: the image was decoded"


def test_paths_with_spaces_work_in_process_and_in_the_shipped_predict_py(
        bundle: Path, data: Dataset, tmp_path: Path):
    spaced = tmp_path / "my bundle"
    shutil.copytree(bundle, spaced)
    folder = tmp_path / "input images"
    folder.mkdir()
    plain = tmp_path / "plain.png"
    Image.fromarray(_grey(data), mode="L").save(plain)
    img = shutil.copyfile(plain, folder / "digit one.png")
    expected = bundle_predict.predict(bundle, [plain])[0][1]
    assert bundle_predict.predict(spaced, [img]) == [(str(img), expected)]
    proc = subprocess.run([sys.executable, str(spaced / "predict.py"), str(img)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{img}\t{expected}\n"
    bad = folder / "not an image.png"
    bad.write_text("hello")
    proc = subprocess.run([sys.executable, str(spaced / "predict.py"), str(bad)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"error: {bad}: not a readable image")


def test_a_bundle_changed_after_convert_is_refused_naming_the_file_and_both_hashes(
        bundle: Path, data: Dataset, tmp_path: Path):
    changed = tmp_path / "changed"
    shutil.copytree(bundle, changed)
    image = tmp_path / "one.png"
    Image.fromarray(_grey(data), mode="L").save(image)
    assert bundle_predict.predict(changed, [image])  # an intact copy predicts
    model = changed / bundle_predict.load_metadata(changed)["model_file"]
    blob = bytearray(model.read_bytes())
    blob[-1] ^= 0xFF  # one flipped bit in the last weight
    model.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match=naming(model, "sha256 [0-9a-f]{64} differs from the "
                                                       "[0-9a-f]{64} its metadata.json records")):
        bundle_predict.predict(changed, [image])
    proc = subprocess.run([sys.executable, str(changed / "predict.py"), str(image)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode != 0 and "sha256" in proc.stderr and str(model) in proc.stderr
