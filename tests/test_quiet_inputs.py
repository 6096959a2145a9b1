"""Inputs that are wrong in quiet ways: duplicate or conflicting manifest rows, blank lines, an
unreadable folder, a photo above Pillow's own size limit, an animated GIF."""

import os
import warnings

import numpy as np
import pytest
from PIL import Image

from fer_tf.data import images
from fer_tf.data.readers import read_dataset
from fer_tf.errors import DatasetError, DatasetWarning, ImageWarning


def _faces(root, names):
    for name in names:
        Image.fromarray(np.full((20, 20), 128, np.uint8)).save(root / name, format="PNG")


def _manifest(root, lines):
    (root / "manifest.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root / "manifest.csv"


def test_duplicate_rows_are_dropped_with_a_count(tmp_path):
    _faces(tmp_path, ["a.png", "b.png"])
    path = _manifest(tmp_path, ["path,expression,subject", "a.png,happy,S1", "b.png,sad,S1",
                                "a.png,happiness,S1", "./a.png,happy,S1"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = read_dataset(path, "manifest")
    assert len(table) == 2
    messages = [str(w.message) for w in caught if issubclass(w.category, DatasetWarning)]
    assert any("2 duplicate row(s) dropped" in m and "line 4 repeats line 2" in m for m in messages)


def test_one_file_with_two_labels_is_refused_with_both_lines(tmp_path):
    _faces(tmp_path, ["a.png", "b.png"])
    path = _manifest(tmp_path, ["path,expression,subject", "a.png,happy,S1", "", "b.png,sad,S1",
                                "", "a.png,sad,S1"])
    with pytest.raises(DatasetError, match=r"lines 2 and 6 give a.png two labels happiness and sadness"):
        read_dataset(path, "manifest")
    path = _manifest(tmp_path, ["path,expression,subject", "a.png,happy,S1", "a.png,happy,S2"])
    with pytest.raises(DatasetError, match=r"lines 2 and 3 .* two subjects 'S1' and 'S2'"):
        read_dataset(path, "manifest")


def test_blank_lines_do_not_shift_line_numbers(tmp_path):
    _faces(tmp_path, ["a.png"])
    path = _manifest(tmp_path, ["path,expression,subject", "", "a.png,happy,S1", "", "",
                                ",happy,S2"])
    table, skipped = read_dataset(path, "manifest", return_skipped=True)
    assert len(table) == 1
    assert skipped == [{"path": f"{path}:6", "reason": "missing path"}]


def test_an_unreadable_folder_is_reported(tmp_path, monkeypatch):
    """Simulated (the tests may run as root, who reads every folder): listing one fails."""
    (tmp_path / "locked").mkdir()
    _faces(tmp_path, ["subject01.happy"])
    real = os.scandir

    def scandir(path="."):
        if os.fspath(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(DatasetError, match=r"cannot read the folder .*locked \(Permission denied\)"):
        read_dataset(tmp_path, "yale")
    with pytest.raises(DatasetError, match="locked"):
        read_dataset(tmp_path / "locked", "ckplus48")


def test_max_pixels_above_pillows_own_limit(tmp_path, monkeypatch):
    """Pillow refuses files above twice its MAX_IMAGE_PIXELS in Image.open; a larger
    ``max_pixels`` must win (Pillow's limit is made small here so that the image stays small)."""
    Image.fromarray(np.zeros((100, 100), np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    assert images.load_image(tmp_path / "big.png", max_pixels=20_000).shape == (100, 100)
    assert Image.MAX_IMAGE_PIXELS == 1000  # restored
    with pytest.raises(Exception, match="image too large"):
        images.load_image(tmp_path / "big.png", max_pixels=5_000)


def test_animated_gif_says_only_its_first_frame_is_used(tmp_path):
    frames = [Image.fromarray(np.full((16, 16), v, np.uint8)) for v in (10, 200, 90)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=50)
    frames[0].save(tmp_path / "still.gif")
    with pytest.warns(ImageWarning, match=r"anim.gif: an animated image of 3 frames; only its first"):
        grey = images.load_image(tmp_path / "anim.gif")
    assert abs(int(grey.mean()) - 10) <= 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        images.load_image(tmp_path / "still.gif")
