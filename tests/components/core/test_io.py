import subprocess
import sys

import numpy as np
import pytest

from components.core.io import (
    atomic_dir,
    atomic_save_npz,
    atomic_write_json,
    read_json,
    read_npz,
    sha256_tree,
)
from tests.helpers_data import REPO


def test_atomic_dir_leaves_the_old_folder_untouched_on_failure(tmp_path):
    out = tmp_path / "model"
    with atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("half")
        raise RuntimeError("crash mid-write")
    assert (out / "a.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temporary left behind


def test_atomic_write_json_is_stable_and_readable(tmp_path):
    atomic_write_json(tmp_path / "m.json", {"b": 1, "a": 2.5})
    text = (tmp_path / "m.json").read_text()
    assert text.index('"a"') < text.index('"b"')
    assert read_json(tmp_path / "m.json") == {"a": 2.5, "b": 1}
    with pytest.raises(FileNotFoundError, match="missing.json"):
        read_json(tmp_path / "missing.json")


def test_tree_hash_depends_on_content_and_names(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("1")
    h1 = sha256_tree(tmp_path / "d")
    (tmp_path / "d" / "x").write_text("2")
    assert sha256_tree(tmp_path / "d") != h1


def test_read_npz_reads_every_array(tmp_path):
    path = atomic_save_npz(tmp_path / "a.npz", x=np.arange(3), y=np.array(["a", "b"]))
    arrays = read_npz(path)
    assert sorted(arrays) == ["x", "y"] and arrays["x"].tolist() == [0, 1, 2]


@pytest.mark.parametrize("content", [b"not a zip at all", b"", b"PK but no zip header",
                                     b"PK\x03\x04 damaged"])
def test_read_npz_of_a_file_that_is_not_a_zip_names_the_path(tmp_path, content):
    path = tmp_path / "split.npz"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=f"^{path}: not a"):
        read_npz(path)


def test_read_npz_of_a_truncated_archive_names_the_path(tmp_path):
    path = atomic_save_npz(tmp_path / "t.npz", x=np.zeros((50, 8, 8)))
    path.write_bytes(path.read_bytes()[:-40])  # the zip's central directory is gone
    with pytest.raises(ValueError, match=f"^{path}: not a readable .npz archive"):
        read_npz(path)


def test_read_npz_of_a_damaged_member_names_path_and_array(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.arange(4096))  # stored uncompressed: the payload bytes are the data
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # CRC of member x no longer matches
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"^{path}: array `x` is unreadable"):
        read_npz(path)


def test_read_json_of_binary_garbage_names_the_path(tmp_path):
    (tmp_path / "m.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ValueError, match="m.json: not valid JSON"):
        read_json(tmp_path / "m.json")



def test_a_write_that_runs_out_of_room_names_the_file(tmp_path):
    """A full disk (here: a file-size limit, in a child process) names the file it was writing."""
    target = tmp_path / "big.bin"
    code = ("import resource, signal; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
            "resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000)); "
            "from components.core.io import atomic_write_bytes; "
            f"atomic_write_bytes({str(target)!r}, b'x' * 100_000)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO)
    assert out.returncode != 0
    assert "File too large" in out.stderr and str(target) in out.stderr
    assert not target.exists() and not list(tmp_path.glob(".big.bin.*"))
