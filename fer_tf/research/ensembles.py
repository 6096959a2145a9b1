"""Networks measured on FER2013's test splits, alone and as an ensemble.

- :func:`split_probabilities`: one network's class probabilities on PublicTest and PrivateTest,
  centre crop and flip-averaged;
- :func:`split_accuracies_of`: the accuracies of such probabilities;
- :func:`ensemble_results`: each member's accuracies and those of the mean of their
  probabilities, which is what ``train.distill_from`` with several teachers distils a single
  network towards (on the training faces): how far the ensemble is above its members bounds
  what the distilled network can gain.
"""

import numpy as np

from fer_tf.model.predict import accuracy, predict_probabilities

#: The test splits of FER2013 and the result keys their accuracies are stored under.
TEST_SPLITS = (("PublicTest", "public_test_accuracy"), ("PrivateTest", "private_test_accuracy"))

#: Centre crop, and flip-averaged (reported beside it, never instead).
VIEWS = ((False, ""), (True, "_flip"))


def split_probabilities(model, faces, split):
    """``{result key: probabilities}`` of ``model`` on each non-empty test split of ``split``
    (rows of ``faces``), e.g. ``private_test_accuracy_flip`` for the flip-averaged PrivateTest."""
    return {key + suffix: predict_probabilities(model, faces[split[name]], flip=flip)
            for name, key in TEST_SPLITS if len(split[name]) for flip, suffix in VIEWS}


def split_accuracies_of(probabilities, ids, split):
    """``{result key: accuracy}`` of :func:`split_probabilities`' output (None for an absent
    split, e.g. a copy of FER2013 without its PrivateTest images)."""
    out = {}
    for name, key in TEST_SPLITS:
        for _, suffix in VIEWS:
            p = probabilities.get(key + suffix)
            out[key + suffix] = None if p is None else accuracy(p, ids[split[name]])
    return out


def ensemble_results(members, ids, split):
    """``members``: ``{name: split_probabilities(...)}`` of two or more networks. Returns
    ``{"members": {name: accuracies}, "ensemble": accuracies of the mean of their probabilities,
    "gain_over_best_member": {result key: ensemble - best member}}``."""
    if len(members) < 2:
        raise ValueError(f"an ensemble needs at least two networks, got {len(members)}")
    keys = sorted(set.intersection(*(set(p) for p in members.values())))
    mean = {k: np.mean([members[name][k] for name in members], axis=0) for k in keys}
    each = {name: split_accuracies_of(p, ids, split) for name, p in members.items()}
    together = split_accuracies_of(mean, ids, split)
    gain = {k: together[k] - max(acc[k] for acc in each.values())
            for k in together if together[k] is not None}
    return {"members": each, "ensemble": together, "gain_over_best_member": gain}
