"""Dataset readers: shared real data (integration) and small fixtures for the other layouts."""

import string
import time
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fer_tf.data.labels import BASIC7, EXPRESSIONS, canonical_expression
from fer_tf.data.readers import FORMATS, detect_format, read_dataset
from fer_tf.data.table import FaceTable
from fer_tf.errors import DatasetError, DatasetWarning
import fixtures_data as fx

# --- shared datasets --------------------------------------------------------------------------


@pytest.mark.integration
def test_ckplus48_counts(ckplus48_dir):
    table, skipped = read_dataset(ckplus48_dir, "ckplus48", return_skipped=True)
    s = table.summary()
    assert (s["images"], s["subjects"], s["sequences"]) == (981, 118, 327)
    assert s["expressions"] == {"anger": 135, "contempt": 54, "disgust": 177, "fear": 75,
                                "happiness": 207, "sadness": 84, "surprise": 249}
    assert len(s["single_expression_subjects"]) == 21
    assert skipped == []
    row = next(r for r in table.rows() if r["path"].endswith("S010_004_00000017.png"))
    assert (row["subject"], row["sequence"], row["frame"]) == ("S010", "S010_004", 17)
    assert list(table.path) == sorted(table.path)


@pytest.mark.integration
def test_fer2013_counts_and_splits(datasets_dir):
    start = time.perf_counter()
    table = read_dataset(datasets_dir / "fer2013", "fer2013")
    assert time.perf_counter() - start < 10
    s = table.summary()
    assert s["images"] == 35887 and s["subjects"] == 0
    assert s["splits"] == {"Training": 28709, "PublicTest": 3589, "PrivateTest": 3589}
    assert tuple(s["expressions"]) == BASIC7
    assert not table.has_subjects


@pytest.mark.integration
def test_kdef_subset(datasets_dir):
    table, skipped = read_dataset(datasets_dir / "kdef-subset", "kdef", return_skipped=True)
    s = table.summary()
    assert (s["images"], s["subjects"]) == (420, 70)
    assert s["expressions"] == {"anger": 140, "happiness": 140, "sadness": 140}
    assert skipped == []
    assert all(len(x) == 3 and x[0] in "FM" for x in table.subject)


@pytest.mark.integration
def test_yalefaces(datasets_dir):
    table, skipped = read_dataset(datasets_dir / "yalefaces", "yale", return_skipped=True)
    s = table.summary()
    assert (s["images"], s["subjects"]) == (60, 15)
    assert s["expressions"] == {"happiness": 15, "neutral": 15, "sadness": 15, "surprise": 15}
    reasons = {}
    for item in skipped:
        reasons[item["reason"]] = reasons.get(item["reason"], 0) + 1
    assert reasons == {"not an expression in the label set": 30, "not an expression condition": 74}
    sub = read_dataset(datasets_dir / "yalefaces", "yale", conditions=("happy", "sad"))
    assert len(sub) == 30


@pytest.mark.integration
@pytest.mark.parametrize("folder,fmt", [("ckplus48", "ckplus48"), ("fer2013", "fer2013"),
                                        ("kdef-subset", "kdef"), ("yalefaces", "yale")])
def test_detect_format_shared(datasets_dir, folder, fmt):
    assert detect_format(datasets_dir / folder) == fmt


# --- fixtures: official CK+ -------------------------------------------------------------------


def test_ckplus_official(tmp_path):
    root = fx.build_ckplus_official(tmp_path / "ck")
    table, skipped = read_dataset(root, "ckplus", return_skipped=True)
    assert table.counts() == {"contempt": 3, "disgust": 3, "happiness": 3}
    assert sorted(set(table.sequence)) == ["S005_001", "S010_002", "S011_001"]
    assert sorted(table.frame[table.sequence == "S005_001"]) == [3, 4, 5]
    reasons = {(p["path"].split("/")[-1], p["reason"]) for p in skipped}
    assert ("002", "no emotion label (unlabelled sequence)") in reasons
    assert ("S012_001_00000003_emotion.txt", "unknown label") in reasons


def test_ckplus_official_options(tmp_path):
    root = fx.build_ckplus_official(tmp_path / "ck")
    table = read_dataset(root, "ckplus", frames_per_sequence=1, include_neutral=True)
    assert table.counts() == {"contempt": 1, "disgust": 1, "happiness": 1, "neutral": 3}
    neutral = table.take(table.expression == "neutral")
    assert set(neutral.frame) == {1}
    with pytest.raises(DatasetError, match="frames_per_sequence"):
        read_dataset(root, "ckplus", frames_per_sequence=0)


def test_ckplus_official_missing_emotion_folder(tmp_path):
    fx.save(tmp_path / "cohn-kanade-images" / "S005" / "001" / "S005_001_00000001.png")
    with pytest.raises(DatasetError, match="Emotion"):
        read_dataset(tmp_path, "ckplus")


# --- fixtures: FER2013 CSV --------------------------------------------------------------------


def test_fer2013_csv(tmp_path):
    path = fx.build_fer_csv(tmp_path / "fer2013.csv")
    for root in (path, tmp_path):
        table, skipped = read_dataset(root, "fer2013-csv", return_skipped=True)
        assert table.pixels.shape == (3, 48, 48) and table.pixels.dtype == np.uint8
        np.testing.assert_array_equal(table.pixels[0], fx.face(1, (48, 48)))
        assert list(table.expression) == ["anger", "happiness", "neutral"]
        assert list(table.split) == ["Training", "PublicTest", "PrivateTest"]
        assert [s["reason"] for s in skipped] == ["unknown label", "malformed pixels"]
        assert skipped[0]["path"].endswith("fer2013.csv:5")
    assert detect_format(path) == "fer2013-csv" and detect_format(tmp_path) == "fer2013-csv"


def test_fer2013_csv_bad_header(tmp_path):
    (tmp_path / "fer2013.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DatasetError, match="emotion,pixels"):
        read_dataset(tmp_path, "fer2013-csv")


# --- fixtures: JAFFE, KDEF --------------------------------------------------------------------


def test_jaffe(tmp_path):
    root = fx.build_jaffe(tmp_path / "jaffe")
    table, skipped = read_dataset(root, "jaffe", return_skipped=True)
    assert table.counts() == {"anger": 1, "happiness": 1, "surprise": 1}
    assert sorted(set(table.subject)) == ["KA", "YM"]
    reasons = sorted((p["path"].split("/")[-1], p["reason"]) for p in skipped)
    assert reasons == [("KM.XX1.11.tiff", "unknown label"), ("README", "not an image file"),
                       ("bad_name.tiff", "malformed file name")]


def test_jaffe_palette_tiff_loads(tmp_path):
    from fer_tf.data.images import load_image

    root = fx.build_jaffe(tmp_path / "jaffe")
    table = read_dataset(root, "jaffe")
    for path in table.path:
        img = load_image(path)
        assert img.dtype == np.uint8 and img.shape == (32, 32)


def test_kdef_full_naming(tmp_path):
    root = fx.build_kdef(tmp_path / "kdef")
    table, skipped = read_dataset(root, "kdef", return_skipped=True)
    assert len(table) == 8  # 2 sessions x 2 subjects x 2 expressions, frontal only
    assert sorted(set(table.subject)) == ["F01", "M02"]
    assert any(p.endswith("BM02HAS.jpg") for p in table.path)
    assert set(table.sequence) == {""}
    reasons = [s["reason"] for s in skipped]
    assert reasons.count("unknown label") == 1 and reasons.count("malformed file name") == 1
    assert sum(r.startswith("pose") for r in reasons) == 32
    everything = read_dataset(root, "kdef", poses=("S", "HL", "HR", "FL", "FR"))
    assert len(everything) == 40
    assert len(read_dataset(root, "kdef", poses="fl")) == 8
    with pytest.raises(DatasetError, match="pose"):
        read_dataset(root, "kdef", poses=("X",))


# --- fixtures: manifest -----------------------------------------------------------------------


def test_manifest(tmp_path):
    path = fx.build_manifest(tmp_path / "m")
    table, skipped = read_dataset(path, "manifest", return_skipped=True)
    assert list(table.expression) == ["happiness", "anger", "surprise"]
    assert list(table.subject) == ["p1", "p1", "p2"]
    assert list(table.sequence) == ["p1_s1", "", "p2_s1"]
    assert any("Zoë éclair 表情.png" in p for p in table.path)
    assert sorted(s["reason"] for s in skipped) == ["file not found", "missing subject", "unknown label"]
    assert len(read_dataset(path.parent, "manifest")) == 3
    assert len(read_dataset(path, "manifest", require_subject=False)) == 4
    assert detect_format(path) == "manifest"


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be"])
def test_manifest_encodings(tmp_path, encoding):
    path = fx.build_manifest(tmp_path)
    path.write_bytes(path.read_text(encoding="utf-8").encode(encoding))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning for these
        table = read_dataset(path, "manifest")
    assert len(table) == 3 and any("Zoë éclair 表情.png" in p for p in table.path)
    assert detect_format(path) == "manifest" and detect_format(tmp_path) == "manifest"


def test_manifest_latin1_falls_back_with_a_warning(tmp_path):
    fx.save(tmp_path / "Zoë.png", 1)
    (tmp_path / "manifest.csv").write_bytes(
        "path,expression,subject\nZoë.png,happy,Zoë\n".encode("latin-1"))
    with pytest.warns(DatasetWarning, match="Latin-1"):
        table = read_dataset(tmp_path, "manifest")
    assert list(table.subject) == ["Zoë"] and table.path[0].endswith("Zoë.png")


def test_manifest_paths_stay_inside_its_folder(tmp_path):
    root = tmp_path / "data"
    fx.save(root / "in.png", 1)
    fx.save(root / "in2.png", 3)
    fx.save(root / "in3.png", 4)
    (root / "sub").mkdir()
    fx.save(tmp_path / "secret.png", 2)
    fx.save(tmp_path / "secret2.png", 5)
    lines = ["path,expression,subject", "in.png,happy,p1", "../secret.png,sad,p1",
             f"{tmp_path / 'secret2.png'},sad,p2", "sub/../in2.png,anger,p2", "../data/in3.png,fear,p3"]
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    table, skipped = read_dataset(root, "manifest", return_skipped=True)
    assert sorted(table.expression) == ["anger", "fear", "happiness"]  # normalised paths inside
    outside = [s for s in skipped if s["reason"].startswith("outside the manifest's folder")]
    assert len(outside) == 2 and all("secret" in s["path"] for s in outside)
    assert len(read_dataset(root, "manifest", allow_outside=True)) == 5


def test_manifest_missing_column(tmp_path):
    (tmp_path / "manifest.csv").write_text("file,label\nx.png,happy\n")
    with pytest.raises(DatasetError, match="missing column"):
        read_dataset(tmp_path, "manifest")


_label = st.one_of(
    st.sampled_from(["happy", "ANGRY", " sad ", "Surprised", "neutral", "contempt", "fear"]),
    st.text(alphabet=string.ascii_letters + " -", max_size=10),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(_label, st.sampled_from(["", "p1", "p2", "sub 3"])), max_size=12))
def test_manifest_property(tmp_path_factory, rows):
    root = tmp_path_factory.mktemp("manifest")
    for i in range(len(rows)):  # one file per row (a file named twice is another test's subject)
        fx.save(root / f"x{i}.png")
    lines = ["path,expression,subject"] + [f"x{i}.png,{label},{subject}"
                                           for i, (label, subject) in enumerate(rows)]
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    expected = [(canonical_expression(lab), sub) for lab, sub in rows
                if canonical_expression(lab) is not None and sub]
    if not expected:
        with pytest.raises(DatasetError):
            read_dataset(root, "manifest")
        return
    table, skipped = read_dataset(root, "manifest", return_skipped=True)
    assert len(table) + len(skipped) == len(rows)
    assert sorted(zip(table.expression, table.subject)) == sorted(expected)
    assert set(table.expression) <= set(EXPRESSIONS)


@given(st.text(max_size=12))
def test_canonical_expression_total(name):
    result = canonical_expression(name)
    assert result is None or result in EXPRESSIONS


# --- errors -----------------------------------------------------------------------------------


def test_unknown_format_lists_formats(tmp_path):
    with pytest.raises(DatasetError) as info:
        read_dataset(tmp_path, "affectnet")
    assert all(f in str(info.value) for f in FORMATS)


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f != "cache"])
def test_missing_root(tmp_path, fmt):
    with pytest.raises(DatasetError, match="not found") as info:
        read_dataset(tmp_path / "nope", fmt)
    assert "nope" in str(info.value) and fmt in str(info.value)


@pytest.mark.parametrize("fmt", ["ckplus48", "fer2013", "jaffe", "kdef", "yale"])
def test_empty_root(tmp_path, fmt):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DatasetError, match=f"no {fmt} images found") as info:
        read_dataset(tmp_path, fmt)
    assert "expected layout" in str(info.value)


def test_ckplus48_malformed_and_unknown(tmp_path):
    fx.save(tmp_path / "happy" / "S001_001_00000001.png")
    fx.save(tmp_path / "happy" / "face.png")
    fx.save(tmp_path / "bored" / "S002_001_00000001.png")
    table, skipped = read_dataset(tmp_path, "ckplus48", return_skipped=True)
    assert len(table) == 1
    assert sorted(s["reason"] for s in skipped) == ["malformed file name", "unknown label"]


def test_unknown_option(tmp_path):
    with pytest.raises(DatasetError, match="accepts: poses"):
        read_dataset(tmp_path, "kdef", pose=("S",))
    with pytest.raises(DatasetError, match="accepts: no options"):
        read_dataset(tmp_path, "ckplus48", poses=("S",))


def test_cache_dispatch(tmp_path, monkeypatch):
    from fer_tf.data import readers

    (tmp_path / "manifest.json").write_text("{}")
    expected = FaceTable.from_rows([{"path": "", "expression": "anger", "subject": "s1"}], name="cache")
    monkeypatch.setattr(readers, "read_cache", lambda root: expected)
    assert detect_format(tmp_path) == "cache"
    assert read_dataset(tmp_path, "cache") is expected
    table, skipped = read_dataset(tmp_path, "cache", return_skipped=True)
    assert table is expected and skipped == []
