"""Who is who in what users run: `Recognizer.predict_people`, videos with people, and
`fer-tf predict --people / --enroll / --baseline` (real Yale photos, the shipped model)."""

import csv
import json
import shutil

import numpy as np
import pytest

from fer_tf.cli import main

SUBJECTS = ("subject01", "subject02", "subject03")
EXPRESSIONS = ("happy", "sad", "surprised")


def _yale(datasets_dir, name):
    return datasets_dir / "yalefaces" / name


@pytest.fixture(scope="module")
def recognizer():
    from fer_tf.deploy.recognizer import Recognizer

    with Recognizer() as rec:
        yield rec


@pytest.fixture(scope="module")
def photos(datasets_dir):
    return [_yale(datasets_dir, f"{s}.{e}") for s in SUBJECTS for e in EXPRESSIONS]


@pytest.fixture(scope="module")
def bad_faces(datasets_dir):
    """Subject 2's happy face too small for identity (eyes about 10 px apart, under MIN_EYE_DISTANCE)
    and blurred (sharpness under MIN_SHARPNESS)."""
    import cv2
    from PIL import Image

    rgb = np.asarray(Image.open(_yale(datasets_dir, "subject02.happy")).convert("RGB"))
    small = cv2.resize(rgb, None, fx=0.2, fy=0.2, interpolation=cv2.INTER_AREA)
    tiny = np.full((240, 320, 3), 128, np.uint8)
    tiny[:small.shape[0], :small.shape[1]] = small
    return {"tiny": tiny, "blurred": cv2.GaussianBlur(rgb, (0, 0), 3)}


@pytest.fixture(scope="module")
def result(recognizer, photos, bad_faces, datasets_dir):
    return recognizer.predict_people(
        [*photos, bad_faces["tiny"], bad_faces["blurred"]], baseline="self",
        enroll={"alice": [_yale(datasets_dir, "subject01.glasses")],
                "zed": _yale(datasets_dir, "subject09.normal")})


@pytest.mark.integration
def test_people_found_and_named_by_enrolment(result, photos):
    faces = [f for f in result["faces"] if f["input"] in map(str, photos)]
    persons = [f["person"] for f in faces]
    # one person per subject, the enrolled one by name, the others numbered in order of appearance
    assert persons == ["alice"] * 3 + ["person-1"] * 3 + ["person-2"] * 3
    assert result["unmatched"] == ["zed"]
    assert list(result["people"]) == ["alice", "person-1", "person-2"]
    alice = result["people"]["alice"]
    assert alice["faces"] == 3 and alice["share"] == pytest.approx(1 / 3, abs=1e-5)
    assert sum(alice["expressions"].values()) == 3
    assert sum(alice["expression_shares"].values()) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.integration
def test_small_and_blurred_faces_get_no_person_and_say_why(result):
    bad = {f["input"]: f for f in result["faces"] if not f["input"].startswith("/")}
    assert set(bad) == {"image-10", "image-11"}
    assert bad["image-10"]["person"] is None and "too small" in bad["image-10"]["person_reason"]
    assert bad["image-11"]["person"] is None and "too blurred" in bad["image-11"]["person_reason"]
    for face in bad.values():  # never corrected, never counted in a person
        assert face["probabilities"] == face["raw_probabilities"]
    assert sum(p["faces"] for p in result["people"].values()) == 9


@pytest.mark.integration
def test_baseline_self_corrects_and_keeps_raw(result, recognizer, photos):
    faces = [f for f in result["faces"] if f["person"] is not None]
    assert all(set(f) >= {"raw_expression", "raw_probabilities"} for f in faces)
    changed = [f for f in faces if f["probabilities"] != f["raw_probabilities"]]
    assert changed, "the self baseline changed no face"
    for f in faces:
        assert sum(f["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        assert f["expression"] == max(f["probabilities"], key=f["probabilities"].get)
    assert set(result["baseline"]["people_corrected"]) <= {"alice", "person-1", "person-2"}
    # the raw scores are the plain recogniser's
    plain = recognizer.predict(photos[0])["faces"][0]["probabilities"]
    assert faces[0]["raw_probabilities"] == pytest.approx(plain, abs=1e-5)


@pytest.mark.integration
def test_neutral_photos_match_people_by_face(recognizer, photos, datasets_dir):
    neutral = [_yale(datasets_dir, "subject03.normal"), _yale(datasets_dir, "subject01.normal")]
    out = recognizer.predict_people(photos, baseline=neutral)
    matched = out["baseline"]["neutral_photos"]
    assert matched == {str(neutral[0]): "person-3", str(neutral[1]): "person-1"}
    assert set(out["baseline"]["people_corrected"]) == {"person-1", "person-3"}
    person2 = [f for f in out["faces"] if f["person"] == "person-2"]
    assert all(f["probabilities"] == f["raw_probabilities"] for f in person2)  # no neutral photo


def test_one_person_with_a_neutral_photo_is_corrected_against_the_stored_reference():
    """Against the run's own people one person has nothing to correct against (their offset is
    the reference); the model's stored reference corrects them, as correct_neutral with that
    reference does, and the summary says which reference it was."""
    from fer_tf.deploy.people import References, correct_records, stored_reference
    from fer_tf.people import baseline as correction

    labels = ["anger", "happiness", "neutral"]
    rng = np.random.default_rng(0)
    raw = rng.dirichlet(np.ones(3), 4)
    neutral = References(vectors=np.zeros((1, 128), np.float32), probabilities=np.array([[0.2, 0.2, 0.6]]),
                         sources=["me.jpg"], problems=[])
    r = np.array([-1.0, -1.5, -0.4])
    meta = {"neutral_reference": {"labels": labels, "space": "logits", "reference": r.tolist(),
                                  "description": "15 test people"}}

    def records():
        return [{"person": "person-1", "expression": "anger",
                 "probabilities": dict(zip(labels, row))} for row in raw]

    people = {"person-1": [np.zeros(128, np.float32)]}
    plain = records()
    info = correct_records(plain, labels, "neutral", neutral, people, threshold=0.5)
    assert info["people_corrected"] == [] and "only person" in info["note"]
    assert "stored neutral reference" in info["note"]
    stored = records()
    info = correct_records(stored, labels, "neutral", neutral, people, threshold=0.5,
                           reference=stored_reference(meta, labels))
    assert info["people_corrected"] == ["person-1"] and "note" not in info
    assert info["reference"] == "stored with the model: 15 test people"
    want = correction.correct_neutral(raw, ["person-1"] * 4, neutral.probabilities, ["person-1"],
                                      reference=r).probabilities
    got = np.array([[f["probabilities"][n] for n in labels] for f in stored])
    np.testing.assert_allclose(got, want, atol=2e-6)
    assert all(f["raw_probabilities"] != f["probabilities"] for f in stored)
    # a reference over other labels, or another space, is not used
    assert stored_reference(meta, ["anger", "neutral", "happiness"]) == (None, None)
    other = {"neutral_reference": {**meta["neutral_reference"], "space": "probabilities"}}
    assert stored_reference(other, labels) == (None, None)
    assert stored_reference({}, labels) == (None, None)


@pytest.mark.integration
def test_cli_one_person_and_their_neutral_photo(capsys, datasets_dir, tmp_path):
    """The app user's case: photos of one person and one neutral photo of them, with the shipped
    model (its sidecar has the reference): corrected, raw scores kept."""
    photos, neutral = tmp_path / "me", tmp_path / "neutral"
    photos.mkdir()
    neutral.mkdir()
    for e in ("happy", "sad", "surprised"):
        shutil.copy(_yale(datasets_dir, f"subject04.{e}"), photos / f"{e}.gif")
    shutil.copy(_yale(datasets_dir, "subject04.normal"), neutral / "normal.gif")
    code, out, err = run(capsys, photos, "--baseline", neutral, "--json", "-q")
    assert code == 0, err
    result = json.loads(out)
    assert result["baseline"]["people_corrected"] == ["person-1"]
    assert result["baseline"]["reference"].startswith("stored with the model: the mean offset of 15")
    faces = [entry["faces"][0] for entry in result["inputs"]]
    assert all(f["probabilities"] != f["raw_probabilities"] for f in faces)
    assert "note:" not in err


@pytest.mark.integration
def test_neutral_photos_without_a_face_are_an_error(recognizer, photos, tmp_path):
    from fer_tf.deploy.people import NoUsableFaceError

    (tmp_path / "blank.png").write_bytes(b"")
    with pytest.raises(NoUsableFaceError, match="no face usable for identity"):
        recognizer.predict_people(photos[:1], baseline=[tmp_path / "blank.png"])


# -- videos ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_people_video(datasets_dir, tmp_path_factory):
    """20 frames of 640x480 at 10 fps: subject 1 throughout, subject 2 leaving for frames 8-13."""
    import cv2
    from PIL import Image

    path = tmp_path_factory.mktemp("video") / "two.avi"
    faces = [np.asarray(Image.open(_yale(datasets_dir, n)).convert("RGB"))
             for n in ("subject01.happy", "subject02.sad")]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (640, 480))
    for i in range(20):
        frame = np.full((480, 640, 3), 128, np.uint8)
        for k, face in enumerate(faces):
            if k == 1 and 8 <= i < 14:
                continue
            x = 5 + 312 * k + i % 3
            frame[100:100 + face.shape[0], x:x + face.shape[1]] = face
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


@pytest.mark.integration
def test_video_people_tracks_and_summary(recognizer, two_people_video, datasets_dir):
    out = recognizer.predict_video(two_people_video, enroll={"alice": _yale(datasets_dir, "subject01.glasses")})
    persons = [sorted((f["person"], f["track"]) for f in frame["faces"]) for frame in out["frames"]]
    assert persons[0] == [("alice", 1), ("person-1", 2)]
    assert all(p == [("alice", 1)] for p in persons[8:14])
    assert persons[15] == [("alice", 1), ("person-1", 2)]  # back after leaving: same person
    summary = out["summary"]
    assert summary["people"]["alice"]["faces"] == 20 and summary["people"]["person-1"]["faces"] == 14
    assert summary["people"]["alice"]["seconds"] == pytest.approx(2.0)
    assert sum(summary["people"]["alice"]["expression_seconds"].values()) == pytest.approx(2.0)
    assert summary["unmatched"] == []
    # embeddings only where the boxes cannot tell: far fewer than faces
    assert summary["embeddings"]["attempts"] < 34 / 3


# -- the command line ------------------------------------------------------------------------


def run(capsys, *argv):
    code = main(["predict", *map(str, argv)])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


@pytest.fixture(scope="module")
def folders(datasets_dir, photos, tmp_path_factory):
    """Inputs (Yale photos), an enrolment folder (alice: a photo; bob: a subfolder; zed: someone
    absent) and an empty neutral folder."""
    root = tmp_path_factory.mktemp("people")
    (root / "in").mkdir()
    for p in photos[:6]:
        shutil.copy(p, root / "in" / f"{p.name}.gif")
    (root / "enroll" / "bob").mkdir(parents=True)
    shutil.copy(_yale(datasets_dir, "subject01.glasses"), root / "enroll" / "alice.gif")
    shutil.copy(_yale(datasets_dir, "subject02.noglasses"), root / "enroll" / "bob" / "1.gif")
    shutil.copy(_yale(datasets_dir, "subject09.normal"), root / "enroll" / "zed.gif")
    (root / "empty").mkdir()
    (root / "empty" / "notes.txt").write_text("no photos here\n")
    return root


@pytest.mark.integration
def test_cli_people_json_csv_and_unmatched_names(capsys, folders, tmp_path):
    target = tmp_path / "rows.csv"
    code, out, err = run(capsys, folders / "in", "--enroll", folders / "enroll", "--baseline", "self",
                         "--json", "--csv", target, "-q")
    assert code == 0, err
    result = json.loads(out)
    assert set(result) == {"inputs", "people", "unmatched", "baseline"}
    assert result["unmatched"] == ["zed"] and "zed matched no face" in err
    persons = [entry["faces"][0]["person"] for entry in result["inputs"]]
    assert persons == ["alice"] * 3 + ["bob"] * 3
    face = result["inputs"][0]["faces"][0]
    assert {"raw_expression", "raw_probabilities"} <= set(face)
    with open(target, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["person"] for r in rows] == persons and all(r["track"] == "" for r in rows)
    assert "raw_expression" in rows[0] and "raw_happiness" in rows[0]


@pytest.mark.integration
def test_cli_baseline_folder_without_a_face_exits_2(capsys, folders):
    code, out, err = run(capsys, folders / "in", "--baseline", folders / "empty", "-q")
    assert code == 2 and out == ""
    assert f"--baseline {folders / 'empty'}: no face usable for identity" in err


@pytest.mark.integration
def test_cli_video_people_jsonl_and_timeline(capsys, two_people_video, tmp_path):
    code, out, err = run(capsys, two_people_video, "--people", "--jsonl", "--csv", tmp_path / "v.csv",
                         "--timeline", tmp_path / "t.png", "-q")
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    frames = [line for line in lines if "frame" in line]
    assert len(frames) == 20 and all({"track", "person"} <= set(f) for fr in frames for f in fr["faces"])
    video = lines[20]
    assert set(video["summary"]["people"]) == {"person-1", "person-2"}
    assert lines[-1] == {"people": {}, "unmatched": []}  # no image in this run
    with open(tmp_path / "v.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 34 and {r["track"] for r in rows} == {"1", "2"}
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.integration
def test_cli_unmatched_counts_names_matched_in_videos(capsys, folders, two_people_video, tmp_path):
    """alice (subject 1) is in the video only, zed in no input: the run's "unmatched" is zed
    alone, though the images (bob's) matched neither."""
    images = tmp_path / "bob_only"
    images.mkdir()
    for p in sorted((folders / "in").iterdir())[3:6]:  # subject 2's photos
        shutil.copy(p, images / p.name)
    enroll = tmp_path / "enroll"
    shutil.copytree(folders / "enroll", enroll)
    code, out, err = run(capsys, images, two_people_video, "--enroll", enroll, "--json", "-q")
    assert code == 0, err
    result = json.loads(out)
    assert set(result["people"]) == {"bob"}  # the images' people
    video = next(entry for entry in result["inputs"] if entry["path"] == str(two_people_video))
    assert "alice" in video["summary"]["people"] and "alice" not in video["summary"]["unmatched"]
    assert result["unmatched"] == ["zed"]
    assert "alice matched no face in the images" in err  # true of the images; the video has her
