"""fer_tf.people.tracking (tracker on synthetic boxes with fake embeddings), .assignment and
.track_metrics (IDF1, ID switches against hand-computed values). Fast: no networks."""

import itertools
from types import SimpleNamespace

import numpy as np
import pytest

from fer_tf.errors import ConfigError
from fer_tf.people.assignment import linear_assignment, match_pairs
from fer_tf.people.embedding import IdentityResult
from fer_tf.people.track_metrics import clear_mot, idf1
from fer_tf.people.tracking import Tracker, box_iou

# -- assignment ---------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 1), (3, 3), (4, 6), (6, 4), (5, 5)])
def test_linear_assignment_matches_brute_force(shape):
    rng = np.random.default_rng(sum(shape))
    for _ in range(20):
        cost = rng.integers(0, 9, size=shape).astype(float)
        rows, cols = linear_assignment(cost)
        n, m = shape
        k = min(n, m)
        assert len(rows) == k and len(set(rows)) == k and len(set(cols)) == k
        if n <= m:
            best = min(cost[np.arange(n), list(p)].sum() for p in itertools.permutations(range(m), n))
        else:
            best = min(cost[list(p), np.arange(m)].sum() for p in itertools.permutations(range(n), m))
        assert cost[rows, cols].sum() == pytest.approx(best)


def test_linear_assignment_empty_and_bad_input():
    rows, cols = linear_assignment(np.zeros((0, 3)))
    assert len(rows) == len(cols) == 0
    with pytest.raises(ValueError):
        linear_assignment([[1.0, np.inf]])


def test_match_pairs_never_gives_up_a_good_pair_for_two_poor_ones():
    # row 0 fits column 0 well and column 1 poorly; row 1 fits column 0 poorly only
    cost = np.array([[0.1, 0.8], [0.8, np.inf]])
    assert match_pairs(cost, 1.0) == [(0, 0)]
    assert match_pairs(np.array([[0.1, 0.8], [0.2, np.inf]]), 1.0) == [(0, 1), (1, 0)]
    assert match_pairs(np.full((2, 2), np.inf), 1.0) == []
    assert match_pairs(np.array([[1.5]]), 1.0) == []

# -- metrics ------------------------------------------------------------------------------------


def _box(x, y=0.0, s=10.0):
    return (float(x), float(y), s, s)


def test_idf1_hand_computed_swap():
    # two people, 4 frames; the tracker swaps their ids after frame 1
    truth = [[("a", _box(0)), ("b", _box(50))] for _ in range(4)]
    pred = [[(1, _box(0)), (2, _box(50))]] * 2 + [[(2, _box(0)), (1, _box(50))]] * 2
    r = idf1(truth, pred)
    # best pairing a-1, b-2 covers 2 + 2 frames of 8 true and 8 predicted boxes
    assert r["idtp"] == 4 and r["idf1"] == pytest.approx(2 * 4 / 16)
    assert r["pairs"] in ({"a": 1, "b": 2}, {"a": 2, "b": 1})
    m = clear_mot(truth, pred)
    assert m["switches"] == 2 and m["misses"] == 0 and m["false_positives"] == 0
    assert m["mota"] == pytest.approx(1 - 2 / 8)
    assert sorted(s[1] for s in m["switch_frames"]) == ["a", "b"]


def test_idf1_hand_computed_split_miss_and_false_positive():
    # person a in 5 frames; tracked as 1 (frames 0-2), missed on 3, id 7 on frame 4;
    # a false box (id 9) far away on frame 0; a box at IoU < 0.5 on frame 4 is not a cover
    truth = [[("a", _box(0))] for _ in range(5)]
    pred = [[(1, _box(0)), (9, _box(200))], [(1, _box(1))], [(1, _box(0))], [], [(7, _box(6))]]
    r = idf1(truth, pred)
    # a-1 shares 3 frames; 5 true, 5 predicted boxes
    assert r["idtp"] == 3 and r["idf1"] == pytest.approx(6 / 10)
    assert r["idp"] == pytest.approx(3 / 5) and r["idr"] == pytest.approx(3 / 5)
    m = clear_mot(truth, pred)
    # frame 4: IoU of (6,0,10,10) with (0,0,10,10) = 40/160 < 0.5: a miss and a false positive
    assert (m["switches"], m["misses"], m["false_positives"], m["matches"]) == (0, 2, 2, 3)
    pred[4] = [(7, _box(2))]  # IoU 80/120: covers; a switch from 1 to 7
    m = clear_mot(truth, pred)
    assert (m["switches"], m["misses"], m["false_positives"]) == (1, 1, 1)
    assert idf1(truth, pred)["idtp"] == 3


def test_idf1_prefers_most_frames_over_most_pairs():
    truth = [[("a", _box(0)), ("b", _box(50))]] * 3 + [[("a", _box(0))]] * 7
    pred = [[(1, _box(50))]] * 3 + [[(1, _box(0))]] * 7  # id 1 is b for 3 frames, a for 7
    assert idf1(truth, pred)["idtp"] == 7


def test_metrics_check_input():
    with pytest.raises(ValueError):
        idf1([[]], [[], []])
    with pytest.raises(ValueError):
        clear_mot([[("a", _box(0)), ("a", _box(5))]], [[]])


def test_box_iou():
    iou = box_iou([_box(0), _box(5)], [_box(0), _box(100)])
    assert iou[0, 0] == 1.0 and iou[0, 1] == 0.0
    assert iou[1, 0] == pytest.approx(50 / 150)

# -- tracker ------------------------------------------------------------------------------------


class FakeEmbedder:
    """Vectors from each fake face's ``who`` (None: "small"): people 1.0 apart, noise 0.05."""

    def __init__(self, seed=0):
        self.rng = np.random.default_rng(seed)
        self.base = {}
        self.calls = []  # (frame, who)
        self.frame = 0

    def embed(self, image, face):
        self.calls.append((self.frame, face.who))
        if face.who is None:
            return IdentityResult(None, "small", "face too small", 10.0, float("nan"))
        if face.who not in self.base:
            v = np.zeros(128)
            v[len(self.base)] = 1.0 / np.sqrt(2)  # orthogonal: distance 1.0 between people
            self.base[face.who] = v
        noise = self.rng.normal(0, 0.05 / np.sqrt(128), 128)
        return IdentityResult((self.base[face.who] + noise).astype(np.float32), None, None, 40.0, 1.0)


def face(who, x, y=100.0, s=60.0):
    return SimpleNamespace(who=who, box=(float(x), float(y), s, s))


def run(tracker, frames, embedder=None):
    out = []
    for f, faces in enumerate(frames):
        if embedder is not None:
            embedder.frame = f
        out.append([(fc.who, seen) for fc, seen in zip(faces, tracker.update(None, faces))])
    return out


def people_of(out):
    """{who: set of person ids} over the video."""
    seen = {}
    for frame in out:
        for who, s in frame:
            seen.setdefault(who, set()).add(s.person)
    return seen


def test_crossing_keeps_people_apart():
    emb = FakeEmbedder()
    # A moves right, B moves left at the same height; they overlap completely at frame 20,
    # where only the front face (A) is detected
    frames = []
    for f in range(41):
        ax, bx = 100 + 10 * f, 500 - 10 * f
        faces = [face("A", ax)]
        if abs(ax - bx) > 5:
            faces.append(face("B", bx))
        frames.append(faces)
    out = run(Tracker(emb), frames, emb)
    people = people_of(out)
    assert len(people["A"]) == 1 and len(people["B"]) == 1 and people["A"] != people["B"]
    tracks = {}
    for frame in out:
        for who, s in frame:
            tracks.setdefault(who, set()).add(s.track)
    assert tracks["A"] == {1}  # A is never lost; B's track may be taken back after the crossing
    idf = idf1([[(w, fc.box) for fc, (w, _) in zip(faces, fr)] for faces, fr in zip(frames, out)],
               [[(s.person, fc.box) for fc, (_, s) in zip(faces, fr)] for faces, fr in zip(frames, out)])
    assert idf["idf1"] == 1.0


def test_occlusion_gap_keeps_the_track():
    emb = FakeEmbedder()
    frames = [[face("A", 100 + 2 * f)] if not 10 <= f < 18 else [] for f in range(30)]
    out = run(Tracker(emb, max_lost=10), frames, emb)
    assert {s.track for fr in out for _, s in fr} == {1}
    assert {s.person for fr in out for _, s in fr} == {1}
    # embedded when new (frame 0) and when it took the track back (frame 18), nowhere else
    assert [f for f, _ in emb.calls] == [0, 18]


def test_gap_longer_than_max_lost_ends_the_track_but_keeps_the_person():
    emb = FakeEmbedder()
    # A and B; A leaves for 40 frames and comes back elsewhere
    frames = []
    for f in range(80):
        faces = [face("B", 400, 300)]
        if f < 20 or f >= 60:
            faces.append(face("A", 100 if f < 20 else 250))
        frames.append(faces)
    out = run(Tracker(emb, max_lost=10), frames, emb)
    a_tracks = [s.track for fr in out for w, s in fr if w == "A"]
    assert a_tracks[0] != a_tracks[-1]  # a new track ...
    people = people_of(out)
    assert len(people["A"]) == 1 and len(people["B"]) == 1  # ... with the old person
    assert people["A"] != people["B"]


def test_a_newcomer_is_a_new_person():
    emb = FakeEmbedder()
    frames = [[face("A", 100)] for _ in range(5)] + [[face("C", 100)] for _ in range(5)]
    out = run(Tracker(emb), frames, emb)
    people = people_of(out)
    # C takes A's place on the next frame: the box alone would continue A's track; C's face
    # continues it too (no embedding was due), so only a refresh or gap can catch such a swap
    assert people["A"] == {1}
    frames = [[face("A", 100)] for _ in range(5)] + [[]] * 3 + [[face("C", 100)] for _ in range(5)]
    emb = FakeEmbedder()
    out = run(Tracker(emb), frames, emb)
    people = people_of(out)
    assert people["A"] == {1} and people["C"] == {2}  # after a gap the face is checked


def test_refresh_catches_a_swap():
    emb = FakeEmbedder()
    frames = [[face("A", 100)] for _ in range(10)] + [[face("C", 100)] for _ in range(20)]
    out = run(Tracker(emb, refresh_every=8), frames, emb)
    people = [s.person for fr in out for _, s in fr]
    assert people[:10] == [1] * 10 and people[16:] == [2] * 14
    assert [f for f, _ in emb.calls] == [0, 8, 16, 24]


def test_small_face_is_tracked_by_overlap_only_and_never_merged():
    emb = FakeEmbedder()
    frames = [[face("A", 100 + f), face(None, 400 - f, 300, 16)] for f in range(30)]
    out = run(Tracker(emb, retry_every=10), frames, emb)
    small = [s for fr in out for w, s in fr if w is None]
    assert {s.track for s in small} == {2}
    assert all(s.person is None and s.reason == "small" for s in small)
    assert {s.person for fr in out for w, s in fr if w == "A"} == {1}
    assert [f for f, w in emb.calls if w is None] == [0, 10, 20]


def test_identified_face_keeps_its_person_when_it_becomes_small():
    emb = FakeEmbedder()
    frames = [[face("A", 100)]] + [[face(None, 100)] for _ in range(10)]
    out = run(Tracker(emb), frames, emb)
    assert {s.person for fr in out for _, s in fr} == {1}
    assert all(s.reason is None for fr in out for _, s in fr)


def test_embeddings_only_where_needed():
    emb = FakeEmbedder()
    # two people apart, slowly moving, for 200 frames: embedded when new and at each refresh
    frames = [[face("A", 100 + f * 0.5), face("B", 400 - f * 0.5)] for f in range(200)]
    tracker = Tracker(emb, refresh_every=50)
    run(tracker, frames, emb)
    assert sorted(f for f, _ in emb.calls) == [0, 0, 50, 50, 100, 100, 150, 150]
    assert tracker.counts == {"frames": 200, "attempts": 8, "vectors": 8}
    emb = FakeEmbedder()
    tracker = Tracker(emb, refresh_every=0)
    run(tracker, frames, emb)
    assert len(emb.calls) == 2


def test_without_embedder_tracks_by_overlap():
    frames = [[face("A", 100 + 3 * f)] for f in range(10)]
    out = run(Tracker(None), frames)
    assert {(s.track, s.person, s.reason) for fr in out for _, s in fr} == {(1, None, "no embedder")}
    track, person = out[0][0][1]
    assert (track, person) == (1, None)


def test_tracker_rejects_bad_settings():
    with pytest.raises(ConfigError, match="max_lost"):
        Tracker(None, max_lost=-1)
    with pytest.raises(ConfigError, match="match_iou"):
        Tracker(None, match_iou=2)


def test_face_in_front_is_not_given_the_hidden_persons_track():
    emb = FakeEmbedder()
    # A and B overlap (both embedded, told apart); then B is hidden behind A, and A's box lands
    # where B's lost track expects B: A keeps its own track without a new embedding
    frames = [[face("A", 100 + 2 * f), face("B", 150 - 2 * f)] for f in range(6)]
    frames += [[face("A", 136 + (f % 2))] for f in range(8)]
    tracker = Tracker(emb, refresh_every=0)
    out = run(tracker, frames, emb)
    assert {s.person for fr in out for w, s in fr if w == "A"} == {out[0][0][1].person}
    assert {s.track for fr in out for w, s in fr if w == "A"} == {out[0][0][1].track}
    assert len([f for f, _ in emb.calls if f >= 7]) == 0  # one look at the hidden frames is enough
