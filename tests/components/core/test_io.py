import pytest

from components.core.io import atomic_dir, atomic_write_json, read_json, sha256_tree


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
