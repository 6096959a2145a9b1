"""Identity embeddings and grouping, measured: reports/people/identity.json and identity.md.

    PYTHONPATH=. python pipelines/people_identity.py [--datasets ../shared/datasets] [--probes 150]
    PYTHONPATH=. python pipelines/people_identity.py --grouping-only   # step 4 again, from the caches

On CK+48 (the last frame of each of its 327 sequences), KDEF and Yale (the reader's 60 expression
photos), each on its own, with their true subject ids:

1. faces: each image's largest face (FaceAligner, litert engine, as Recognizer), cached under
   runs/people/;
2. verification ROC of dlib's descriptor over all pairs, with the chip from mesh points and from
   dlib's 5-point predictor in our box (AUC, TPR at FPR 1e-2 and 1e-3), time per face;
3. bad faces: probes (KDEF and Yale) shrunk to a given eye distance or blurred, matched against the
   clean faces: rank-1 identification and the quality measures (eye distance, sharpness), which set
   MIN_EYE_DISTANCE and MIN_SHARPNESS of fer_tf.people.embedding;
4. grouping: adjusted Rand index and purity of the adaptive cut against the distance silhouette
   (the earlier default) and fixed thresholds.

Embeddings are cached in runs/people/ (delete it to recompute). ``--grouping-only`` reruns step 4
(and the manifest scores) from those caches and the existing identity.json, keeping its other
numbers.
"""

import argparse
import json
import os
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _common import DATASETS, REPO, run  # noqa: E402

import numpy as np  # noqa: E402

SETS = {"yale": ("yalefaces", "yale"), "kdef": ("kdef-subset", "kdef"), "ckplus48": ("ckplus48", "ckplus48")}
CACHE = REPO / "runs" / "people"
OUT = REPO / "reports" / "people"
SIZES = (8, 12, 16, 20, 24, 32)  # eye distances (px) of the shrunk probes
BLURS = (0.04, 0.08, 0.12, 0.16, 0.24)  # Gaussian sigma of the blurred probes, x eye distance
FIXED = (0.5, 0.6)
GROUPING_METHODS = ("adaptive", "silhouette")  # reported beside the fixed cuts
#: Chips compared per set: dlib's 5-point predictor costs a second network run per face on this
#: 2-core machine, so the comparison runs on KDEF and Yale; CK+48 gets the default (mesh).
MODES = {"yale": ("mesh", "dlib5"), "kdef": ("mesh", "dlib5"), "ckplus48": ("mesh",)}


def faces_of(name, root):
    """Table rows, RGB images and largest faces of a dataset (faces cached as arrays)."""
    from fer_tf.data.readers import read_dataset
    from fer_tf.people.folder import detect_largest
    from fer_tf.preprocess.align import FaceAligner
    from fer_tf.preprocess.crop import Face

    table = read_dataset(root, SETS[name][1])
    if name == "ckplus48":  # one face per sequence: its 3 frames are near copies, which would make
        # same-person pairs and groups trivially easy; the last (peak) frame is kept
        last = {}
        for i, (seq, frame) in enumerate(zip(table.sequence, table.frame)):
            if seq not in last or frame > table.frame[last[seq]]:
                last[seq] = i
        table = table.take(np.array(sorted(last.values())))
    paths = list(table.path)
    cache = CACHE / f"{name}_faces.npz"
    from fer_tf.data.images import load_image_rgb

    if cache.is_file():
        z = np.load(cache, allow_pickle=False)
        if list(z["paths"]) == paths:
            found = []
            for i, p in enumerate(paths):
                face = None
                if z["ok"][i]:
                    face = Face(tuple(z["box"][i]), float(z["score"][i]), z["landmarks"][i],
                                z["left"][i], z["right"][i])
                found.append((load_image_rgb(p), face, None if face else "no face found"))
            return table, found
    with FaceAligner(engine="litert") as aligner:
        found = detect_largest(paths, aligner)
    ok = np.array([f is not None for _, f, _ in found])
    blank = np.zeros((468, 2), np.float32)
    CACHE.mkdir(parents=True, exist_ok=True)
    from fer_tf.files import atomic_write

    atomic_write(cache, lambda fh: np.savez(fh, paths=np.array(paths), ok=ok,
             box=np.array([f.box if f else (0, 0, 0, 0) for _, f, _ in found], np.float64),
             score=np.array([f.score if f else 0 for _, f, _ in found], np.float64),
             landmarks=np.stack([f.landmarks[:468] if f else blank for _, f, _ in found]),
             left=np.array([f.left_eye if f else (0, 0) for _, f, _ in found], np.float64),
             right=np.array([f.right_eye if f else (0, 0) for _, f, _ in found], np.float64)))
    return table, found


def embed_cached(name, mode, found):
    """``(vectors [n,128] NaN where no face, eye distances, sharpness, ms per face)``, cached."""
    from fer_tf.people.embedding import IdentityEmbedder, sharpness

    cache = CACHE / f"{name}_{mode}.npz"
    embedder = IdentityEmbedder(landmarks=mode, min_eye_distance=0, min_sharpness=0)
    if cache.is_file():
        z = np.load(cache)
        if len(z["vectors"]) == len(found):  # the quality measures are cheap: measured again
            eyes = np.array([np.linalg.norm(f.right_eye - f.left_eye) if f else np.nan for _, f, _ in found])
            sharp = np.array([sharpness(embedder.chip(rgb, f)) if f else np.nan for rgb, f, _ in found])
            return z["vectors"], eyes, sharp, float(z["ms"])
    embedder = IdentityEmbedder(landmarks=mode, min_eye_distance=0, min_sharpness=0)
    vectors = np.full((len(found), 128), np.nan, np.float32)
    eyes, sharp = np.full(len(found), np.nan), np.full(len(found), np.nan)
    times = []
    for i, (rgb, face, _) in enumerate(found):
        if face is None:
            continue
        start = time.perf_counter()
        chip = embedder.chip(rgb, face)
        vectors[i] = embedder.vector(chip)
        times.append(time.perf_counter() - start)
        eyes[i] = float(np.linalg.norm(face.right_eye - face.left_eye))
        sharp[i] = sharpness(chip)
    ms = 1000 * float(np.median(times))
    from fer_tf.files import atomic_write

    atomic_write(cache, lambda fh: np.savez(fh, vectors=vectors, eyes=eyes, sharp=sharp, ms=ms))
    return vectors, eyes, sharp, ms


def roc(vectors, subjects):
    """AUC and TPR at FPR 1e-2 / 1e-3 of same-subject pairs against different-subject pairs."""
    from fer_tf.people.embedding import distances

    keep = np.isfinite(vectors).all(axis=1)
    v, s = vectors[keep], np.asarray(subjects)[keep]
    d = distances(v)
    iu = np.triu_indices(len(v), 1)
    same = (s[:, None] == s[None, :])[iu]
    dist = d[iu]
    genuine, impostor = dist[same], np.sort(dist[~same])
    # AUC: chance that a genuine pair is closer than an impostor pair (ties count half)
    below = np.searchsorted(impostor, genuine, side="left")
    ties = np.searchsorted(impostor, genuine, side="right") - below
    auc = float(((len(impostor) - below - ties) + 0.5 * ties).sum() / (len(genuine) * len(impostor)))
    out = {"faces": int(keep.sum()), "subjects": int(len(set(s))), "genuine_pairs": int(len(genuine)),
           "impostor_pairs": int(len(impostor)), "auc": auc}
    for fpr in (1e-2, 1e-3):
        k = int(np.floor(fpr * len(impostor)))  # at most k impostor pairs accepted
        t = impostor[k] if k < len(impostor) else np.inf
        out[f"tpr_at_fpr_{fpr:g}"] = float((genuine < t).mean())
        out[f"threshold_at_fpr_{fpr:g}"] = float(t)
    return out


def degraded(found, idx, kind, level):
    """``(rgb, face)`` of probe ``idx`` shrunk to an eye distance of ``level`` px ("size") or
    blurred with sigma ``level`` x its eye distance ("blur"), the face moved along."""
    import cv2

    from fer_tf.preprocess.crop import Face

    rgb, face, _ = found[idx]
    eyes = float(np.linalg.norm(face.right_eye - face.left_eye))
    if kind == "blur":
        sigma = level * eyes
        return cv2.GaussianBlur(rgb, (0, 0), sigma), face
    k = min(1.0, level / eyes)
    h, w = rgb.shape[:2]
    small = cv2.resize(rgb, (max(1, round(w * k)), max(1, round(h * k))), interpolation=cv2.INTER_AREA)
    kx, ky = small.shape[1] / w, small.shape[0] / h
    scale = np.array([kx, ky])
    x, y, bw, bh = face.box
    moved = Face((x * kx, y * ky, bw * kx, bh * ky), face.score, face.landmarks * scale,
                 face.left_eye * scale, face.right_eye * scale)
    return small, moved


def bad_faces(sets, probes, seed=0):
    """Rank-1 identification of shrunk and blurred probes against the clean faces (mesh chips)."""
    from fer_tf.people.embedding import IdentityEmbedder, distances, sharpness

    embedder = IdentityEmbedder(landmarks="mesh", min_eye_distance=0, min_sharpness=0)
    rng = np.random.default_rng(seed)
    records = []
    for name, (found, vectors, subjects) in sets.items():
        usable = np.flatnonzero(np.isfinite(vectors).all(axis=1))
        chosen = rng.choice(usable, size=min(probes, len(usable)), replace=False)
        subjects = np.asarray(subjects)
        for idx in chosen:
            others = usable[usable != idx]
            gallery, who = vectors[others], subjects[others]
            for kind, levels in (("clean", (0,)), ("size", SIZES), ("blur", BLURS)):
                for level in levels:
                    rgb, face = found[idx][:2] if kind == "clean" else degraded(found, idx, kind, level)
                    chip = embedder.chip(rgb, face)
                    v = embedder.vector(chip)
                    d = distances(v[None], gallery)[0]
                    records.append({"set": name, "kind": kind, "level": level,
                                    "eyes": float(np.linalg.norm(face.right_eye - face.left_eye)),
                                    "sharpness": sharpness(chip),
                                    "rank1": bool(who[d.argmin()] == subjects[idx]),
                                    "genuine": float(d[who == subjects[idx]].min()),
                                    "impostor": float(d[who != subjects[idx]].min())})
        print(f"bad faces: {name} done", flush=True)
    return records


def summarise_bad(records):
    """Per condition: rank-1, median sharpness, eye distance; and the cut-offs they give."""
    rows = []
    for kind, levels in (("clean", (0,)), ("size", SIZES), ("blur", BLURS)):
        for level in levels:
            sel = [r for r in records if r["kind"] == kind and r["level"] == level]
            rows.append({"kind": kind, "level": level, "probes": len(sel),
                         "rank1": float(np.mean([r["rank1"] for r in sel])),
                         "median_eyes": float(np.median([r["eyes"] for r in sel])),
                         "median_sharpness": float(np.median([r["sharpness"] for r in sel]))})
    clean = rows[0]["rank1"]

    def passes(row):  # reliable: rank-1 within 5 points of the clean probes'
        return row["rank1"] >= clean - 0.05

    # sizes from large to small: the cut-off is the smallest size before the first failing one
    sizes = sorted((r for r in rows if r["kind"] == "size"), key=lambda r: -r["level"])
    first = next((k for k, r in enumerate(sizes) if not passes(r)), len(sizes))
    min_size = float(sizes[first - 1]["level"]) if first else float("nan")
    # blurs from mild to strong: the cut-off lies halfway between the median sharpness of the last
    # passing level and that of the first failing one (the strongest level's when none fails)
    blurs = sorted((r for r in rows if r["kind"] == "blur"), key=lambda r: r["level"])
    first = next((k for k, r in enumerate(blurs) if not passes(r)), None)
    if first is None:
        cut = blurs[-1]["median_sharpness"]
    elif first == 0:
        cut = 0.5 * (rows[0]["median_sharpness"] + blurs[0]["median_sharpness"])
    else:
        cut = 0.5 * (blurs[first - 1]["median_sharpness"] + blurs[first]["median_sharpness"])
    return {"conditions": rows, "clean_rank1": clean, "eye_distance_cutoff": min_size,
            "sharpness_cutoff": float(cut)}


def grouping_scores(vectors, subjects, gate=None):
    """ARI, purity and the number of people for the adaptive cut and fixed thresholds."""
    from fer_tf.people.grouping import adjusted_rand_index, group, purity

    keep = np.isfinite(vectors).all(axis=1) & (np.ones(len(vectors), bool) if gate is None else gate)
    v, s = vectors[keep], np.asarray(subjects)[keep]
    out = {"faces": int(keep.sum()), "subjects": int(len(set(s)))}
    for method, t in [(m, None) for m in GROUPING_METHODS] + [("fixed", t) for t in FIXED]:
        start = time.perf_counter()
        g = group(v, method=method, threshold=t)
        key = method if t is None else f"fixed_{t:g}"
        out[key] = {"ari": adjusted_rand_index(s, g.labels), "purity": purity(s, g.labels),
                    "inverse_purity": purity(g.labels, s), "people": g.count,
                    "threshold": g.threshold, "method": g.method,
                    "seconds": time.perf_counter() - start}
    return out


def _pct(x):
    return "-" if x is None or not np.isfinite(x) else f"{100 * x:.1f}"


def write_markdown(result, path):
    """reports/people/identity.md from the result dict (every number comes from it)."""
    from fer_tf.files import atomic_write_text

    sets = result["sets"]
    run = result["run"]
    lines = [
        "# Who is who: identity embeddings and grouping",
        "",
        "Made by `PYTHONPATH=. python pipelines/people_identity.py` (numbers below come from "
        "`identity.json` beside this file; commit " + str(run.get("git_commit")) + ", "
        + str(run.get("machine", {}).get("cpu", "")) + f", load average {result['load_average'][0]:.1f} "
        "while it ran)." + ("" if "grouping_run" not in result else
                            " The grouping tables and the pseudo-identities were rerun by `--grouping-only` "
                            "from the cached embeddings (commit " + str(result["grouping_run"].get("git_commit"))
                            + ")."),
        "",
        "The recogniser is dlib's ResNet face descriptor (`dlib-bin` wheel, weights in "
        "`face-recognition-models`), on a 150x150 chip built from the face our detector and mesh "
        "found (`fer_tf/people/embedding.py`). Each image's largest face is used; subjects are the "
        "datasets' own ids. Every set is measured on its own: CK+48 by the last frame of each "
        "sequence (its three frames are near copies, which would make same-person pairs easy), "
        "Yale by the 60 expression photos its reader takes (happy, normal, sad, surprised).",
        "",
        "## Verification ROC (all pairs of faces)",
        "",
        "`mesh`: chip from five mesh landmarks (the default); `dlib5`: dlib's 5-point predictor run "
        "in our detection box. TPR at a false-positive rate is the share of same-person pairs "
        "accepted when that share of different-person pairs is. Time: median ms per face for the "
        "chip and the network (one thread).",
        "",
        "| set | faces / images | subjects | chip | AUC | TPR @ FPR 1e-2 | TPR @ FPR 1e-3 | ms / face |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, e in sets.items():
        for mode in ("mesh", "dlib5"):
            if mode not in e:
                continue
            r = e[mode]["roc"]
            lines.append(f"| {name} | {e['faces_found']} / {e['images']} | {r['subjects']} | {mode} | "
                         f"{r['auc']:.4f} | {_pct(r['tpr_at_fpr_0.01'])}% | {_pct(r['tpr_at_fpr_0.001'])}% | "
                         f"{e[mode]['ms_per_face']:.0f} |")
    both = [e for e in sets.values() if "mesh" in e and "dlib5" in e]
    if both:
        def mean(mode, key):
            return np.mean([e[mode]["roc"][key] if key != "ms" else e[mode]["ms_per_face"] for e in both])

        lines += ["", f"Over the {len(both)} set(s) with both chips: mean AUC mesh {mean('mesh', 'auc'):.4f}, "
                  f"dlib5 {mean('dlib5', 'auc'):.4f}; mean TPR @ FPR 1e-2 mesh "
                  f"{_pct(mean('mesh', 'tpr_at_fpr_0.01'))}%, dlib5 {_pct(mean('dlib5', 'tpr_at_fpr_0.01'))}%; "
                  f"median time mesh {mean('mesh', 'ms'):.0f} ms, dlib5 {mean('dlib5', 'ms'):.0f} ms per face "
                  "during the embedding runs (measured at different times on a shared machine: "
                  "compare the interleaved timing below instead)."]
    t = result["timing"]
    lines += ["", f"**Time per face**, interleaved on the same {t['faces']} Yale faces (median ms, one "
              f"thread, load average {t['load_average']:.1f}): mesh chip {t['chip_mesh_ms']:.1f}, dlib5 chip "
              f"(5-point predictor + chip) {t['chip_dlib5_ms']:.1f}, quality check {t['sharpness_ms']:.1f}, "
              f"network {t['network_ms']:.0f}."]
    lines += [
        "",
        "Faces that pass the quality check (eye distance and sharpness, below), `mesh` chips:",
        "",
        "| set | passing / faces | median eye distance (px) | median sharpness | AUC | TPR @ FPR 1e-2 | TPR @ FPR 1e-3 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, e in sets.items():
        r = e["roc_passing_quality"]
        auc = "-" if r["faces"] < 2 or not r["genuine_pairs"] else f"{r['auc']:.4f}"
        lines.append(f"| {name} | {e['passing_quality']} / {e['faces_found']} | {e['eye_distance_median']:.1f} | "
                     f"{e['sharpness_median']:.2f} | {auc} | {_pct(r.get('tpr_at_fpr_0.01'))}% | "
                     f"{_pct(r.get('tpr_at_fpr_0.001'))}% |")
    bad = result["bad_faces"]
    lines += [
        "",
        "## Bad faces: how small, how blurred",
        "",
        "Probes from KDEF and Yale (" + str(bad["conditions"][0]["probes"]) + " in all), shrunk so "
        "that their eyes are N px apart, or blurred with a Gaussian of sigma = x times their eye "
        "distance, then matched against every clean face of their set (rank-1 identification: is "
        "the nearest face the same person?).",
        "",
        "| condition | rank-1 | median eye distance (px) | median sharpness |",
        "|---|---|---|---|",
    ]
    for c in bad["conditions"]:
        label = {"clean": "clean", "size": f"eyes {c['level']} px apart", "blur": f"blur sigma {c['level']:g} x eyes"}[c["kind"]]
        lines.append(f"| {label} | {_pct(c['rank1'])}% | {c['median_eyes']:.1f} | {c['median_sharpness']:.2f} |")
    const = result["constants"]
    lines += [
        "",
        f"Rank-1 of the clean probes: {_pct(bad['clean_rank1'])}%. Going down in size, the last eye "
        f"distance whose rank-1 stays within 5 points of it: **{bad['eye_distance_cutoff']:g} px**; "
        f"going up in blur, halfway between the median sharpness of the last level within 5 points "
        f"and the first one below: **{bad['sharpness_cutoff']:.2f}**. The embedder's cut-offs "
        f"(`MIN_EYE_DISTANCE` = {const['MIN_EYE_DISTANCE']:g}, `MIN_SHARPNESS` = "
        f"{const['MIN_SHARPNESS']:g}): faces below either get no vector, and `person: null` with the "
        "reason, never a random group.",
        "",
        "## Grouping a folder into people",
        "",
        "All faces of a set are clustered (average linkage) and the tree is cut at one height "
        "(`cut`). `adaptive` (the default) fits a two-component Gaussian mixture (same person, "
        "different people) to the distances from each face to its ceil(sqrt(n)) nearest neighbours, "
        "turns every distance into the probability that the two faces are different people, and "
        "takes the cut within distances 0.35-0.85 where each face's mean probability to the nearest "
        "other group most exceeds that to its own group. `silhouette` (the earlier default) takes "
        "the cut in the same range with the best mean silhouette of the distances. `fixed` cuts at "
        "one distance for every set (0.6 is dlib's LFW threshold). Purity: share of faces in a group "
        "whose majority is their own person; inverse purity: share of a person's faces in their "
        "largest group (low when people are split).",
        "",
    ]
    for title, key in (("All faces (quality check off)", "grouping"),
                       ("Faces passing the quality check", "grouping_passing_quality")):
        lines += [f"### {title}", "",
                  "| set | faces | people (true) | method | people found | cut | ARI | purity | inverse purity |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name, e in sets.items():
            g = e[key]
            if g["faces"] < 2:
                lines.append(f"| {name} | {g['faces']} | {g['subjects']} | - | - | - | - | - | - |")
                continue
            for method in list(GROUPING_METHODS) + [f"fixed_{t:g}" for t in FIXED]:
                if method not in g:
                    continue
                m = g[method]
                lines.append(f"| {name} | {g['faces']} | {g['subjects']} | {method.replace('_', ' ')} | "
                             f"{m['people']} | {m['threshold']:.3f} | {m['ari']:.3f} | {_pct(m['purity'])}% | "
                             f"{_pct(m['inverse_purity'])}% |")
        lines.append("")
    lines += [
        "How the adaptive rule was chosen: by a principle, not by a score on these sets. A person's "
        "photos may form sub-groups (KDEF's two photo sessions per person), which any criterion of "
        "tightness (the silhouette, a gap in the merge heights) splits; what says that two sub-groups "
        "are one person is only that they are closer than *different people* are in this run. So "
        "the cut is scored on the probability of being different people, learnt from the run's own "
        "near-neighbour distances; its only settings are general ones (ceil(sqrt(n)) neighbours, the "
        "mixture's BIC, the cut range of the earlier rule), none fitted on a set, so leaving any one "
        "set out would choose the same rule. Its failure mode shows on Yale: two pairs of look-alike "
        "people, whose photos are about as far apart as one KDEF person's two sessions, are merged, "
        "because in a run this small the few neighbour distances between them are taken into the "
        "same-person mode.",
        "",
        "## Pseudo-identities for training data (`fer-tf data identities`)",
        "",
        "The manifest's subjects (`fer_tf.people.folder.pseudo_subjects`, as the command writes them: "
        "faces that fail the quality check get no subject, and the manifest reader skips them) "
        "against the true subjects. Inverse purity: how much of each true subject stays in one "
        "pseudo-subject.",
        "",
        "| set | rows with a subject / rows | pseudo-subjects (true) | ARI | purity | inverse purity |",
        "|---|---|---|---|---|---|",
    ]
    for name, e in sets.items():
        m = e["manifest"]
        lines.append(f"| {name} | {m['with_subject']} / {m['rows']} | {m['people']} ({m['true_subjects']}) | "
                     f"{m['ari']:.3f} | {_pct(m['purity'])}% | {_pct(m['inverse_purity'])}% |")
    lines += ["", "Fine-tuning on such a manifest: `fer-tf preprocess manifest.csv --format manifest "
              "--allow-outside -o runs/cache/mine` builds the face cache (the manifest's paths point "
              "back to the dataset's folder, outside the manifest's own), and a campaign reads that "
              "cache folder as its dataset (`prepared_dataset` takes a cache folder as it is).", ""]
    atomic_write_text(path, "\n".join(lines) + "\n")


def timing(found, faces=20):
    """Median ms of each step on the same faces, the steps interleaved so that the machine's load
    weighs on all of them alike."""
    from fer_tf.people.embedding import IdentityEmbedder, sharpness

    mesh = IdentityEmbedder(landmarks="mesh", min_eye_distance=0, min_sharpness=0)
    dlib5 = IdentityEmbedder(landmarks="dlib5", min_eye_distance=0, min_sharpness=0)
    steps = {"chip_mesh_ms": [], "chip_dlib5_ms": [], "sharpness_ms": [], "network_ms": []}
    usable = [(rgb, face) for rgb, face, _ in found if face is not None][:faces]
    for rgb, face in usable:
        for key, call in (("chip_dlib5_ms", lambda: dlib5.chip(rgb, face)),
                          ("chip_mesh_ms", lambda: mesh.chip(rgb, face))):
            start = time.perf_counter()
            chip = call()
            steps[key].append(time.perf_counter() - start)
        start = time.perf_counter()
        sharpness(chip)
        steps["sharpness_ms"].append(time.perf_counter() - start)
        start = time.perf_counter()
        mesh.vector(chip)
        steps["network_ms"].append(time.perf_counter() - start)
    out = {key: 1000 * float(np.median(v)) for key, v in steps.items()}
    out.update(faces=len(usable), load_average=os.getloadavg()[0])
    return out


def manifest_scores(vectors, subjects):
    """The subjects `fer-tf data identities` writes (fer_tf.people.folder.pseudo_subjects, on the
    faces that pass the quality check) against the true ones: coverage, ARI, purity."""
    from fer_tf.people.folder import pseudo_subjects
    from fer_tf.people.grouping import adjusted_rand_index, purity

    found, grouping = pseudo_subjects(vectors)
    has = np.array([f is not None for f in found])
    truth = np.asarray(subjects)[has]
    guess = np.asarray([f for f in found if f is not None])
    return {"rows": len(found), "with_subject": int(has.sum()), "people": grouping.count,
            "true_subjects": int(len(set(truth))), "ari": adjusted_rand_index(truth, guess),
            "purity": purity(truth, guess), "inverse_purity": purity(guess, truth)}


def grouping_only(args):
    """Step 4 (and the manifest scores) again from the caches, into the existing identity.json."""
    from fer_tf.errors import ConfigError
    from fer_tf.people.embedding import MIN_EYE_DISTANCE, MIN_SHARPNESS
    from fer_tf.research.reporting import run_info, write_json

    path = args.output / "identity.json"
    if not path.is_file():
        raise ConfigError(f"{path} does not exist: run the whole pipeline once (without --grouping-only)")
    result = json.loads(path.read_text())
    for name in args.sets:
        if not (CACHE / f"{name}_faces.npz").is_file() or not (CACHE / f"{name}_mesh.npz").is_file():
            raise ConfigError(f"no cached faces or embeddings of {name} under {CACHE}: run the whole "
                              "pipeline (without --grouping-only) to compute them")
        table, found = faces_of(name, args.datasets / SETS[name][0])
        subjects = list(table.subject)
        vectors, eyes, sharp, _ = embed_cached(name, "mesh", found)
        gate = (eyes >= MIN_EYE_DISTANCE) & (sharp >= MIN_SHARPNESS)
        entry = result["sets"][name]
        entry["grouping"] = grouping_scores(vectors, subjects)
        entry["grouping_passing_quality"] = grouping_scores(vectors, subjects, gate)
        entry["manifest"] = manifest_scores(np.where(gate[:, None], vectors, np.nan), subjects)
        print(f"{name}: " + ", ".join(f"{k} ARI {entry['grouping'][k]['ari']:.3f}"
                                      for k in list(GROUPING_METHODS) + [f"fixed_{t:g}" for t in FIXED]),
              flush=True)
    result["grouping_run"] = {**run_info(), "load_average": os.getloadavg()}
    write_json(path, result)
    write_markdown(result, args.output / "identity.md")
    print(f"wrote {path} and identity.md (grouping only)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", type=pathlib.Path, default=DATASETS)
    parser.add_argument("--probes", type=int, default=20, help="probes per set for the bad-face study")
    parser.add_argument("--output", type=pathlib.Path, default=OUT)
    parser.add_argument("--sets", nargs="+", choices=list(SETS), default=list(SETS))
    parser.add_argument("--grouping-only", action="store_true",
                        help="rerun only the grouping and manifest scores from the cached faces and "
                             "embeddings (runs/people/) into the existing identity.json")
    args = parser.parse_args()
    if args.grouping_only:
        return grouping_only(args)
    from fer_tf.people.embedding import MIN_EYE_DISTANCE, MIN_SHARPNESS
    from fer_tf.research.reporting import run_info, write_json

    started = time.time()
    result = {"run": run_info(), "load_average": os.getloadavg(), "sets": {}}
    chosen = {}
    for name in args.sets:
        folder = SETS[name][0]
        table, found = faces_of(name, args.datasets / folder)
        subjects = list(table.subject)
        entry = {"images": len(found), "faces_found": sum(f is not None for _, f, _ in found)}
        for mode in MODES[name]:
            vectors, eyes, sharp, ms = embed_cached(name, mode, found)
            entry[mode] = {"roc": roc(vectors, subjects), "ms_per_face": ms}
            if mode == "mesh":
                gate = (eyes >= MIN_EYE_DISTANCE) & (sharp >= MIN_SHARPNESS)
                entry["passing_quality"] = int(gate.sum())
                entry["eye_distance_median"] = float(np.nanmedian(eyes))
                entry["sharpness_median"] = float(np.nanmedian(sharp))
                entry["roc_passing_quality"] = roc(np.where(gate[:, None], vectors, np.nan), subjects)
                entry["grouping"] = grouping_scores(vectors, subjects)
                entry["grouping_passing_quality"] = grouping_scores(vectors, subjects, gate)
                entry["manifest"] = manifest_scores(np.where(gate[:, None], vectors, np.nan), subjects)
                chosen[name] = (found, vectors, subjects)
        result["sets"][name] = entry
        if name == "yale":
            result["timing"] = timing(found)
        print(f"{name}: {json.dumps({m: entry[m]['roc']['auc'] for m in MODES[name]})}", flush=True)
    cache = CACHE / f"bad_faces_{args.probes}_{'_'.join(k for k in ('kdef', 'yale') if k in chosen)}.json"
    if cache.is_file():  # the probes' records (delete runs/people to recompute)
        records = json.loads(cache.read_text())
    else:
        records = bad_faces({k: chosen[k] for k in ("kdef", "yale") if k in chosen}, args.probes)
        write_json(cache, records)
    result["bad_faces"] = summarise_bad(records)
    result["constants"] = {"MIN_EYE_DISTANCE": MIN_EYE_DISTANCE, "MIN_SHARPNESS": MIN_SHARPNESS}
    result["seconds"] = time.time() - started
    args.output.mkdir(parents=True, exist_ok=True)
    write_json(args.output / "identity.json", result)
    write_markdown(result, args.output / "identity.md")
    print(f"wrote {args.output / 'identity.json'} and identity.md")


if __name__ == "__main__":
    run(main)
