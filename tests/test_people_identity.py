"""fer_tf.people: identity embeddings, grouping, enrolment, ARI/purity, `fer-tf data identities`."""

import csv

import numpy as np
import pytest

from fer_tf.people.grouping import adjusted_rand_index, average_linkage, cut, enroll, group, purity

YALE = ("subject01.happy", "subject01.normal", "subject02.happy", "subject02.normal",
        "subject03.happy", "subject03.normal")


@pytest.fixture(scope="module")
def yale_faces(datasets_dir):
    """``{file name: (rgb, largest face)}`` of a few Yale photos."""
    from fer_tf.data.images import load_image_rgb
    from fer_tf.preprocess.align import FaceAligner

    out = {}
    with FaceAligner(engine="litert") as aligner:
        for name in YALE:
            rgb = load_image_rgb(datasets_dir / "yalefaces" / name)
            out[name] = (rgb, aligner.detect(rgb)[0])
    return out


@pytest.fixture(scope="module")
def embedder():
    from fer_tf.people.embedding import IdentityEmbedder

    return IdentityEmbedder()


@pytest.mark.integration
def test_embedding_shape_and_determinism(yale_faces, embedder):
    rgb, face = yale_faces["subject01.happy"]
    first = embedder.embed(rgb, face)
    assert first.ok and first.reason is None and first.message is None
    assert first.vector.shape == (128,) and first.vector.dtype == np.float32
    assert np.isfinite(first.vector).all() and 0.1 < np.linalg.norm(first.vector) < 10
    np.testing.assert_array_equal(embedder.embed(rgb.copy(), face).vector, first.vector)
    assert embedder.chip(rgb, face).shape == (150, 150, 3)


@pytest.mark.integration
def test_same_person_closer_than_others(yale_faces, embedder):
    from fer_tf.people.embedding import distances

    vectors = np.stack([embedder.embed(*yale_faces[name]).vector for name in YALE])
    d = distances(vectors)
    subject = np.array([name.split(".")[0] for name in YALE])
    for i in range(len(YALE)):
        same = (subject == subject[i]) & (np.arange(len(YALE)) != i)
        assert d[i, same].max() < d[i, subject != subject[i]].min(), YALE[i]
    # grouping these six faces finds the three people
    assert adjusted_rand_index(subject, group(vectors).labels) == 1.0


@pytest.mark.integration
def test_small_and_blurred_faces_get_no_vector(yale_faces, embedder):
    import cv2

    from fer_tf.preprocess.crop import Face

    rgb, face = yale_faces["subject02.normal"]
    k = 8.0 / np.linalg.norm(face.right_eye - face.left_eye)  # eyes 8 px apart
    small = cv2.resize(rgb, None, fx=k, fy=k, interpolation=cv2.INTER_AREA)
    moved = Face(tuple(np.array(face.box) * k), face.score, face.landmarks * k, face.left_eye * k,
                 face.right_eye * k)
    result = embedder.embed(small, moved)
    assert result.vector is None and result.reason == "small" and "too small" in result.message
    blurred = embedder.embed(cv2.GaussianBlur(rgb, (0, 0), 8), face)
    assert blurred.vector is None and blurred.reason == "blurred" and "blurred" in blurred.message


def test_ari_and_purity_by_hand():
    truth = [0, 0, 0, 1, 1, 1]
    pred = [0, 0, 1, 1, 2, 2]
    # contingency [[2, 1, 0], [0, 1, 2]]: sum C(n_ij, 2) = 1 + 1 = 2; rows sum C(3, 2) + C(3, 2)
    # = 6; columns (2, 2, 2) sum 1 + 1 + 1 = 3;
    # expected = 6 * 3 / C(6, 2) = 1.2; ARI = (2 - 1.2) / ((6 + 3) / 2 - 1.2) = 0.8 / 3.3
    assert adjusted_rand_index(truth, pred) == pytest.approx(0.8 / 3.3)
    assert purity(truth, pred) == pytest.approx(5 / 6)
    assert adjusted_rand_index(truth, [5, 5, 5, 7, 7, 7]) == 1.0
    assert purity(truth, [0, 1, 2, 3, 4, 5]) == 1.0
    assert adjusted_rand_index(truth, [0, 1, 2, 3, 4, 5]) == pytest.approx(0.0)


def _clusters(rng, centres, per, spread):
    return np.concatenate([c + rng.normal(scale=spread, size=(per, len(c))) for c in centres])


def test_grouping_finds_clear_clusters_and_numbers_them_by_appearance():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 128)) * (0.9 / np.sqrt(2 * 128))  # pairwise distances about 0.9
    x = _clusters(rng, centres, 6, 0.2 / np.sqrt(128))
    order = rng.permutation(len(x))
    truth = np.repeat(np.arange(4), 6)[order]
    g = group(x[order])
    assert g.count == 4 and adjusted_rand_index(truth, g.labels) == 1.0
    assert g.labels[0] == 0 and set(g.labels[: list(g.labels).index(1) + 1]) == {0, 1}
    assert g.names()[0] == "person-1"


def test_grouping_one_person_and_all_different():
    rng = np.random.default_rng(1)
    one = _clusters(rng, np.zeros((1, 128)), 12, 0.25 / np.sqrt(128))
    g = group(one)
    assert g.count == 1 and g.method == "adaptive-fallback"
    strangers = rng.normal(size=(8, 128)) * (1.0 / np.sqrt(2 * 128))
    assert group(strangers).count == 8
    assert group(one[:1]).count == 1 and group(np.zeros((0, 128))).count == 0


def test_adaptive_cut_follows_the_population_where_a_fixed_one_fails():
    """People whose faces sit close together (distances about 0.55 between people, 0.15 within)
    are merged by dlib's fixed 0.6 cut; the adaptive cut separates them."""
    rng = np.random.default_rng(2)
    centres = rng.normal(size=(5, 128)) * (0.55 / np.sqrt(2 * 128))
    x = _clusters(rng, centres, 5, 0.15 / np.sqrt(2 * 128))
    truth = np.repeat(np.arange(5), 5)
    assert group(x, method="fixed").count < 5
    assert adjusted_rand_index(truth, group(x).labels) == 1.0


def test_average_linkage_heights_and_cut():
    d = np.array([[0, 1, 4, 5], [1, 0, 4, 6], [4, 4, 0, 2], [5, 6, 2, 0]], float)
    merges = average_linkage(d)
    # {0,1} at 1, {2,3} at 2, then the average of 4, 5, 4, 6 = 4.75
    np.testing.assert_allclose(merges[:, 2], [1, 2, 4.75])
    assert list(cut(merges, 4, 1.5)) == [0, 0, 1, 2] and list(cut(merges, 4, 5)) == [0, 0, 0, 0]


def test_enroll_names_matching_people_and_reports_the_rest():
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(3, 128)) * (0.9 / np.sqrt(2 * 128))
    x = _clusters(rng, centres, 4, 0.2 / np.sqrt(128))
    g = group(x)
    stranger = rng.normal(size=(1, 128)) * (0.9 / np.sqrt(2 * 128))
    names, unmatched = enroll(g, x, {"ada": centres[1:2], "bob": stranger})
    assert names[4:8] == ["ada"] * 4
    assert names[:4] == ["person-1"] * 4 and names[8:] == ["person-2"] * 4
    assert unmatched == ["bob"]


@pytest.mark.integration
def test_identities_cli_writes_manifest_and_refuses_to_overwrite(datasets_dir, tmp_path, capsys):
    from fer_tf.cli import main
    from fer_tf.data.readers import read_dataset

    folder = tmp_path / "yale"
    folder.mkdir()
    for name in YALE:
        (folder / name).symlink_to(datasets_dir / "yalefaces" / name)
    out = tmp_path / "out" / "manifest.csv"
    assert main(["data", "identities", str(folder), "-f", "yale", "-o", str(out), "-q"]) == 0
    assert "3 people" in capsys.readouterr().out
    rows = list(csv.DictReader(out.open()))
    assert [r["path"] for r in rows] == [f"../yale/{name}" for name in sorted(YALE)]
    truth = [r["path"].split("/")[-1].split(".")[0] for r in rows]
    assert adjusted_rand_index(truth, [r["subject"] for r in rows]) == 1.0
    table = read_dataset(out, "manifest", allow_outside=True)  # the fine-tuning reader takes it
    assert len(table) == 6 and len(set(table.subject)) == 3
    before = out.read_text()
    assert main(["data", "identities", str(folder), "-f", "yale", "-o", str(out), "-q"]) == 2
    assert "--overwrite" in capsys.readouterr().err and out.read_text() == before
    assert main(["data", "identities", str(folder), "-f", "yale", "-o", str(out), "-q", "--overwrite"]) == 0


def test_grouping_small_runs():
    """Runs too small to learn a cut from fall back to the recogniser's own threshold."""
    rng = np.random.default_rng(4)
    face = rng.normal(size=(1, 128)) * (1.0 / np.sqrt(2 * 128))
    g = group(face)
    assert g.count == 1 and list(g.labels) == [0] and g.method == "adaptive-fallback"
    twice = np.concatenate([face, face + rng.normal(scale=0.2 / np.sqrt(128), size=(1, 128))])
    assert group(twice).count == 1  # two photos of one person (distance about 0.2)
    other = rng.normal(size=(1, 128)) * (1.0 / np.sqrt(2 * 128))
    g = group(np.concatenate([face, other]))  # two people (distance about 1)
    assert g.count == 2 and g.method == "adaptive-fallback"
    strangers = rng.normal(size=(40, 128)) * (1.0 / np.sqrt(2 * 128))  # all different people
    g = group(strangers)
    assert g.count == 40 and g.method == "adaptive-fallback"


def test_adaptive_keeps_a_persons_photo_sessions_together():
    """Each person photographed in two sessions: photos 0.2 apart within a session, 0.45 across
    sessions, people about 0.75 apart. The distance silhouette splits the sessions; the adaptive
    cut, which scores the probability of being different people, keeps each person whole."""
    rng = np.random.default_rng(5)
    people = rng.normal(size=(12, 128)) * (0.75 / np.sqrt(2 * 128))
    x, truth = [], []
    for i, centre in enumerate(people):
        for _ in range(2):
            session = centre + rng.normal(size=128) * (0.45 / np.sqrt(2 * 128))
            x.append(_clusters(rng, session[None], 3, 0.2 / np.sqrt(2 * 128)))
            truth += [i] * 3
    x = np.concatenate(x)
    assert group(x, method="silhouette").count > 12
    g = group(x)
    assert g.method == "adaptive" and g.count == 12 and adjusted_rand_index(truth, g.labels) == 1.0


def test_neighbour_mixture_finds_the_two_modes():
    from fer_tf.people.grouping import different_probability, fit_mixture

    rng = np.random.default_rng(6)
    x = np.concatenate([rng.normal(0.3, 0.05, 300), rng.normal(0.7, 0.05, 700)])
    m = fit_mixture(x)
    assert m.bimodal
    np.testing.assert_allclose(m.mean, [0.3, 0.7], atol=0.02)
    np.testing.assert_allclose(m.weight, [0.3, 0.7], atol=0.03)
    p = different_probability(np.array([0.2, 0.5, 0.9]), m)
    assert p[0] < 0.01 and 0.3 < p[1] < 0.9 and p[2] == 1.0
    assert not fit_mixture(rng.normal(0.5, 0.05, 500)).bimodal
    assert fit_mixture(x[:5]) is None
