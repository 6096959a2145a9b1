"""How well a tracker follows people: IDF1, ID switches and MOTA, in NumPy.

A video's ground truth and a tracker's output are lists with one entry per frame, each a list of
``(id, box)`` (box: x, y, w, h; ids: any hashable, e.g. a person id). A predicted box *covers* a
true one on a frame when their IoU is at least ``iou`` (0.5).

- :func:`idf1` (Ristani et al., 2016, "Performance measures and a data set for multi-target,
  multi-camera tracking"): every true identity is paired with at most one predicted identity, over
  the whole video, so that the number of frames where the pair's boxes cover each other (IDTP) is
  the largest; ``IDF1 = 2 IDTP / (true boxes + predicted boxes)``. A tracker that swaps two people
  half-way, or splits one person into two ids, loses about half of their frames.
- :func:`clear_mot` (Bernardin and Stiefelhagen, 2008, CLEAR MOT): frame by frame, true and
  predicted boxes are matched (a pair of the previous frame is kept while it still covers, the rest
  by a minimum-cost assignment on IoU); an **ID switch** is a true identity matched to a predicted
  id other than the one it was last matched to. ``MOTA = 1 - (misses + false positives + switches)
  / true boxes``.
"""

from __future__ import annotations

import numpy as np

from fer_tf.people.assignment import linear_assignment, match_pairs
from fer_tf.people.tracking import box_iou

#: IoU at which a predicted box covers a true one.
COVER_IOU = 0.5


def _split(items):
    ids = [i for i, _ in items]
    boxes = np.array([np.asarray(b, dtype=np.float64)[:4] for _, b in items], dtype=np.float64).reshape(-1, 4)
    return ids, boxes


def _check(truth, predicted):
    if len(truth) != len(predicted):
        raise ValueError(f"truth has {len(truth)} frames, predicted {len(predicted)}")
    for frame in list(truth) + list(predicted):
        ids = [i for i, _ in frame]
        if len(set(ids)) != len(ids):
            raise ValueError(f"an id appears twice on one frame: {ids}")


def idf1(truth, predicted, iou=COVER_IOU) -> dict:
    """IDF1 of ``predicted`` against ``truth`` (see the module docstring).

    Returns ``{"idf1", "idp", "idr", "idtp", "true", "predicted", "pairs"}``: IDF1, ID precision
    (IDTP / predicted boxes) and recall (IDTP / true boxes), the counts, and the chosen pairs
    ``{true id: predicted id}``.
    """
    _check(truth, predicted)
    true_ids, pred_ids = {}, {}
    overlaps = {}
    n_true = n_pred = 0
    for gt, pr in zip(truth, predicted):
        g_ids, g_boxes = _split(gt)
        p_ids, p_boxes = _split(pr)
        n_true, n_pred = n_true + len(g_ids), n_pred + len(p_ids)
        for t in g_ids:
            true_ids.setdefault(t, len(true_ids))
        for p in p_ids:
            pred_ids.setdefault(p, len(pred_ids))
        covers = box_iou(g_boxes, p_boxes) >= iou
        for a, b in zip(*np.nonzero(covers)):
            key = (true_ids[g_ids[a]], pred_ids[p_ids[b]])
            overlaps[key] = overlaps.get(key, 0) + 1
    counts = np.zeros((len(true_ids), len(pred_ids)))
    for (a, b), c in overlaps.items():
        counts[a, b] = c
    pairs = [(a, b) for a, b in zip(*linear_assignment(-counts)) if counts[a, b] > 0] if counts.size else []
    idtp = int(sum(counts[a, b] for a, b in pairs))
    t_names, p_names = list(true_ids), list(pred_ids)
    total = n_true + n_pred
    return {"idf1": 2 * idtp / total if total else float("nan"),
            "idp": idtp / n_pred if n_pred else float("nan"),
            "idr": idtp / n_true if n_true else float("nan"),
            "idtp": idtp, "true": n_true, "predicted": n_pred,
            "pairs": {t_names[a]: p_names[b] for a, b in pairs}}


def clear_mot(truth, predicted, iou=COVER_IOU) -> dict:
    """ID switches, misses, false positives and MOTA (see the module docstring).

    Returns ``{"switches", "misses", "false_positives", "matches", "true", "mota",
    "switch_frames"}``; ``switch_frames``: ``[(frame, true id, old predicted id, new predicted id)]``.
    """
    _check(truth, predicted)
    last = {}  # true id -> predicted id it was last matched to
    previous = {}  # true id -> predicted id matched on the previous frame
    switches, misses, false_pos, matches, n_true = [], 0, 0, 0, 0
    for f, (gt, pr) in enumerate(zip(truth, predicted)):
        g_ids, g_boxes = _split(gt)
        p_ids, p_boxes = _split(pr)
        n_true += len(g_ids)
        ious = box_iou(g_boxes, p_boxes)
        pairs = {}
        for a, t in enumerate(g_ids):  # keep last frame's pairs that still cover
            p = previous.get(t)
            if p in p_ids and ious[a, p_ids.index(p)] >= iou:
                pairs[a] = p_ids.index(p)
        free_g = [a for a in range(len(g_ids)) if a not in pairs]
        free_p = [b for b in range(len(p_ids)) if b not in pairs.values()]
        if free_g and free_p:  # the most pairs (an unmatched pair costs more than any two matches)
            sub = ious[np.ix_(free_g, free_p)]
            for a, b in match_pairs(np.where(sub >= iou, 1 - sub, np.inf), 2.0):
                pairs[free_g[a]] = free_p[b]
        previous = {}
        for a, b in pairs.items():
            t, p = g_ids[a], p_ids[b]
            if t in last and last[t] != p:
                switches.append((f, t, last[t], p))
            last[t] = previous[t] = p
        matches += len(pairs)
        misses += len(g_ids) - len(pairs)
        false_pos += len(p_ids) - len(pairs)
    return {"switches": len(switches), "misses": misses, "false_positives": false_pos, "matches": matches,
            "true": n_true,
            "mota": 1 - (misses + false_pos + len(switches)) / n_true if n_true else float("nan"),
            "switch_frames": switches}
