"""The bad-input suite: every kind of broken source, prepared folder, params file and checkpoint
fails loudly, names what is wrong (file, key, row or sample) and publishes nothing.

Each case is one defect on top of a small good source (`tests/helpers_bad_inputs.py`). Stages
run for real: `ingest` as the component function (so an earlier good output must stay byte for
byte), `validate` and params checks through the generic runner (`flows.stages.run_stage`) in a
throwaway workspace with an MLflow sqlite store, and a few through `distillery stage`
subprocesses for the exit code.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from components.config import IngestConfig, QuantizeConfig, ResNetConfig
from components.ingest import ingest
from components.modeling.architectures import build_model
from components.modeling.checkpoint import save_checkpoint
from flows.stages import run_stage
from tests.helpers_bad_inputs import (
    SIDE,
    Workspace,
    env_with_tracking,
    idx_bytes,
    labels,
    leftovers,
    make_workspace,
    pixels,
    tree_state,
    write_csv,
    write_idx,
    write_image_folder,
    write_npz,
)
from tests.helpers_data import make_dataset, make_splits, write_dataset, write_prepared
from tests.workspace import BIN

Build = Callable[[Path], IngestConfig]


def csv_cfg(path: Path, **kw) -> IngestConfig:
    return IngestConfig(source="csv", path=str(path), **kw)


def npz_cfg(path: Path, **kw) -> IngestConfig:
    return IngestConfig(source="npz", path=str(path), **kw)


def idx_cfg(folder: Path) -> IngestConfig:
    return IngestConfig(source="idx", path=str(folder))


def folder_cfg(root: Path, **kw) -> IngestConfig:
    return IngestConfig(source="imagefolder", path=str(root), **kw)


def good_rows() -> list[list]:
    return [[int(y), *x.ravel().tolist()] for x, y in zip(pixels(), labels(), strict=True)]


def csv_with(edit: Callable[[list[list]], None], **kw) -> Build:
    def build(tmp: Path) -> IngestConfig:
        rows = good_rows()
        edit(rows)
        return csv_cfg(write_csv(tmp / "data.csv", rows), **kw)
    return build


def npz_with(**arrays) -> Build:
    return lambda tmp: npz_cfg(write_npz(tmp / "d.npz", **arrays))


def float_pixels(sample: int, value: float) -> np.ndarray:
    x = pixels().astype(np.float32) / 255
    x[sample, 1, 1] = value
    return x


def raw_file(name: str, data: bytes, cfg: Callable[[Path], IngestConfig]) -> Build:
    def build(tmp: Path) -> IngestConfig:
        (tmp / name).write_bytes(data)
        return cfg(tmp / name)
    return build


def idx_with(images: bytes | None = None, labels_: bytes | None = None, gz: bool = False,
             then: Callable[[Path], None] = lambda folder: None) -> Build:
    def build(tmp: Path) -> IngestConfig:
        folder = write_idx(tmp / "idx", images, labels_, gz)
        then(folder)
        return idx_cfg(folder)
    return build


def truncate_gz(folder: Path) -> None:
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:30])


def image_folder(edit: Callable[[Path, Path], None] = lambda root, tmp: None,
                 classes: tuple[str, ...] = ("cat", "dog"), **kw) -> Build:
    def build(tmp: Path) -> IngestConfig:
        root = write_image_folder(tmp / "images", classes)
        edit(root, tmp)
        return folder_cfg(root, **kw)
    return build


def link_file_outside(root: Path, tmp: Path) -> None:
    write_image_folder(tmp / "elsewhere", ("secret",), 1)
    (root / "dog" / "linked.png").symlink_to(tmp / "elsewhere/secret/0.png")


def link_class_outside(root: Path, tmp: Path) -> None:
    write_image_folder(tmp / "other", ("bird",))
    (root / "bird").symlink_to(tmp / "other/bird", target_is_directory=True)


def empty_classes(root: Path, tmp: Path) -> None:
    for png in root.rglob("*.png"):
        png.unlink()
    (root / "cat" / "readme.txt").write_text("no images here")


def odd_size(root: Path, tmp: Path) -> None:
    from PIL import Image

    Image.fromarray(np.zeros((6, 5), np.uint8)).save(root / "dog" / "odd.png")


def _set(rows: list[list], row: int, col: int, value) -> None:
    rows[row][col] = value


def _truncate(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[:200])  # a download cut short: no central directory
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


# ingest refuses the source: (id, build, pattern the message must match)
INGEST_REFUSED = [
    ("csv_missing_label_column",
     lambda tmp: csv_cfg(write_csv(tmp / "data.csv", good_rows(),
                                   ["target", *(f"p{i}" for i in range(SIDE * SIDE))])),
     r"data\.csv: label column `label` not found"),
    ("csv_ragged_long_row", csv_with(lambda rows: rows[2].append(7)),
     r"data\.csv: not a readable CSV .*line 4"),
    ("csv_fractional_label", csv_with(lambda rows: _set(rows, 2, 0, 1.5)),
     r"data\.csv: numeric labels must be whole numbers: row 2 \(1\.5\)"),
    ("csv_not_square",
     lambda tmp: csv_cfg(write_csv(tmp / "data.csv", [r[:-1] for r in good_rows()],
                                   ["label", *(f"p{i}" for i in range(SIDE * SIDE - 1))])),
     r"data\.csv: 15 pixel columns is not a square image"),
    ("csv_image_shape_mismatch", csv_with(lambda rows: None, image_shape=[1, 3, 3]),
     r"data\.csv: image_shape \[1, 3, 3\] \(C, H, W\) does not fit 16 pixel columns"),
    ("csv_binary_garbage", raw_file("data.csv", b"\xff\xd8\xff\xe0JFIF\x00\x01" * 20, csv_cfg),
     r"data\.csv: not a readable CSV"),
    ("csv_header_only", csv_with(lambda rows: rows.clear()),
     r"data\.csv: no usable rows"),
    ("idx_wrong_magic", idx_with(images=b"\x00\x00\x99\x03" + idx_bytes(pixels())[4:]),
     r"train-images-idx3-ubyte: not an IDX file \(bad magic number 00009903\)"),
    ("idx_truncated", idx_with(images=idx_bytes(pixels())[:-10]),
     r"train-images-idx3-ubyte: IDX dims \(16, 4, 4\) need 256 data bytes, found 246"),
    ("idx_count_mismatch", idx_with(labels_=idx_bytes(labels(15).astype(np.uint8))),
     r"train-images-idx3-ubyte holds 16 images but .*train-labels-idx1-ubyte holds 15 labels"),
    ("idx_missing_partner",
     idx_with(then=lambda folder: (folder / "train-labels-idx1-ubyte").unlink()),
     r"train-images-idx3-ubyte: its train images/labels partner file is missing"),
    ("idx_corrupt_gzip", idx_with(gz=True, then=truncate_gz),
     r"train-images-idx3-ubyte\.gz: corrupt gzip data"),
    ("idx_images_wrong_ndim", idx_with(images=idx_bytes(labels().astype(np.uint8))),
     r"train-images-idx3-ubyte: expected 3 dims \(N, H, W\), got \(16,\)"),
    ("npz_not_a_zip", raw_file("d.npz", b"<html>404 Not Found</html>", npz_cfg),
     r"d\.npz: not an \.npz \(zip\) archive"),
    ("npz_truncated", lambda tmp: npz_cfg(_truncate(write_npz(tmp / "d.npz"))),
     r"d\.npz: not a readable \.npz archive"),
    ("npz_missing_x", npz_with(x=None), r"d\.npz: missing array `x`"),
    ("npz_missing_y", npz_with(y=None), r"d\.npz: missing array `y`"),
    ("npz_shape_mismatch", npz_with(y=labels(15)),
     r"d\.npz: `y` must be \(16,\) to match `x`, got \(15,\)"),
    ("npz_x_wrong_ndim", npz_with(x=pixels().reshape(16, -1)),
     r"d\.npz: `x` must be \(N, H, W\) or \(N, C, H, W\), got \(16, 16\)"),
    ("npz_non_integer_labels", npz_with(y=labels() + np.where(np.arange(16) == 3, 0.5, 0.0)),
     r"d\.npz: `y` holds 1 non-integer label\(s\), e\.g\. sample\(s\) d\.npz:3 \(y=1\.5\)"),
    ("npz_label_outside_classes",
     npz_with(y=np.where(np.arange(16) == 4, 2, labels()), classes=np.array(["a", "b"])),
     r"d\.npz: `y` values must lie in 0\.\.1 \(`classes`\); d\.npz:4 has 2"),
    ("npz_object_array", npz_with(y=np.array([{"label": 1}] * 16, dtype=object)),
     r"d\.npz: array `y` is unreadable"),
    ("npz_too_few_for_a_split", npz_with(x=pixels()[:4], y=labels(4)),
     r"d\.npz: too few samples for a val split \(4 samples over 2 classes\)"),
    ("source_path_missing", lambda tmp: npz_cfg(tmp / "nowhere.npz"),
     r"nowhere\.npz: npz source not found"),
    ("imagefolder_empty", lambda tmp: folder_cfg(_mkdir(tmp / "images")),
     r"images: no class sub-folders found"),
    ("imagefolder_no_images", image_folder(empty_classes),
     r"images: no readable \.png/\.jpg/\.jpeg images in \['cat', 'dog'\]"),
    ("imagefolder_symlinked_file_escapes", image_folder(link_file_outside),
     r"images: dog/linked\.png is a symlink to .*elsewhere/secret/0\.png, outside"),
    ("imagefolder_symlinked_class_escapes", image_folder(link_class_outside),
     r"images: bird is a symlink to .*other/bird, outside"),
]


@pytest.mark.parametrize(("build", "pattern"), [c[1:] for c in INGEST_REFUSED],
                         ids=[c[0] for c in INGEST_REFUSED])
def test_ingest_refuses_bad_source_and_keeps_the_earlier_output(tmp_path, build, pattern):
    out = tmp_path / "data" / "prepared"
    ingest(npz_cfg(write_npz(tmp_path / "good.npz")), out)  # an earlier, good run
    before = tree_state(out)
    (tmp_path / "src").mkdir()
    cfg = build(tmp_path / "src")
    with pytest.raises((ValueError, FileNotFoundError)) as e:
        ingest(cfg, out)
    assert re.search(pattern, str(e.value)), str(e.value)
    assert tree_state(out) == before
    assert leftovers(out.parent) == []


# ingest reads the source (the damage is recorded or passed through); `validate` refuses it
VALIDATE_REFUSED = [
    ("csv_non_numeric_pixel", csv_with(lambda rows: _set(rows, 3, 5, "abc")),
     r"data\.csv:row 3 \(non-numeric pixel in column `p4`: 'abc'\)"),
    ("csv_missing_label_cell", csv_with(lambda rows: _set(rows, 5, 0, "")),
     r"data\.csv:row 5 \(missing label in column `label`\)"),
    ("csv_short_row", csv_with(lambda rows: rows[4].pop()),
     r"sample\(s\) contain NaN pixels: data\.csv:row 4 \(nan_count=1\)"),
    ("npz_nan_pixels", npz_with(x=float_pixels(3, np.nan)),
     r"sample\(s\) contain NaN pixels: d\.npz:3"),
    ("npz_inf_pixels", npz_with(x=float_pixels(5, np.inf)),
     r"sample\(s\) contain infinite pixels: d\.npz:5"),
    ("npz_pixels_above_max", npz_with(x=float_pixels(2, 3.0)),
     r"sample\(s\) have pixel values above value_max=1: d\.npz:2 \(max=3\.0\)"),
    ("npz_too_few_per_class",
     npz_with(x=pixels()[:12], y=np.array([0] * 8 + [1] * 4)),
     r"train: class\(es\) with fewer than min_per_class\.train=5 samples: 1 has 2"),
    ("npz_duplicate_images_leak",
     npz_with(x=np.where((labels() == 0)[:, None, None], pixels()[0], pixels())),
     r"train/test leakage: 1 test sample\(s\) also in train: test d\.npz:\d+ = train d\.npz:0"),
    ("imagefolder_corrupt_png",
     image_folder(lambda root, tmp: (root / "dog" / "broken.png").write_bytes(b"\x89PNG junk")),
     r"dog/broken\.png \(unreadable image"),
    ("imagefolder_mixed_sizes_without_resize", image_folder(odd_size),
     r"dog/odd\.png \(image is 6x5 \(HxW\) but the majority size is 4x4"),
    ("imagefolder_single_class", image_folder(classes=("cat",)),
     r"a classifier needs at least 2 classes: 1 declared \(cat\)"),
]


@pytest.fixture(scope="module")
def tracking_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mlflow") / "mlflow.db"


@pytest.fixture
def workspace(tmp_path, tracking_db, monkeypatch) -> Workspace:
    ws = make_workspace(tmp_path / "ws")
    monkeypatch.chdir(ws.root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tracking_db}")
    return ws


def assert_validate_published_nothing(ws: Workspace) -> None:
    assert not (ws.root / "reports/validate").exists()  # the gate, gate.json, with it
    assert not (ws.root / "metrics/validate.json").exists()
    assert leftovers(ws.root / "reports") == [] and leftovers(ws.root / "metrics") == []


@pytest.mark.parametrize(("build", "pattern"), [c[1:] for c in VALIDATE_REFUSED],
                         ids=[c[0] for c in VALIDATE_REFUSED])
def test_validate_stage_refuses_damaged_source_data(workspace, tmp_path, build, pattern):
    from components.validate import DataValidationError

    (tmp_path / "src").mkdir()
    ingest(build(tmp_path / "src"), workspace.root / "data/prepared")
    with pytest.raises(DataValidationError) as e:
        run_stage("validate")
    assert re.search(pattern, str(e.value)), str(e.value)
    assert_validate_published_nothing(workspace)
    assert (workspace.root / "reports/failed/validate/validate/result.json").is_file()


def _tamper(edit: Callable[[Path], None]) -> Callable[[Path], None]:
    def build(folder: Path) -> None:
        write_prepared(folder, make_splits(), class_names=["c0", "c1", "c2"])
        edit(folder)
    return build


def _arrays(edit: Callable[[dict], None], **manifest) -> Callable[[Path], None]:
    def build(folder: Path) -> None:
        arrays = make_splits()
        edit(arrays)
        write_prepared(folder, arrays, **{"class_names": ["c0", "c1", "c2"], **manifest})
    return build


def _count(folder: Path) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["splits"]["test"]["count"] = 12
    (folder / "manifest.json").write_text(json.dumps(manifest))


# the prepared folder itself is damaged or inconsistent
PREPARED_REFUSED = [
    ("prepared_label_outside_classes",
     _arrays(lambda a: a["val"]["y"].__setitem__(0, 3)),
     r"label\(s\) outside the declared classes \[0, 1, 2\]: \[3\]"),
    ("prepared_duplicate_ids", _arrays(lambda a: a["train"]["ids"].__setitem__(1, "train-0000")),
     r"train: 2 sample\(s\) share a source id: train-0000"),
    ("prepared_manifest_count_mismatch", _tamper(_count),
     r"test: 9 samples in test\.npz but the manifest says 12"),
    ("prepared_shape_differs_from_manifest", _arrays(lambda a: None, shape=[1, 5, 5]),
     r"have a shape other than the manifest's 1x5x5"),
    ("prepared_split_not_a_zip",
     _tamper(lambda folder: (folder / "val.npz").write_bytes(b"version https://git-lfs")),
     r"data/prepared/val\.npz: not an \.npz \(zip\) archive"),
    ("prepared_split_missing", _tamper(lambda folder: (folder / "test.npz").unlink()),
     r"data/prepared/test\.npz: prepared split not found"),
    ("prepared_manifest_not_json",
     _tamper(lambda folder: (folder / "manifest.json").write_text("{'classes': [0, 1]")),
     r"data/prepared/manifest\.json: not valid JSON"),
]


@pytest.mark.parametrize(("build", "pattern"), [c[1:] for c in PREPARED_REFUSED],
                         ids=[c[0] for c in PREPARED_REFUSED])
def test_validate_stage_refuses_damaged_prepared_folder(workspace, build, pattern):
    build(workspace.root / "data/prepared")
    with pytest.raises(Exception) as e:  # noqa: PT011 - DataValidationError or a load error
        run_stage("validate")
    assert re.search(pattern, str(e.value)), str(e.value)
    assert_validate_published_nothing(workspace)


# params.yaml is refused before any stage works: (id, overrides or raw text, pattern)
PARAMS_REFUSED = [
    ("split_fractions_do_not_sum_to_one",
     {"ingest": {"split": {"train": 0.8, "val": 0.15, "test": 0.15}}},
     r"ingest\.split.*train \+ val \+ test must sum to 1, got 1\.1"),
    ("split_fraction_zero", {"ingest": {"split": {"train": 0.85, "val": 0.0, "test": 0.15}}},
     r"ingest\.split\.val"),
    ("unknown_ingest_key", {"ingest": {"limit_per_clas": 5}}, r"ingest\.limit_per_clas"),
    ("unknown_source", {"ingest": {"source": "parquet", "path": "x.parquet"}},
     r"ingest\.source"),
    ("file_source_without_path", {"ingest": {"source": "npz", "path": None}},
     r"source `npz` needs `path`"),
    ("limit_per_class_zero", {"ingest": {"limit_per_class": 0}}, r"ingest\.limit_per_class"),
    ("resize_not_two_sides", {"ingest": {"resize": [8]}}, r"ingest\.resize"),
    ("min_per_class_zero", {"validate": {"min_per_class": {"train": 0}}},
     r"validate\.min_per_class\.train"),
    ("params_not_yaml", "ingest: [unclosed\n", r"params\.yaml: not valid YAML"),
]


@pytest.mark.parametrize(("params", "pattern"), [c[1:] for c in PARAMS_REFUSED],
                         ids=[c[0] for c in PARAMS_REFUSED])
def test_runner_refuses_bad_params_before_touching_outputs(workspace, params, pattern):
    out = workspace.root / "data/prepared"
    ingest(npz_cfg(write_npz(workspace.root / "good.npz")), out)
    before = tree_state(out)
    if isinstance(params, str):
        workspace.raw_params(params)
    else:
        workspace.params(params)
    with pytest.raises(Exception) as e:  # noqa: PT011 - the config error type is the runner's
        run_stage("ingest")
    assert re.search(pattern, str(e.value), re.S), str(e.value)
    assert tree_state(out) == before
    assert not (workspace.root / "reports/failed").exists()


def _flip_byte(model: Path) -> None:
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x40
    model.write_bytes(bytes(data))


def _truncate_model(model: Path) -> None:
    model.write_bytes(model.read_bytes()[:-64])


def _garbage_without_metadata(model: Path) -> None:
    (model.parent / "metadata.json").unlink()
    model.write_bytes(b"not a torch file")


def _other_architecture(model: Path) -> None:
    """Consistent hashes, but the spec says 5 channels where the weights have 4."""
    net = build_model(ResNetConfig(width=8, blocks=[4]), (1, 8, 8), 3)
    save_checkpoint(model.parent, net, ResNetConfig(width=8, blocks=[5]), (1, 8, 8), 3, {})


CHECKPOINT_REFUSED = [
    ("checkpoint_flipped_byte", _flip_byte, r"model\.pt: sha256 [0-9a-f]{64} differs from "
     r"[0-9a-f]{64} recorded in .*metadata\.json"),
    ("checkpoint_truncated", _truncate_model, r"model\.pt: sha256 [0-9a-f]{64} differs from"),
    ("checkpoint_garbage_without_metadata", _garbage_without_metadata,
     r"model\.pt: not a readable weights-only checkpoint"),
    ("checkpoint_weights_of_another_architecture", _other_architecture,
     r"model\.pt: weights do not match the architecture spec"),
]


@pytest.mark.parametrize(("tamper", "pattern"), [c[1:] for c in CHECKPOINT_REFUSED],
                         ids=[c[0] for c in CHECKPOINT_REFUSED])
def test_quantize_refuses_tampered_checkpoint_and_writes_nothing(tmp_path, tamper, pattern):
    from components.quantize import quantize_stage

    arch = ResNetConfig(width=8, blocks=[4])
    model = save_checkpoint(tmp_path / "student", build_model(arch, (1, 8, 8), 3), arch,
                            (1, 8, 8), 3, {"kind": "student"})
    tamper(model)
    prepared = make_dataset(n_per_class=10)
    with pytest.raises(ValueError) as e:
        quantize_stage(QuantizeConfig(calibration_size=8), tmp_path / "student", prepared,
                       tmp_path / "quantized", tmp_path / "metrics/quantize.json")
    assert re.search(pattern, str(e.value)), str(e.value)
    assert str(model) in str(e.value)
    assert not (tmp_path / "quantized").exists() and not (tmp_path / "metrics").exists()


@pytest.mark.parametrize(("params", "pattern", "kept"), [
    ({"ingest": {"split": {"train": 0.5, "val": 0.2, "test": 0.2}}},
     r"ingest\.split.*must sum to 1, got 0\.9", True),  # refused before any work
    ({"ingest": {"source": "npz", "path": "broken.npz"}},
     r"broken\.npz: not an \.npz \(zip\) archive", False),  # the stage ran: outs moved aside
], ids=["cli_bad_split_fractions", "cli_npz_starting_PK_not_a_zip"])
def test_distillery_stage_ingest_exits_non_zero_naming_the_problem(tmp_path, tracking_db,
                                                                   params, pattern, kept):
    ws = make_workspace(tmp_path / "ws")
    (ws.root / "broken.npz").write_bytes(b"PK but not really a zip")
    write_dataset(make_dataset(n_per_class=5), ws.root / "data/prepared")
    before = tree_state(ws.root / "data/prepared")
    ws.params(params)
    proc = subprocess.run([str(BIN / "distillery"), "stage", "ingest"], cwd=ws.root,
                          env=env_with_tracking(tracking_db), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0
    assert re.search(pattern, proc.stderr, re.S), proc.stderr
    after = tree_state(ws.root / "data/prepared")
    if kept:
        assert after == before
    else:
        assert after is None and tree_state(ws.root / "reports/failed/ingest/prepared") == before
