"""fer_tf.people.baseline: a person's own expression baseline (NumPy only, fast)."""

import numpy as np
import pytest

from fer_tf.errors import FerTfError
from fer_tf.people import baseline
from fer_tf.research.stats import subject_bootstrap


def random_probabilities(n, c=7, seed=0, scale=2.0):
    z = np.random.default_rng(seed).normal(scale=scale, size=(n, c))
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def biased(labels, bias, c=7, strength=3.0, seed=0):
    """Faces whose true expression ``labels[i]`` scores high, plus a person-wide ``bias`` vector."""
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=0.3, size=(len(labels), c)) + np.asarray(bias)
    z[np.arange(len(labels)), labels] += strength
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_self_correction_equals_independent_formula():
    p = random_probabilities(9)
    persons = np.array(["a", "a", "a", "b", "b", "b", "b", "c", "c"], object)
    result = baseline.correct_self(p, persons, estimator="mean", evidence="faces", shrinkage=2.0,
                                   reference="run")
    logp = np.log(p)
    means = {q: logp[persons == q].mean(0) for q in "abc"}
    r = np.mean([means[q] for q in "abc"], axis=0)  # run reference: mean over the people
    expected = np.empty_like(logp)
    for i, q in enumerate(persons):
        n = np.sum(persons == q)
        w = (n - 1) / (n - 1 + 2.0)
        z = logp[i] - w * (means[q] - r)
        expected[i] = np.exp(z) / np.exp(z).sum()
    np.testing.assert_allclose(result.probabilities, expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(result.raw_probabilities, p)
    assert result.weights["b"] == pytest.approx(3 / 5)


def test_probability_space_divides_by_the_mean_probabilities():
    p = random_probabilities(4, seed=3)
    persons = ["x"] * 4
    result = baseline.correct_self(p, persons, space="probabilities", estimator="mean", evidence="faces",
                                   shrinkage=0.0, reference="none")
    q = p / p.mean(0)
    np.testing.assert_allclose(result.probabilities, q / q.sum(1, keepdims=True), rtol=1e-9)


def test_balanced_offset_averages_expression_groups():
    p = np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.8, 0.1, 0.1], [0.1, 0.2, 0.7]])
    got = baseline.offset(p, estimator="balanced")
    expected = 0.5 * (np.log(p[:3]).mean(0) + np.log(p[3]))
    np.testing.assert_allclose(got, expected)


def test_one_face_is_not_corrected():
    p = random_probabilities(5, seed=1)
    persons = ["a", "a", "a", "a", "lonely"]
    for evidence in baseline.EVIDENCE:
        for k in (0.0, 1.0):
            result = baseline.correct_self(p, persons, evidence=evidence, shrinkage=k, reference="run")
            assert result.weights["lonely"] == 0.0
            np.testing.assert_allclose(result.probabilities[4], p[4], rtol=1e-9)


def test_shrinkage_grows_with_evidence():
    assert baseline.evidence_weight(0, 1.0) == 0.0
    w = baseline.evidence_weight([1, 2, 4, 100], 2.0)
    assert np.all(np.diff(w) > 0) and w[-1] < 1
    assert baseline.evidence_weight(3, 0.0) == 1.0


def test_person_with_one_expression_keeps_it():
    happy = 3
    bias = np.zeros(7)
    bias[5] = 1.0  # this person's faces lean towards sadness
    mine = biased(np.full(10, happy), bias, seed=2)
    others = np.concatenate([biased(np.arange(7), np.zeros(7), seed=s) for s in range(3)])
    p = np.concatenate([mine, others])
    persons = ["me"] * 10 + [f"o{s}" for s in range(3) for _ in range(7)]
    assert np.all(np.argmax(mine, 1) == happy)
    result = baseline.correct_self(p, persons)  # the defaults
    assert result.weights["me"] == 0.0
    assert np.all(result.predicted[:10] == happy)


def test_skewed_person_keeps_the_dominant_expression():
    """80% happiness, 20% surprise, and a person-wide lean towards anger that hides surprise."""
    bias = np.zeros(7)
    bias[0] = 2.9
    labels = np.array([3] * 8 + [6] * 2)
    mine = biased(labels, bias, strength=3.0, seed=4)
    others = np.concatenate([biased(np.arange(7), np.zeros(7), seed=s) for s in range(5, 9)])
    p = np.concatenate([mine, others])
    persons = ["me"] * 10 + [f"o{s}" for s in range(4) for _ in range(7)]
    plain = np.argmax(mine, 1)
    corrected = baseline.correct_self(p, persons).predicted[:10]
    assert np.all(corrected[labels == 3] == 3)  # the dominant expression is not erased
    assert np.sum(corrected == labels) >= np.sum(plain == labels)
    # the plain mean over faces lets the 80% dominate the offset: it erases more happiness
    mean = baseline.correct_self(p, persons, estimator="mean", reference="none").predicted[:10]
    assert np.sum(mean[labels == 3] == 3) <= np.sum(corrected[labels == 3] == 3)


def test_self_removes_a_person_bias():
    bias = np.zeros(7)
    bias[4] = 3.2  # everything this person does looks neutral
    labels = np.tile(np.arange(7), 2)
    mine = biased(labels, bias, seed=5)
    others = np.concatenate([biased(np.arange(7), np.zeros(7), seed=s) for s in range(10, 13)])
    p = np.concatenate([mine, others])
    persons = ["me"] * 14 + [f"o{s}" for s in range(3) for _ in range(7)]
    plain = np.mean(np.argmax(mine, 1) == labels)
    corrected = np.mean(baseline.correct_self(p, persons).predicted[:14] == labels)
    assert corrected > plain


def test_neutral_baseline():
    bias = np.zeros(7)
    bias[5] = 3.2  # this person's faces lean towards sadness, their neutral photo too
    faces = biased(np.array([0, 3, 6, 4]), bias, seed=6)
    neutral_me = biased(np.array([4]), bias, seed=7)
    neutral_other = biased(np.array([4, 4]), np.zeros(7), seed=8)
    neutral = np.concatenate([neutral_me, neutral_other])
    result = baseline.correct_neutral(faces, ["me"] * 4, neutral, ["me", "o1", "o2"])
    w = 1 / (1 + baseline.NEUTRAL_DEFAULTS["shrinkage"])
    logn = np.log(neutral)
    r = np.mean(logn, axis=0)  # each person has one photo: run reference = their mean
    z = np.log(faces) - w * (logn[0] - r)
    np.testing.assert_allclose(result.probabilities, np.exp(z) / np.exp(z).sum(1, keepdims=True), rtol=1e-9)
    assert np.all(result.predicted == [0, 3, 6, 4])  # the neutral face stays neutral
    # without a reference, subtracting the neutral photo pushes a neutral face away from neutral
    bare = baseline.correct_neutral(faces, ["me"] * 4, neutral_me, ["me"], shrinkage=0.0, reference="none")
    assert bare.predicted[3] != 4


def test_neutral_leaves_people_without_photo_and_unknown_faces():
    p = random_probabilities(3, seed=9)
    n = random_probabilities(1, seed=10)
    result = baseline.correct_neutral(p, ["a", "stranger", None], n, ["a"], reference="none")
    np.testing.assert_array_equal(result.probabilities[1:], p[1:])
    assert not np.allclose(result.probabilities[0], p[0])


def test_unknown_person_is_not_corrected():
    p = random_probabilities(6, seed=11)
    persons = ["a", "a", None, "b", "b", None]
    result = baseline.correct_self(p, persons, evidence="faces", reference="none")
    np.testing.assert_array_equal(result.probabilities[[2, 5]], p[[2, 5]])
    assert set(result.offsets) == {"a", "b"}


def test_people_reference_is_the_runs_reference_of_those_people():
    """The reference a model stores (one person's correction) is what reference="run" gives the
    same people enrolled together: the mean over people of their mean log-probabilities."""
    neutral = random_probabilities(5, seed=14)
    persons = ["a", "a", "b", "c", "c"]
    r = baseline.people_reference(neutral, persons)
    logn = np.log(neutral)
    expected = np.mean([logn[:2].mean(0), logn[2], logn[3:].mean(0)], axis=0)
    np.testing.assert_allclose(r, expected, rtol=1e-12)
    faces = random_probabilities(3, seed=15)
    run = baseline.correct_neutral(faces, ["a", "b", "c"], neutral, persons)
    np.testing.assert_allclose(run.reference, r, rtol=1e-12)
    with pytest.raises(FerTfError, match="no faces"):
        baseline.people_reference(np.zeros((0, 7)), [])
    with pytest.raises(FerTfError, match="2 person id"):
        baseline.people_reference(neutral, ["a", "b"])


def test_reference_array():
    p = random_probabilities(4, seed=12)
    ref = baseline.reference_offset(random_probabilities(50, seed=13))
    assert ref.shape == (7,)
    result = baseline.correct_self(p, ["a", "a", "b", "b"], evidence="faces", reference=ref)
    np.testing.assert_allclose(result.reference, ref)


@pytest.mark.parametrize("call, message", [
    (lambda: baseline.correct_self(np.zeros((0, 7)), []), None),
    (lambda: baseline.correct_self(random_probabilities(3), ["a", "b"]), "3 face"),
    (lambda: baseline.correct_self(random_probabilities(3), None), "person id"),
    (lambda: baseline.correct_self(np.ones(7), ["a"]), "shape"),
    (lambda: baseline.correct_self(-random_probabilities(2), ["a", "a"]), ">= 0"),
    (lambda: baseline.correct_self(random_probabilities(2), ["a", "a"], space="embedding"), "space"),
    (lambda: baseline.correct_self(random_probabilities(2), ["a", "a"], shrinkage=-1), "shrinkage"),
    (lambda: baseline.correct_self(random_probabilities(2), ["a", "a"], reference="global"), "reference"),
    (lambda: baseline.correct_self(random_probabilities(2), ["a", "a"], reference=np.zeros(3)), "reference"),
    (lambda: baseline.correct_neutral(random_probabilities(2), ["a", "a"], random_probabilities(1, c=5), ["a"]),
     "classes"),
    (lambda: baseline.correct_neutral(random_probabilities(2), ["a", "a"], random_probabilities(2), ["a"]),
     "neutral photos"),
    (lambda: baseline.offset(np.zeros((0, 7))), "no faces"),
])
def test_bad_input(call, message):
    if message is None:  # no faces at all: an empty result, not an error
        result = call()
        assert result.probabilities.shape == (0, 7) and result.predicted.shape == (0,)
        return
    with pytest.raises(FerTfError, match=message):
        call()


def test_subject_bootstrap():
    values = np.array([1.0, 1.0, 0.0, 0.0, 1.0, -1.0])
    subjects = np.array(["a", "a", "b", "b", "c", "c"])
    lo, hi = subject_bootstrap(values, subjects, samples=2000)
    assert lo <= values.mean() <= hi
    assert subject_bootstrap(values, np.full(6, "a")) == (None, None)
    lo, hi = subject_bootstrap(np.ones(6), subjects)
    assert lo == hi == 1.0
    with pytest.raises(ValueError, match="subject ids"):
        subject_bootstrap(values, subjects[:3])
