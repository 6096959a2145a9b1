"""A person's own expression baseline: correct each face's scores by the person they belong to.

Pure NumPy, on per-face probability arrays ``[n, C]`` plus one person id per face. Two baselines:

- :func:`correct_self` (``--baseline self``): the person's own faces in the run;
- :func:`correct_neutral` (``--baseline DIR``): the person's enrolled neutral photo(s).

The rule, for a face ``i`` of person ``P`` with log-probabilities ``L_i``::

    L'_i = L_i - w_P * (o_P - r)          probabilities'_i = softmax(L'_i)

- ``o_P`` is the person's **offset**: the mean log-probability vector of the person's faces
  (``self``) or of their neutral photos (``neutral``).
  ``estimator="balanced"`` (self only) averages the mean of each *predicted* expression group
  instead of the faces, so a person whose faces are 80% one expression counts that expression
  once, not four times; ``estimator="mean"`` is the plain mean.
  ``space="logits"`` averages log-probabilities (the correction is a shift of the logits: softmax
  ignores the per-face constant of a log-softmax); ``space="probabilities"`` averages the
  probabilities and takes the log of that mean (the correction divides each face's probabilities
  by the person's mean probabilities: the classic prior-shift adjustment).
- ``r`` is the **reference**: what an average person's offset looks like, so that an average
  person is left as they are. ``"none"``: zeros (each person's faces are pushed towards equal
  average scores for every class); ``"run"``: the mean offset of the people in the run (a run of
  one person is then never corrected); or an array ``[C]`` of log-probabilities, e.g.
  :func:`reference_offset` of a reference set of faces.
- ``w_P = e / (e + k)`` is the **evidence weight** (shrinkage towards no correction). ``e`` is
  the person's evidence: ``evidence="faces"``: their faces minus one (one face: no correction);
  ``evidence="expressions"``: their distinct predicted expressions minus one, so a person seen in
  one expression only is never corrected and keeps it; ``neutral``: the number of neutral photos.
  ``k = shrinkage``; ``k = 0`` is full correction whenever ``e > 0``.

Defaults are the options measured best in ``reports/people/`` (``python pipelines/people_baseline.py``).
Faces whose person is unknown (``None``) are left uncorrected. The raw probabilities are always
returned beside the corrected ones.

Correcting the network's last hidden layer (its expression embedding) instead is the same rule:
the expression scores are a linear map of that layer, so subtracting a person's mean embedding
subtracts their mean logits (up to the layer's bias, a per-class constant that ``reference``
already covers).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fer_tf.errors import FerTfError

SPACES = ("logits", "probabilities")
ESTIMATORS = ("mean", "balanced")
EVIDENCE = ("faces", "expressions")
REFERENCES = ("none", "run")
#: Floor under probabilities before their log (a float32 softmax can underflow to 0).
FLOOR = 1e-12

#: Defaults of :func:`correct_self` and :func:`correct_neutral`: see ``reports/people/README.md``.
SELF_DEFAULTS = {"space": "logits", "estimator": "balanced", "evidence": "expressions",
                 "shrinkage": 0.0, "reference": "run"}
NEUTRAL_DEFAULTS = {"space": "logits", "shrinkage": 1.0, "reference": "run"}


class BaselineError(FerTfError, ValueError):
    """Bad input to a baseline correction (shapes, person ids, options)."""


@dataclass
class BaselineResult:
    """Corrected and raw probabilities of every face, and what was subtracted per person."""

    probabilities: np.ndarray  # [n, C] corrected
    raw_probabilities: np.ndarray  # [n, C] as given
    offsets: dict = field(default_factory=dict)  # person -> o_P - r, log-probabilities [C]
    weights: dict = field(default_factory=dict)  # person -> w_P in [0, 1]
    reference: np.ndarray | None = None  # r [C]

    @property
    def predicted(self):
        """Arg-max class index of every corrected face."""
        return np.argmax(self.probabilities, axis=1) if len(self.probabilities) else np.zeros(0, int)


def _probabilities(p, what):
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise BaselineError(f"{what}: expected a [faces, classes] array of probabilities with at least "
                            f"2 classes, got shape {list(p.shape)}")
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise BaselineError(f"{what}: probabilities must be finite and >= 0 (pass the model's softmax "
                            "output, not logits)")
    return p


def _persons(persons, n, what):
    persons = np.asarray(persons, dtype=object).reshape(-1) if persons is not None else None
    if persons is None or len(persons) != n:
        got = "none" if persons is None else len(persons)
        raise BaselineError(f"{what}: {got} person id(s) for {n} face(s); give one id per face "
                            "(None for a face whose person is unknown)")
    return persons


def log_probabilities(probabilities):
    """Natural log of ``probabilities`` floored at :data:`FLOOR` (float64)."""
    return np.log(np.maximum(np.asarray(probabilities, np.float64), FLOOR))


def softmax(logits):
    """Row-wise softmax (float64)."""
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _check_options(space, estimator=None, evidence=None, shrinkage=0.0, reference="none", classes=None):
    for name, value, allowed in (("space", space, SPACES), ("estimator", estimator, ESTIMATORS),
                                 ("evidence", evidence, EVIDENCE)):
        if value is not None and value not in allowed:
            raise BaselineError(f"{name}={value!r}: use one of {', '.join(allowed)}")
    if not np.isfinite(shrinkage) or shrinkage < 0:
        raise BaselineError(f"shrinkage={shrinkage!r}: use a number >= 0 (0: full correction)")
    if isinstance(reference, str):
        if reference not in REFERENCES:
            raise BaselineError(f"reference={reference!r}: use one of {', '.join(REFERENCES)} or an "
                                "array of log-probabilities, one per class")
    else:
        ref = np.asarray(reference, np.float64)
        if ref.shape != (classes,) or not np.all(np.isfinite(ref)):
            raise BaselineError(f"reference: expected {classes} finite log-probabilities, got shape "
                                f"{list(ref.shape)}")


def offset(probabilities, space="logits", estimator="mean"):
    """One person's offset ``o_P`` (log-probabilities ``[C]``) from their faces' probabilities."""
    p = _probabilities(probabilities, "offset")
    _check_options(space, estimator)
    if not len(p):
        raise BaselineError("offset: no faces; a person needs at least one face")
    groups = [p]
    if estimator == "balanced":
        predicted = np.argmax(p, axis=1)
        groups = [p[predicted == c] for c in np.unique(predicted)]
    if space == "logits":
        return np.mean([log_probabilities(g).mean(axis=0) for g in groups], axis=0)
    return log_probabilities(np.mean([g.mean(axis=0) for g in groups], axis=0)[None])[0]


def reference_offset(probabilities, space="logits", estimator="balanced"):
    """A reference ``r`` from a population of faces (any people): :func:`offset` of them all."""
    return offset(probabilities, space=space, estimator=estimator)


def people_reference(probabilities, persons, space=NEUTRAL_DEFAULTS["space"]):
    """The reference ``r`` that ``reference="run"`` gives these people enrolled together: the mean,
    over the people, of :func:`offset` of each one's faces (e.g. their neutral photos). A model
    stores it (``neutral_reference``) to correct one person, whose own offset would be the run's."""
    p = _probabilities(probabilities, "people_reference")
    persons = _persons(persons, len(p), "people_reference")
    _check_options(space, "mean")
    names, index = _index(persons)
    if not names:
        raise BaselineError("people_reference: no faces; it needs at least one person's faces")
    return np.mean([offset(p[index == j], space, "mean") for j in range(len(names))], axis=0)


def evidence_weight(evidence, shrinkage):
    """``e / (e + k)``, 0 where ``e <= 0`` (no evidence: no correction), 1 where ``k == 0 < e``."""
    e = np.maximum(np.asarray(evidence, np.float64), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.where(e > 0, e / (e + float(shrinkage)), 0.0)
    return w


def _index(persons):
    """``(names in order of first appearance, index of each face's person or -1 for None)``."""
    names, position = [], {}
    index = np.full(len(persons), -1, np.int64)
    for i, q in enumerate(persons):
        if q is None:
            continue
        j = position.get(q)
        if j is None:
            j = position[q] = len(names)
            names.append(q)
        index[i] = j
    return names, index


def _apply(raw, index, names, offsets, weights, reference):
    """Subtract ``w_P (o_P - r)`` from each known person's log-probabilities."""
    offsets = np.asarray(offsets, np.float64).reshape(len(names), raw.shape[1])
    weights = np.asarray(weights, np.float64).reshape(len(names))
    if isinstance(reference, str):
        reference = (offsets.mean(axis=0) if reference == "run" and len(offsets)
                     else np.zeros(raw.shape[1]))
    reference = np.asarray(reference, np.float64)
    shifts = offsets - reference
    logits = log_probabilities(raw)
    known = index >= 0
    logits[known] -= weights[index[known], None] * shifts[index[known]]
    corrected = raw.copy()
    if known.any():
        # faces of unknown people keep their raw probabilities exactly
        corrected[known] = softmax(logits[known])
    return BaselineResult(corrected, raw, dict(zip(names, shifts)),
                          {n: float(w) for n, w in zip(names, weights)}, reference)


def correct_self(probabilities, persons, space=SELF_DEFAULTS["space"],
                 estimator=SELF_DEFAULTS["estimator"], evidence=SELF_DEFAULTS["evidence"],
                 shrinkage=SELF_DEFAULTS["shrinkage"], reference=SELF_DEFAULTS["reference"]):
    """``--baseline self``: correct each face by the offset of its person's faces in the run.

    ``probabilities`` ``[n, C]``; ``persons`` one id per face (None: unknown, not corrected).
    Returns a :class:`BaselineResult`. See the module docstring for the rule and options.
    """
    raw = _probabilities(probabilities, "correct_self")
    persons = _persons(persons, len(raw), "correct_self")
    _check_options(space, estimator, evidence, shrinkage, reference, raw.shape[1])
    names, index = _index(persons)
    offsets, counts = [], []
    for j in range(len(names)):
        p = raw[index == j]
        offsets.append(offset(p, space, estimator))
        counts.append(len(p) if evidence == "faces" else len(np.unique(np.argmax(p, axis=1))))
    weights = evidence_weight(np.asarray(counts) - 1, shrinkage)
    return _apply(raw, index, names, offsets, weights, reference)


def correct_neutral(probabilities, persons, neutral_probabilities, neutral_persons,
                    space=NEUTRAL_DEFAULTS["space"], shrinkage=NEUTRAL_DEFAULTS["shrinkage"],
                    reference=NEUTRAL_DEFAULTS["reference"]):
    """``--baseline DIR``: correct each face by its person's enrolled neutral photo(s).

    ``neutral_probabilities`` ``[m, C]`` are the model's probabilities on the neutral photos and
    ``neutral_persons`` their person ids. People with no neutral photo, and unknown people, are
    left uncorrected; ``reference="run"`` is the mean offset of the enrolled people.
    """
    raw = _probabilities(probabilities, "correct_neutral")
    persons = _persons(persons, len(raw), "correct_neutral")
    neutral = _probabilities(neutral_probabilities, "correct_neutral: neutral photos")
    neutral_persons = _persons(neutral_persons, len(neutral), "correct_neutral: neutral photos")
    if neutral.shape[1] != raw.shape[1]:
        raise BaselineError(f"correct_neutral: the neutral photos have {neutral.shape[1]} classes, the "
                            f"faces {raw.shape[1]}; score both with the same model")
    _check_options(space, None, None, shrinkage, reference, raw.shape[1])
    names, neutral_index = _index(neutral_persons)
    offsets = [offset(neutral[neutral_index == j], space, "mean") for j in range(len(names))]
    weights = evidence_weight([np.sum(neutral_index == j) for j in range(len(names))], shrinkage)
    position = {n: j for j, n in enumerate(names)}
    # faces of people with no neutral photo (or unknown) are not corrected
    index = np.array([position.get(q, -1) if q is not None else -1 for q in persons], np.int64)
    return _apply(raw, index, names, offsets, weights, reference)
