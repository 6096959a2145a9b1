"""Who is who: each face's person in photos and videos, named by enrolment, and a person's own
expression baseline (:meth:`Recognizer.predict_people <fer_tf.deploy.recognizer.Recognizer.predict_people>`,
``fer-tf predict --people``).

**Photos and folders** (:func:`predict_people`): every face of the run is detected, aligned and
classified as :meth:`Recognizer.predict` does, and embedded
(:class:`~fer_tf.people.embedding.IdentityEmbedder`: dlib's descriptor on our mesh landmarks). The
faces with a vector are grouped into people (:func:`fer_tf.people.grouping.group`: the number of
people comes from the run's own distances); enrolled names go on the groups that match them
(:func:`fer_tf.people.grouping.enroll`), the others are ``person-1``, ``person-2``, ... in order of
first appearance. A face too small or too blurred for a reliable embedding gets ``person: None``
and a ``person_reason``: it is never put into a person at random.

**Videos** (:class:`VideoPeople`, used by :class:`~fer_tf.deploy.video.VideoStream`): the faces of
each frame are followed by :class:`fer_tf.people.tracking.Tracker` (box overlap, embeddings only
where the boxes cannot tell), so each face has a ``track`` and a ``person``. A person's name is
decided on their first embedding: an enrolled name when one is within the tracker's
``same_person`` distance, else the next ``person-N``. People are numbered per video.

**Baselines** (:func:`correct_records`): ``"self"`` corrects each face by its person's own faces
in the run (:func:`fer_tf.people.baseline.correct_self`); neutral photos are matched to the people
of the run by embedding (no names needed: each photo goes to the person whose mean vector is
nearest, when closer than the grouping's cut) and correct that person's faces
(:func:`~fer_tf.people.baseline.correct_neutral`; its reference is the mean offset of the run's
people with a neutral photo, or, when fewer than two have one, the model's stored reference:
:func:`stored_reference`). With a baseline, ``expression`` and
``probabilities`` are the corrected ones and ``raw_expression`` / ``raw_probabilities`` keep the
model's own; faces without a person are never corrected.

**Summaries** (:func:`person_summary`): per person, faces, share of the run's identified faces,
and count, share and (videos) seconds in each expression.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import pathlib

import numpy as np

from fer_tf.media import image_files
from fer_tf.errors import ConfigError, ImageError

#: ``baseline="self"``: the person's own faces in the run.
SELF = "self"
#: Identity vectors kept per person of a video (to match neutral photos to them at the end).
VECTORS_PER_PERSON = 16


class NoUsableFaceError(ConfigError):
    """Reference photos (neutral photos, enrolled photos) without any face usable for identity."""


@dataclasses.dataclass
class References:
    """Reference photos, one face each (the largest): identity ``vectors`` ``[m, 128]``, the
    model's ``probabilities`` ``[m, C]`` on them, ``sources`` (a label per vector) and
    ``problems`` (``(label, reason)`` per photo that gave no usable face)."""

    vectors: np.ndarray
    probabilities: np.ndarray
    sources: list
    problems: list

    def __len__(self):
        return len(self.vectors)


def photo_sources(photos, what="image"):
    """``[(source, label)]`` of ``photos``: a path (an image file, or a folder: its images,
    recursively, sorted), an image array, or a list of these; arrays are labelled
    ``<what>-1``, ``<what>-2``, ... Folders without images give ``(None, folder)``."""
    if isinstance(photos, (str, os.PathLike)):
        photos = [photos]
    elif isinstance(photos, np.ndarray):
        photos = list(photos) if photos.ndim == 4 else [photos]
    out = []
    for i, item in enumerate(photos, 1):
        if isinstance(item, (str, os.PathLike)):
            path = pathlib.Path(item)
            if path.is_dir():
                files = image_files(path)
                out.extend((f, str(f)) for f in files)
                if not files:
                    out.append((None, str(path)))
            else:
                out.append((path, str(path)))
        else:
            out.append((item, f"{what}-{i}"))
    return out


def _rgb(source, label, max_pixels):
    if source is None:
        raise ImageError(label, "folder holds no image files")
    if isinstance(source, (str, os.PathLike)):
        from fer_tf.data.images import load_image_rgb  # deferred: PIL

        return load_image_rgb(source, max_pixels=max_pixels)
    from fer_tf.data.images import as_uint8_rgb  # deferred: PIL

    return as_uint8_rgb(source, label)


def default_embedder():
    """An :class:`~fer_tf.people.embedding.IdentityEmbedder` with its measured defaults."""
    from fer_tf.people.embedding import IdentityEmbedder  # deferred: dlib

    return IdentityEmbedder()


def references(recognizer, photos, embedder=None, what="reference photos"):
    """:class:`References` of ``photos`` (see :func:`photo_sources`): the largest face of each."""
    from fer_tf.people.embedding import DIMENSIONS  # deferred: PIL (through embedding)

    embedder = embedder or default_embedder()
    vectors, probs, sources, problems = [], [], [], []
    for source, label in photo_sources(photos, "photo"):
        try:
            rgb = _rgb(source, label, recognizer.max_pixels)
        except ImageError as exc:
            problems.append((label, exc.reason))
            continue
        aligned, _ = recognizer._align(rgb, label)
        if not aligned:
            problems.append((label, "no face found"))
            continue
        result = embedder.embed(rgb, aligned[0].face)
        if not result.ok:
            problems.append((label, result.message))
            continue
        vectors.append(result.vector)
        probs.append(recognizer.probabilities(aligned[0].image[None])[0])
        sources.append(label)
    classes = len(recognizer.labels)
    return References(np.stack(vectors) if vectors else np.zeros((0, DIMENSIONS), np.float32),
                      np.stack(probs) if probs else np.zeros((0, classes), np.float32),
                      sources, problems)


def require_faces(refs, what):
    """``refs`` when it holds at least one usable face, else a :class:`NoUsableFaceError` that
    says why each photo gave none (the first few)."""
    if len(refs):
        return refs
    from fer_tf.people.embedding import MIN_EYE_DISTANCE  # deferred: PIL (through embedding)

    if not refs.problems:
        raise NoUsableFaceError(f"{what}: no photos given")
    why = "; ".join(f"{label}: {reason}" for label, reason in refs.problems[:3])
    more = f" (and {len(refs.problems) - 3} more)" if len(refs.problems) > 3 else ""
    raise NoUsableFaceError(f"{what}: no face usable for identity ({why}{more}); give photos where the face is clear and its "
                            f"eyes at least {MIN_EYE_DISTANCE:g} pixels apart")


def enrolment_folder(folder):
    """``{name: [photo paths]}`` of an enrolment folder: one subfolder per name (its images), or
    one image per name at the top (the file's stem is the name; ``alice.jpg``, ``alice.png``
    both go to ``alice``)."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"--enroll {folder}: not a folder; give a folder with one subfolder or one "
                          "image per person (the name is the subfolder's name or the file's stem)")
    names = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            photos = image_files(entry)
            if photos:
                names.setdefault(entry.name, []).extend(photos)
        elif entry.is_file() and entry in image_files(folder):
            names.setdefault(entry.stem, []).append(entry)
    if not names:
        raise ConfigError(f"--enroll {folder}: no images in it; give one subfolder or one image per "
                          "person (the name is the subfolder's name or the file's stem)")
    return names


def enrolment(recognizer, enroll, embedder=None):
    """``{name: References}`` of ``enroll`` (``{name: photos}``, or the path of an enrolment
    folder, :func:`enrolment_folder`); a name without a usable face raises
    :class:`NoUsableFaceError`."""
    if enroll is None:
        return {}
    if isinstance(enroll, (str, os.PathLike)):
        enroll = enrolment_folder(enroll)
    out = {}
    for name, photos in enroll.items():
        refs = photos if isinstance(photos, References) else references(recognizer, photos, embedder)
        out[str(name)] = require_faces(refs, f"enrolled name {name!r}")
    return out


def neutral_references(recognizer, baseline, embedder=None):
    """``None`` for no baseline or ``"self"``, else the :class:`References` of the neutral photos
    (a :class:`NoUsableFaceError` when none gives a usable face)."""
    if baseline is None or (isinstance(baseline, str) and baseline == SELF):
        return None
    if isinstance(baseline, References):
        return require_faces(baseline, "baseline neutral photos")
    if isinstance(baseline, str) and not os.path.exists(baseline):
        raise ConfigError(f"baseline {baseline!r}: not 'self' and no such file or folder; give "
                          "'self', neutral photos (paths, a folder or arrays), or None")
    return require_faces(references(recognizer, baseline, embedder), "baseline neutral photos")


def match_people(vectors, people, threshold):
    """The person (a key of ``people``: ``{person: [k, 128] vectors}``) whose mean vector is
    nearest each of ``vectors`` ``[m, 128]`` when closer than ``threshold``, else ``None``."""
    from fer_tf.people.embedding import distances  # deferred: PIL (through embedding)

    names = list(people)
    if not names or not len(vectors):
        return [None] * len(vectors)
    means = np.stack([np.mean(np.asarray(people[n], np.float64), axis=0) for n in names])
    d = distances(vectors, means)
    return [names[int(row.argmin())] if row.min() < threshold else None for row in d]


# -- baseline and summaries ------------------------------------------------------------------


def _rounded(labels, probs):
    return {name: round(float(p), 6) for name, p in zip(labels, probs)}


#: The sidecar key of a model's stored neutral reference (pipelines/web_reference.py writes it).
NEUTRAL_REFERENCE = "neutral_reference"


def stored_reference(metadata, labels):
    """The reference offset ``r`` stored with a model (its sidecar's ``neutral_reference``: the
    mean offset of a population's neutral photos, e.g. the 15 Yale subjects', scored by that
    model), as ``(r [C], description)``; ``(None, None)`` when the model has none for these labels
    in the correction's space."""
    from fer_tf.people.baseline import NEUTRAL_DEFAULTS  # deferred: only with a baseline

    ref = (metadata or {}).get(NEUTRAL_REFERENCE)
    if not isinstance(ref, dict) or list(ref.get("labels") or ()) != list(labels):
        return None, None
    if ref.get("space") != NEUTRAL_DEFAULTS["space"]:
        return None, None
    values = np.asarray(ref.get("reference") or (), np.float64)
    if values.shape != (len(labels),) or not np.all(np.isfinite(values)):
        return None, None
    return values, ref.get("description") or "stored with the model"


def correct_records(records, labels, baseline, neutral=None, people_vectors=None, threshold=None,
                    key="probabilities", also=(), reference=None):
    """Apply a baseline to face ``records`` (dicts with ``person`` and ``key``), in place.

    ``baseline``: ``None`` (nothing done), ``"self"``, or neutral photos whose
    :class:`References` is ``neutral``, matched to ``people_vectors`` (``{person: vectors}``) within
    ``threshold``. Offsets come from ``key``'s probabilities; ``also`` names more probability keys
    (a video's smoothed ``probabilities`` beside ``frame_probabilities``) shifted by the same
    offsets. Every record keeps the model's values as ``raw_<key>`` (and ``raw_expression``
    beside ``expression``, which follows ``probabilities``); faces without a person, and people
    without evidence or a matched neutral photo, keep their raw values. Returns what was done:
    ``{"baseline", "people_corrected"[, "neutral_photos", "reference", "note"]}`` (``note``: why
    nothing was corrected when one person alone had a baseline).

    Neutral photos correct against the mean offset of the run's people that have one; with one
    such person that mean is their own offset and would correct nothing, so ``reference`` (a
    model's :func:`stored_reference`, ``(r, description)``) is used instead when given, and
    ``"reference"`` in the result says which.
    """
    from fer_tf.people import baseline as correction  # deferred: only with a baseline

    if baseline is None:
        return {"baseline": None}
    persons = [r.get("person") for r in records]
    raw = np.array([[r[key][n] for n in labels] for r in records], np.float64).reshape(-1, len(labels))
    if neutral is None:
        result = correction.correct_self(raw, persons)
        info = {"baseline": SELF}
    else:
        matched = match_people(neutral.vectors, people_vectors or {}, threshold)
        use = [i for i, p in enumerate(matched) if p is not None]
        info = {"baseline": "neutral", "neutral_photos": dict(zip(neutral.sources, matched))}
        options = {}
        stored, description = reference if reference is not None else (None, None)
        if use and stored is not None and len({matched[i] for i in use}) < 2:
            options["reference"] = stored
            info["reference"] = f"stored with the model: {description}"
        elif use:
            info["reference"] = "the run's people with a neutral photo"
        result = correction.correct_neutral(raw, persons, neutral.probabilities[use],
                                            [matched[i] for i in use], **options) if use else None
    # a person counts as corrected only when their shift is not zero: against the run's own
    # reference (the default), a run whose only evidence is one person's has nothing to correct
    info["people_corrected"] = [] if result is None else [
        p for p, w in result.weights.items() if w > 0 and np.any(result.offsets[p] != 0)]
    with_evidence = [] if result is None else [p for p, w in result.weights.items() if w > 0]
    if len(with_evidence) == 1 and not info["people_corrected"]:
        info["note"] = (f"{with_evidence[0]} is the only person with a baseline in this run: the "
                        "correction is relative to the run's people, so nothing was corrected; run "
                        "the faces of two or more people together"
                        + ("" if info.get("baseline") == SELF else
                           ", or use a model with a stored neutral reference (the shipped one has it)"))
    corrected = {key: raw if result is None else result.probabilities}
    for name in also:
        probs = np.array([[r[name][n] for n in labels] for r in records], np.float64)
        corrected[name] = probs if result is None else _shift(probs, persons, result)
    for i, r in enumerate(records):
        for name, probs in corrected.items():
            r[f"raw_{name}"] = r[name]
            if r.get("person") is not None:
                r[name] = _rounded(labels, probs[i])
        if "probabilities" in corrected:
            r["raw_expression"] = r["expression"]
            r["expression"] = max(labels, key=lambda n: r["probabilities"][n])
    return info


def _shift(probabilities, persons, result):
    """``probabilities`` shifted by the per-person offsets and weights of a ``BaselineResult``."""
    from fer_tf.people.baseline import log_probabilities, softmax  # deferred: only with a baseline

    logits = log_probabilities(probabilities)
    for i, person in enumerate(persons):
        if person in result.offsets:
            logits[i] -= result.weights[person] * result.offsets[person]
    return softmax(logits) if len(logits) else logits


def person_summary(records, labels, seconds_per_face=None):
    """``{person: {"faces", "share", "expressions", "expression_shares"[, "seconds",
    "expression_seconds"]}}`` of face ``records`` with a ``person`` (in order of first
    appearance): faces, share of all faces with a person, the count and share of each
    expression, and with ``seconds_per_face`` (a video's time per processed frame) the time in
    each."""
    counts = collections.OrderedDict()
    for r in records:
        if r.get("person") is not None:
            counts.setdefault(r["person"], collections.Counter())[r["expression"]] += 1
    return _summary(counts, labels, seconds_per_face)


def _summary(counts, labels, seconds_per_face):
    total = sum(sum(c.values()) for c in counts.values())
    out = {}
    for person, c in counts.items():
        n = sum(c.values())
        entry = {"faces": n, "share": round(n / total, 6),
                 "expressions": {name: c.get(name, 0) for name in labels},
                 "expression_shares": {name: round(c.get(name, 0) / n, 6) for name in labels}}
        if seconds_per_face:
            entry["seconds"] = round(n * seconds_per_face, 3)
            entry["expression_seconds"] = {name: round(c.get(name, 0) * seconds_per_face, 3)
                                           for name in labels}
        out[person] = entry
    return out


# -- photos ----------------------------------------------------------------------------------


def predict_people(recognizer, inputs, baseline=None, enroll=None, embedder=None, progress=None):
    """Expressions and people of every face in ``inputs`` (see :meth:`Recognizer.predict_people
    <fer_tf.deploy.recognizer.Recognizer.predict_people>`).

    Returns ``{"images": [{"input", "faces": [...]} or {"input", "error"}], "faces": [...],
    "people": {person: summary}, "unmatched": [enrolled names that matched no face],
    "baseline": {...}}``; each face record is ``{"input", "face", "box", "person"[,
    "person_reason"], "expression", "probabilities"[, "raw_expression", "raw_probabilities"]}``.
    ``progress`` (a :class:`fer_tf.progress.Bar`) advances once per input.
    """
    # deferred: PIL (through embedding)
    from fer_tf.people.grouping import REFERENCE_THRESHOLD, enroll as put_names, group

    embedder = embedder or default_embedder()
    neutral = neutral_references(recognizer, baseline, embedder)
    enrolled = enrolment(recognizer, enroll, embedder)
    images, records, vectors = [], [], []
    for source, label in photo_sources(inputs, "image"):
        try:
            rgb = _rgb(source, label, recognizer.max_pixels)
        except ImageError as exc:
            images.append({"input": label, "error": exc.reason})
        else:
            aligned, found = recognizer._align(rgb, label)
            if not aligned:
                images.append({"input": label, "error": "no face found"})
            else:
                faces = []
                for k, (a, entry) in enumerate(zip(aligned, recognizer._classify(aligned, rgb.shape)), 1):
                    result = embedder.embed(rgb, a.face)
                    record = {"input": label, "face": k, "box": entry["box"], "person": None}
                    if result.ok:
                        vectors.append(result.vector)
                    else:
                        record["person_reason"] = result.message
                    record["_usable"] = result.ok
                    record.update(expression=entry["expression"], probabilities=entry["probabilities"])
                    faces.append(record)
                image = {"input": label, "faces": faces}
                if found > len(faces):
                    image["faces_found"] = found
                images.append(image)
                records.extend(faces)
        if progress is not None:
            progress.advance()
    usable = [r for r in records if r.pop("_usable")]
    vectors = np.stack(vectors) if vectors else np.zeros((0, 128), np.float32)
    grouping = group(vectors)
    if enrolled:
        names, unmatched = put_names(grouping, vectors, {n: r.vectors for n, r in enrolled.items()})
    else:
        names, unmatched = grouping.names(), []
    for record, name in zip(usable, names):
        record["person"] = name
    threshold = grouping.threshold if np.isfinite(grouping.threshold) else REFERENCE_THRESHOLD
    people_vectors = collections.OrderedDict()
    for name, v in zip(names, vectors):
        people_vectors.setdefault(name, []).append(v)
    info = correct_records(records, recognizer.labels, baseline, neutral, people_vectors, threshold,
                           reference=stored_reference(recognizer.metadata, recognizer.labels))
    if neutral is not None and neutral.problems:
        info["neutral_problems"] = dict(neutral.problems)
    return {"images": images, "faces": records, "people": person_summary(records, recognizer.labels),
            "unmatched": unmatched, "baseline": info,
            "grouping": {"people": len(people_vectors), "threshold": float(grouping.threshold),
                         "method": grouping.method}}


# -- videos ----------------------------------------------------------------------------------


class _Recorder:
    """An embedder that remembers the vectors it gave on the current frame, by face object."""

    def __init__(self, embedder):
        self.embedder = embedder
        self.vectors = {}

    def embed(self, image, face):
        result = self.embedder.embed(image, face)
        if result.ok:
            self.vectors[id(face)] = result.vector
        return result


class VideoPeople:
    """Tracks and people of one video's faces, frame by frame (module docstring).

    Args:
        embedder: an :class:`~fer_tf.people.embedding.IdentityEmbedder` (default: a new one).
        enrolled: ``{name: References}`` (:func:`enrolment`).
        tracker_options: keyword arguments of :class:`fer_tf.people.tracking.Tracker`.

    :meth:`label` is called by :class:`~fer_tf.deploy.video.VideoStream` with each frame's faces;
    afterwards :attr:`vectors` holds up to :data:`VECTORS_PER_PERSON` identity vectors per person,
    :meth:`unmatched` the enrolled names no one matched, and :attr:`tracker` its ``counts``.
    """

    def __init__(self, embedder=None, enrolled=None, **tracker_options):
        from fer_tf.people.tracking import Tracker  # deferred: only with people

        self._recorder = _Recorder(embedder or default_embedder())
        self.tracker = Tracker(self._recorder, **tracker_options)
        self.enrolled = dict(enrolled or {})
        self.vectors = collections.OrderedDict()
        self._names = {}
        self._numbered = 0
        self._counts = collections.OrderedDict()

    def _name(self, person, vector):
        if person not in self._names:
            name = None
            if vector is not None and self.enrolled:
                from fer_tf.people.embedding import distances  # deferred: PIL (through embedding)

                near = {n: float(distances(vector[None], r.vectors).min()) for n, r in self.enrolled.items()}
                best = min(near, key=near.get)
                if near[best] <= self.tracker.same_person:
                    name = best
            if name is None:
                self._numbered += 1
                name = f"person-{self._numbered}"
            self._names[person] = name
        return self._names[person]

    def label(self, rgb, aligned, faces):
        """Set ``track``, ``person`` (and ``person_reason`` when ``None``) on each face dict of a
        frame; ``aligned`` are the faces' ``AlignedFace`` objects, in the same order."""
        self._recorder.vectors = {}
        seen = self.tracker.update(rgb, [a.face for a in aligned])
        for face, a, s in zip(faces, aligned, seen):
            face["track"] = s.track
            if s.person is None:
                face["person"] = None
                face["person_reason"] = _reason_text(s.reason)
                continue
            vector = self._recorder.vectors.get(id(a.face))
            name = self._name(s.person, vector)
            face["person"] = name
            if vector is not None:
                kept = self.vectors.setdefault(name, [])
                if len(kept) >= VECTORS_PER_PERSON:
                    del kept[1]  # keep the first and the latest
                kept.append(vector)

    def observe(self, faces):
        """Count the (smoothed) expression of each face with a person, for :meth:`summary`."""
        for face in faces:
            if face.get("person") is not None:
                self._counts.setdefault(face["person"], collections.Counter())[face["expression"]] += 1

    def summary(self, labels, seconds_per_face=None):
        """``{"people": per-person summary, "unmatched": enrolled names, "embeddings": the
        tracker's counts}`` of the frames seen so far."""
        return {"people": _summary(self._counts, labels, seconds_per_face),
                "unmatched": self.unmatched(), "embeddings": dict(self.tracker.counts)}

    def unmatched(self):
        """Enrolled names that no person of the video matched."""
        used = set(self._names.values())
        return sorted(n for n in self.enrolled if n not in used)


def _reason_text(reason):
    return {"small": "face too small for identity", "blurred": "face too blurred for identity",
            "no embedder": "no identity embedder"}.get(reason, reason or "no identity yet")


def finish_video(entry, labels, people, baseline=None, neutral=None, every=1, reference=None):
    """Correct a whole video's ``entry`` (``{"fps", "frames", "summary"}``, every frame) by a
    baseline, in place, once all its frames are known, and recount ``summary["people"]``.

    Offsets come from each face's own ``frame_probabilities``; the smoothed ``probabilities``
    are shifted by the same offsets. Neutral photos are matched to the video's people
    (``people``: its :class:`VideoPeople`) within the tracker's ``same_person`` distance;
    ``every``: the frames' spacing (for the seconds in each expression); ``reference``: the
    model's :func:`stored_reference`, for a video with one person.
    """
    if baseline is None:
        return entry
    records = [face for frame in entry["frames"] for face in frame["faces"]]
    info = correct_records(records, labels, baseline, neutral, people.vectors,
                           people.tracker.same_person, key="frame_probabilities",
                           also=("probabilities",), reference=reference)
    summary = entry["summary"]
    seconds = every / entry["fps"] if entry.get("fps") else None
    summary["people"] = person_summary(records, labels, seconds)
    summary["expressions"] = dict(collections.Counter(r["expression"] for r in records).most_common())
    summary["baseline"] = info
    return entry
