"""Faces followed through a video: tracks by box overlap, people by identity embedding.

:class:`Tracker` is an online tracker: it sees the frames one at a time, each with the faces the
detector found in it (:meth:`FaceAligner.detect <fer_tf.preprocess.align.FaceAligner.detect>`'s
``Face`` objects, or ``AlignedFace``), and tells each face its **track** and its **person**:

- a *track* is one continuous sighting of a face. It survives short gaps: a track that finds no
  face for up to ``max_lost`` frames (a hand in front of the face, a missed detection) is still
  alive and takes the face back when it reappears; after that it ends.
- a *person* is the same face across tracks: when someone leaves the picture and comes back, the
  new track is given the person of the old one, by the distance between identity embeddings
  (:class:`~fer_tf.people.embedding.IdentityEmbedder`, dlib's descriptor).

Example::

    from fer_tf.preprocess.align import FaceAligner
    from fer_tf.people.embedding import IdentityEmbedder
    from fer_tf.people.tracking import Tracker

    tracker = Tracker(IdentityEmbedder())
    with FaceAligner(engine="litert") as aligner:
        for rgb in frames:
            faces = aligner.detect(rgb)
            for face, seen in zip(faces, tracker.update(rgb, faces)):
                print(seen.track, seen.person, seen.reason)  # person None: see ``reason``

**Embeddings only where they are needed.** An embedding costs far more than the rest of the tracker
(a ResNet run per face), so most frames are tracked by box overlap alone. A face is embedded when
the boxes cannot tell who it is (:meth:`Tracker.update` documents the cases): a new or returning
face, a face whose box overlaps no track well, a face near two tracks or beside another face (two
people crossing), a face taking back a track after a gap; and, so that a swap the boxes missed is
caught, a tracked face every ``refresh_every`` frames (a track that has no identity yet tries every
``retry_every`` frames). :attr:`Tracker.counts` keeps the tally.

**Matching.** Each frame, alive tracks (their box moved on by their speed) are paired with the
detections by a minimum-cost assignment (:func:`fer_tf.people.assignment.match_pairs`). A pair
where both sides have an identity costs ``0.5 (1 - IoU) + 0.5 d / same_person`` and is forbidden
when the embedding distance ``d`` is above ``same_person`` (a different person never continues a
track, even in the same place); a track that is lost may be taken back anywhere in the picture by
its identity; a track seen on the previous frame needs some overlap. A pair without an identity on
one side costs ``1 - IoU`` and needs ``IoU >= match_iou``. Detections left over start tracks.

**People.** A track's first embedding names its person: the nearest known person (smallest
distance to any of their stored embeddings, :attr:`gallery_size` per person) when closer than
``same_person`` and not in the picture on another track, else a new person. People are numbered 1,
2, ... in order of first appearance; tracks likewise.

**Faces without an identity.** A face too small or too blurred for a reliable embedding (the
embedder's quality gate: ``reason`` ``"small"`` or ``"blurred"``) is tracked by box overlap only:
its track keeps ``person`` ``None`` with that reason, and it is never put into a person by
embedding. A track that had a person keeps it while its face is followed by overlap (the boxes
carry the identity). Without an embedder (``Tracker(None)``) all tracks are IoU-only and
``reason`` is ``"no embedder"``.

Pure NumPy apart from the embedder; not thread-safe (one tracker per video).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from fer_tf.errors import ConfigError
from fer_tf.people.assignment import match_pairs
from fer_tf.people.embedding import distances

#: Largest embedding distance between two faces of one person. Stricter than dlib's 0.6 (LFW): on
#: KDEF the distance at a 0.1% false-match rate is 0.49 and at 1% 0.54, on Yale 0.40 and 0.48
#: (reports/people/identity.json); a tracker compares each face with few people, often for many
#: frames, so it needs a low false-match rate. reports/people/tracking.md measures it in videos.
SAME_PERSON = 0.5
#: Weight of a new displacement in a track's speed (exponential smoothing of detector jitter).
SPEED_SMOOTHING = 0.3
#: IoU at which a detection continues a track by overlap alone.
MATCH_IOU = 0.3
#: Overlap (IoU) above which a track or another detection counts as "near" a detection: two tracks
#: near one detection, or two detections near each other, make the boxes ambiguous.
NEAR_IOU = 0.1
#: Frames a track survives without a face.
MAX_LOST = 25
#: A tracked face is embedded again after this many frames (catches swaps the boxes missed).
REFRESH_EVERY = 50
#: A track with no identity yet (its face too small or blurred so far) tries every this many frames.
RETRY_EVERY = 5
#: Stored embeddings per person (the first one and the latest ones).
GALLERY_SIZE = 8
#: Weight of the box overlap against the embedding distance in a pair's cost.
IOU_WEIGHT = 0.5


@dataclasses.dataclass(frozen=True)
class TrackedFace:
    """What :meth:`Tracker.update` says about one face.

    ``track``: track id (1, 2, ...); ``person``: person id (1, 2, ...) or ``None`` when the track has
    no identity; ``reason``: why ``person`` is ``None`` (``"small"``, ``"blurred"``: the embedder's
    quality gate; ``"no embedder"``), else ``None``; ``embedded``: whether this face was embedded on
    this frame.
    """

    track: int
    person: int | None
    reason: str | None
    embedded: bool

    def __iter__(self):  # ``track, person = seen``
        return iter((self.track, self.person))


@dataclasses.dataclass
class _Track:
    id: int
    box: np.ndarray  # [4] x, y, w, h where last seen
    last_frame: int
    last_try: int  # frame of the last embedding attempt
    velocity: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(2))
    hits: int = 1  # frames with a face
    rejected: set = dataclasses.field(default_factory=set)  # ids of tracks whose face is not this one's
    person: int | None = None
    reason: str | None = None


def box_iou(a, b) -> np.ndarray:
    """IoU of every box of ``a`` ([n, 4] x, y, w, h) with every box of ``b`` ([m, 4]): [n, m]."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ix = np.minimum(a[:, None, 0] + a[:, None, 2], b[None, :, 0] + b[None, :, 2]) - np.maximum(
        a[:, None, 0], b[None, :, 0])
    iy = np.minimum(a[:, None, 1] + a[:, None, 3], b[None, :, 1] + b[None, :, 3]) - np.maximum(
        a[:, None, 1], b[None, :, 1])
    inter = np.clip(ix, 0, None) * np.clip(iy, 0, None)
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


class Tracker:
    """Online face tracker over per-frame detections (see the module docstring).

    Args:
        embedder: an object with ``embed(image, face) -> IdentityResult``
            (:class:`~fer_tf.people.embedding.IdentityEmbedder`), or ``None`` for IoU-only tracks.
        same_person: largest embedding distance between two faces of one person
            (:data:`SAME_PERSON`).
        match_iou: IoU at which a face continues a track by overlap alone.
        max_lost: frames a track survives without a face.
        refresh_every: a tracked face is embedded again after this many frames (0: never).
        retry_every: a track without identity tries to get one every this many frames.
        gallery_size: embeddings kept per person.
    """

    def __init__(self, embedder, same_person=SAME_PERSON, match_iou=MATCH_IOU, max_lost=MAX_LOST,
                 refresh_every=REFRESH_EVERY, retry_every=RETRY_EVERY, gallery_size=GALLERY_SIZE):
        for name, value, low in (("same_person", same_person, 0), ("match_iou", match_iou, 0),
                                 ("max_lost", max_lost, 0), ("refresh_every", refresh_every, 0),
                                 ("retry_every", retry_every, 1), ("gallery_size", gallery_size, 1)):
            if not value >= low:
                raise ConfigError(f"Tracker: {name} must be {low} or more, got {value!r}")
        if not match_iou <= 1:
            raise ConfigError(f"Tracker: match_iou must be at most 1, got {match_iou!r}")
        self.embedder = embedder
        self.same_person = float(same_person)
        self.match_iou = float(match_iou)
        self.max_lost = int(max_lost)
        self.refresh_every = int(refresh_every)
        self.retry_every = int(retry_every)
        self.gallery_size = int(gallery_size)
        self.reset()

    def reset(self):
        """Forget every track and person (a new video)."""
        self.frame = -1
        self._tracks = []  # alive tracks
        self._gallery = {}  # person id -> list of vectors
        self._next_track = 1
        self._next_person = 1
        #: Totals: ``frames``, ``attempts`` (embedder calls), ``vectors`` (embeddings obtained).
        self.counts = {"frames": 0, "attempts": 0, "vectors": 0}

    # -- identities ----------------------------------------------------------------------------
    def _references(self, track):
        return self._gallery[track.person] if track.person is not None else ()

    def _distance(self, vector, refs) -> float:
        if vector is None or not len(refs):
            return float("nan")
        return float(distances(vector[None], np.stack(refs)).min())

    def _remember(self, person, vector):
        gallery = self._gallery.setdefault(person, [])
        if len(gallery) >= self.gallery_size:
            del gallery[1]  # keep the first, drop the oldest of the others
        gallery.append(vector)

    def _identify(self, track, vector, busy):
        """Give ``track`` a person from its first embedding ``vector``: the nearest known person
        not in ``busy`` when close enough, else a new one; that person's other tracks end."""
        best, best_d = None, self.same_person
        for person, gallery in self._gallery.items():
            if person in busy:
                continue
            d = self._distance(vector, gallery)
            if d <= best_d:
                best, best_d = person, d
        if best is None:
            best = self._next_person
            self._next_person += 1
        track.person, track.reason = best, None
        self._remember(best, vector)
        self._tracks = [t for t in self._tracks if t is track or t.person != best]

    def _embed(self, frame_rgb, face):
        self.counts["attempts"] += 1
        result = self.embedder.embed(frame_rgb, face)
        if result.vector is None:
            return None, result.reason or "unusable"
        self.counts["vectors"] += 1
        return np.asarray(result.vector, dtype=np.float64), None

    # -- one frame -----------------------------------------------------------------------------
    def _predicted(self, tracks):
        boxes = np.array([t.box for t in tracks], dtype=np.float64).reshape(-1, 4)
        if len(tracks):
            steps = np.array([self.frame - t.last_frame for t in tracks], dtype=np.float64)
            boxes[:, :2] += np.stack([t.velocity for t in tracks]) * steps[:, None]
        return boxes

    def _needs_embedding(self, iou, near_dets, tracks):
        """``(need, excluded)``: [n] bool, the detections that boxes alone cannot assign (see
        :meth:`update`); [tracks, n] bool, lost tracks already told apart from the face of a track
        seen on the previous frame near that detection (not to be given it by overlap alone)."""
        near = iou >= NEAR_IOU  # [tracks, detections]
        need = np.zeros(iou.shape[1], bool)
        excluded = np.zeros(iou.shape, bool)
        for j in range(iou.shape[1]):
            candidates = np.flatnonzero(near[:, j])
            held = {tracks[i].id for i in candidates if self.frame - tracks[i].last_frame == 1}
            for i in candidates:
                excluded[i, j] = self.frame - tracks[i].last_frame > 1 and bool(tracks[i].rejected & held)
            candidates = [i for i in candidates if not excluded[i, j]]
            if len(candidates) != 1 or near_dets[j]:
                need[j] = True
                continue
            i = candidates[0]
            t = tracks[i]
            every = self.refresh_every if t.person is not None else self.retry_every
            need[j] = (iou[i, j] < self.match_iou  # weak overlap
                       or near[i].sum() > 1  # the track is near another detection too
                       or self.frame - t.last_frame > 1  # taking a track back after a gap
                       or (every > 0 and self.frame - t.last_try >= every))  # refresh / retry
        return need, excluded

    def update(self, frame_rgb, faces) -> list:
        """Track the ``faces`` (objects with ``.box`` = x, y, w, h, as the detector gives them) of
        the next frame ``frame_rgb`` (the image they were found in, for the embedder).

        Returns one :class:`TrackedFace` per face, in the order given (``track, person = seen``
        works). A face is embedded on this frame only when:

        - it is near no alive track, or near two or more (IoU >= :data:`NEAR_IOU`): a new or
          returning face, a jump, a crossing;
        - another face is near it (two people overlapping);
        - its only nearby track overlaps it by less than ``match_iou``, or is near another face too;
        - its track was not seen on the previous frame (it takes the track back after a gap);

        A lost track that an embedding has already told apart from the face of a track seen on the
        previous frame does not count as near that face (a person hidden behind another costs
        one embedding, not one per frame).
        - its track is due: ``refresh_every`` frames since the track's last embedding
          (``retry_every`` for a track without identity).
        """
        self.frame += 1
        self.counts["frames"] += 1
        faces = list(faces)
        boxes = np.array([np.asarray(getattr(f, "box", f), dtype=np.float64)[:4] for f in faces],
                         dtype=np.float64).reshape(-1, 4)
        n = len(faces)
        tracks = self._tracks
        iou = box_iou(self._predicted(tracks), boxes)  # [tracks, n]
        between = box_iou(boxes, boxes)
        np.fill_diagonal(between, 0.0)
        near_dets = (between >= NEAR_IOU).any(axis=1)
        vectors, reasons, embedded = [None] * n, [None] * n, np.zeros(n, bool)
        need, excluded = self._needs_embedding(iou, near_dets, tracks)
        if self.embedder is not None:
            for j in np.flatnonzero(need):
                vectors[j], reasons[j] = self._embed(frame_rgb, faces[j])
                embedded[j] = True

        # pair tracks with detections
        cost = np.full((len(tracks), n), np.inf)
        differ = np.zeros((len(tracks), n), bool)  # told apart by their identities
        for i, t in enumerate(tracks):
            refs = self._references(t)
            lost = self.frame - t.last_frame > 1
            for j in range(n):
                d = self._distance(vectors[j], refs)
                if np.isfinite(d):
                    differ[i, j] = d > self.same_person
                    if d <= self.same_person and (lost or iou[i, j] >= NEAR_IOU):
                        cost[i, j] = IOU_WEIGHT * (1 - iou[i, j]) + (1 - IOU_WEIGHT) * d / max(
                            self.same_person, 1e-9)
                elif iou[i, j] >= self.match_iou and not excluded[i, j]:
                    cost[i, j] = 1 - iou[i, j]
        pairs = match_pairs(cost, 1.0)

        out = [None] * n
        busy = set()
        for i, j in pairs:
            t = tracks[i]
            steps = self.frame - t.last_frame
            moved = (boxes[j, :2] - t.box[:2]) / max(steps, 1)
            t.velocity = moved if t.hits == 1 else (
                (1 - SPEED_SMOOTHING) * t.velocity + SPEED_SMOOTHING * moved)
            t.box, t.last_frame, t.hits = boxes[j].copy(), self.frame, t.hits + 1
            if embedded[j]:
                t.last_try = self.frame
            out[j] = t
            if t.person is not None:
                busy.add(t.person)
        fresh = [j for j in range(n) if out[j] is None]
        for j in fresh:  # detections left over start tracks
            if self.embedder is not None and not embedded[j]:
                vectors[j], reasons[j] = self._embed(frame_rgb, faces[j])
                embedded[j] = True
            t = _Track(self._next_track, boxes[j].copy(), self.frame, self.frame)
            self._next_track += 1
            self._tracks.append(t)
            out[j] = t
        for i, j in zip(*np.nonzero(differ & (iou >= NEAR_IOU))):  # tracks that are not the face
            tracks[i].rejected.add(out[j].id)  # followed by out[j] (ignored while they are lost)
        for j, t in enumerate(out):  # identities
            if self.embedder is None:
                t.reason = "no embedder"
            elif vectors[j] is None:
                if t.person is None and reasons[j] is not None:
                    t.reason = reasons[j]
            elif t.person is None:
                self._identify(t, vectors[j], busy)
                busy.add(t.person)
            else:
                self._remember(t.person, vectors[j])
        self._tracks = [t for t in self._tracks if self.frame - t.last_frame <= self.max_lost]
        return [TrackedFace(t.id, t.person, t.reason if t.person is None else None, bool(embedded[j]))
                for j, t in enumerate(out)]
