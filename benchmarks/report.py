"""results.json -> the headline figures and reports/bench/README.md."""

from __future__ import annotations

from fer_tf.research.reporting import cpu_label


def _get(d, *keys, default=None):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return d


def headline(r):
    h = {}
    tr = r.get("training")
    if tr:
        h["in_batch_speedup"] = tr["in_batch_speedup"]
        h["in_batch_queries_per_s"] = tr["in_batch"]["queries_per_s"]
        h["tuple_queries_per_s"] = tr["tuple"]["queries_per_s"]
        h["training_gflops"] = tr.get("achieved_gflops")
        h["matmul_peak_gflops"] = _get(r, "matmul_peak", "gflops")
        h["fraction_of_matmul_peak"] = tr.get("fraction_of_matmul_peak")
        h["input_bound_ratio_in_batch"] = tr["in_batch"]["input_bound_ratio"]
    race = r.get("race")
    if race:
        h["time_to_target_s"] = {m: v["time_to_target_s"] for m, v in race["modes"].items()}
        h["time_to_target_speedup"] = race.get("time_speedup")
        h["target_accuracy"] = race["target_accuracy"]
    inf = r.get("inference")
    if inf:
        h.update({k: inf["headline"].get(k) for k in (
            "tflite_ms", "tflite_variant", "fer_package_ms", "fer_own_call_ms", "tflite_vs_fer_ratio",
            "tflite_vs_fer_speedup", "end_to_end_ratio_to_fer", "flip_average_ms",
            "flip_average_vs_default_ratio", "flip_average_vs_fer_ratio")})
        h["recognizer_end_to_end_ms"] = {size: _get(row, "times_ms", "ours", "median")
                                         for size, row in (inf.get("end_to_end") or {}).items()}
    people = r.get("people")
    if people:
        h["identity_embedding_ms"] = people["per_face_ms"]["embedding"]["median"]
        h["classifier_ms_beside_embedding"] = people["per_face_ms"]["classifier"]["median"]
        h["people_video_frames_per_s"] = people["video"]["frames_per_s"]["people"]["median"]
    loss = r.get("loss")
    if loss:
        h["loss_scaling_exponent"] = {k: v["x_ge_128"] if v["x_ge_128"] is not None else v["all_sizes"]
                                      for k, v in loss["scaling_exponent"].items()}
    return h


def _f(x, digits=2, unit=""):
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:.{digits}f}{unit}"
    return f"{x}{unit}"


def _machine(r):
    m = _get(r, "run", "machine", default={})
    features = (f" with {', '.join(m['cpu_features'])} ({cpu_label(m)})" if m.get("cpu_features")
                else "")
    return (f"{m.get('cpu')}{features} ({m.get('cores')} cores as seen by the OS), {m.get('platform')}, "
            f"Python {m.get('python')}, TensorFlow {m.get('tensorflow')}, Keras {m.get('keras')}, "
            f"GPUs: {m.get('gpus')}")


def _runs(row, key):
    runs = _get(row, "network_runs", key) or {}
    return f"{sum(runs.values())}: " + ", ".join(f"{k} {v}" for k, v in sorted(runs.items())) if runs else "n/a"


def _inference_section(r):
    inf = r.get("inference")
    if not inf:
        return []
    h = r.get("headline", {})
    L = ["## 3. Inference on this CPU, against `fer` in the same process\n"]
    ours = inf.get("ours", {})
    default = ours.get("default") or {}
    L.append(f"Ours: {ours.get('source')} (`fer_tf.deploy.export.export_model`, every TFLite variant); "
             "its input is a raw 60x60 face and the preprocessing (histogram equalisation, "
             "plane fit, normalisation, centre crop) runs inside the model and is timed. `fer`: "
             "imported into this process (`benchmarks/fer_env.py`); its shipped classifier "
             "`emotion_model_quantized.tflite` (its default) on 64x64 faces scaled to [-1, 1] as "
             "`detect_emotions` does, timed both through `FER._classify_emotions` (its own call: "
             "TensorFlow's `tf.lite.Interpreter`, default threads) and in the runtime ours uses. "
             f"Both on the same {inf.get('faces')} CK+48 crops, one face per call; the rounds "
             "alternate between all models, so other processes slow them alike.\n")
    L.append("| model | runtime | threads | ms/face | top-1 agreement with Keras | outside XNNPACK |")
    L.append("|---|---|---|---|---|---|")
    pf = inf.get("per_face_ms", {})
    variants = ours.get("variants", {})

    def ms(key):
        return _f(_get(pf, key, "median"), 3)

    for v, e in variants.items():
        par = e.get("parity") or {}
        xnn = e.get("xnnpack") or {}
        fb = ", ".join(f"{k} {n}" for k, n in (xnn.get("fallback_ops") or {}).items()) or "-"
        mark = " (**default**)" if v == default.get("variant") else ""
        L.append(f"| fer_tf `{v}`{mark}: {e.get('note')} | LiteRT | 1 | {ms('fer_tf_' + v)} | "
                 f"{_f(par.get('top1_agreement') and 100 * par['top1_agreement'], 1, '%')} | {fb} |")
    if "fer_tf_default" in pf:
        L.append(f"| fer_tf `model.tflite` (the default, timed again as its own file) | LiteRT | 1 | "
                 f"{ms('fer_tf_default')} | | |")
        L.append(f"| fer_tf default, 2 threads | LiteRT | 2 | {ms('fer_tf_default_2threads')} | | |")
    if "fer_tf_default_flip_average" in pf:
        fa = ours.get("flip_average") or {}
        agree = _get(fa, "parity", "top1_agreement")
        L.append(f"| fer_tf default with `--flip-average` (face and mirror image, averaged) | LiteRT | 1 | "
                 f"{ms('fer_tf_default_flip_average')} | {_f(agree and 100 * agree, 1, '%')} | |")
        L.append(f"| fer_tf default, batch of 64 (per face) | LiteRT | 1 | "
                 f"{ms('fer_tf_default_batch64_per_face')} | | |")
    if "fer_tf_shipped_file" in pf:
        L.append(f"| `saved_models/fer_tf_basic7.tflite` as committed | LiteRT | 1 | "
                 f"{ms('fer_tf_shipped_file')} | | |")
    L.append(f"| fer_tf preprocessing alone (FacePreprocessing, fp32) | LiteRT | 1 | "
             f"{ms('fer_tf_preprocessing_only')} | | |")
    L.append(f"| fer_tf Keras inference model | TF `tf.function` | default | "
             f"{ms('fer_tf_keras_tf_function')} | | |")
    fer = inf.get("fer", {})
    if "error" in fer:
        L.append(f"\n`fer` could not be timed: {fer['error']}\n")
    else:
        L.append(f"| `fer` {fer.get('fer_version')} `emotion_model_quantized.tflite` | LiteRT | 1 | "
                 f"{ms('fer_litert')} | | |")
        L.append(f"| `fer` {fer.get('fer_version')} `FER._classify_emotions` (its own call) | "
                 f"tf.lite (TF {_get(fer, 'versions', 'tensorflow')}) | default | {ms('fer_own')} | | |")
        L.append(f"\nPer face, ours (`model.tflite` = {h.get('tflite_variant')}) against `fer`'s model in "
                 f"the same runtime: **{_f(h.get('tflite_vs_fer_ratio'))}x** its time "
                 f"(`tflite_vs_fer_ratio`; `tflite_vs_fer_speedup` = {_f(h.get('tflite_vs_fer_speedup'))}); "
                 f"against `fer`'s own call: {_f(_get(inf, 'headline', 'tflite_vs_fer_own_call_ratio'))}x.")
    if h.get("flip_average_ms"):
        L.append(f"With test-time flip averaging (`fer-tf export --flip-average`: the network also "
                 f"runs on the mirror image): {_f(h['flip_average_ms'], 3)} ms per face, "
                 f"{_f(h.get('flip_average_vs_default_ratio'))}x the default's time and "
                 f"{_f(h.get('flip_average_vs_fer_ratio'))}x `fer`'s. What it buys in accuracy is "
                 f"measured on FER2013 (`reports/fer2013`, the flip-averaged columns).")
    architectures = inf.get("architectures") or {}
    if architectures:
        L.append("\nThe networks of the Accuracy III runs that change the architecture "
                 "(`configs/accuracy3.yaml`; `reports/fer2013` has their accuracy), timed untrained "
                 "in the same rounds (the weights do not change the time), as the default's variant:\n")
        L.append("| run | options | parameters | M MACs per face | ms/face | / the default | / `fer`'s |")
        L.append("|---|---|---|---|---|---|---|")
        for name, e in architectures.items():
            options = ", ".join(f"`model.{k}={v}`" for k, v in e.get("options", {}).items())
            if "error" in e:
                L.append(f"| `{name}` | {options} | could not be exported: {e['error']} | | | | |")
                continue
            L.append(f"| `{name}` | {options} | {e.get('parameters', 0) / 1e6:.2f}M | "
                     f"{_f(e.get('macs_per_face') and e['macs_per_face'] / 1e6, 1)} | "
                     f"{_f(e.get('ms_per_face'), 3)} | {_f(e.get('vs_default_ratio'))}x | "
                     f"**{_f(e.get('vs_fer_ratio'))}x** |")
        L.append("")
    macs = inf.get("macs_per_face", {})
    if macs.get("fer_tf") and macs.get("fer"):
        L.append(f"Work per face, counted from the TFLite graphs: ours {macs['fer_tf'] / 1e6:.1f} M "
                 f"multiply-accumulates, `fer`'s {macs['fer'] / 1e6:.1f} M "
                 f"({macs['fer_tf'] / macs['fer']:.1f}x).")
    L.append(f"\nThe default: {default.get('reason')}. Parity is measured on "
             f"{ours.get('parity_faces')} of the crops. Why it is fast: the preprocessing counts grey "
             "levels with a segment sum (TFLite's `UNSORTED_SEGMENT_SUM`, a builtin) instead of a "
             "one-hot [3600 x 256] tensor per face, which took about 60% of earlier exports' time "
             "(the committed shipped file still has it); batch normalisation is folded into the "
             "convolutions by the converter; and int8 weights let XNNPACK run int8 kernels "
             "(`dynamic` quantises each layer's input per face on the fly; `int8` uses fixed scales "
             "from calibration, with PReLU and softmax kept float32 because XNNPACK has no int8 "
             "PReLU and an int8 softmax ties close classes). What stays outside XNNPACK is the "
             "preprocessing's histogram, cumulative sum, lookup and index arithmetic (the last "
             "column). With one face per call, a second thread only adds synchronisation.")
    L.append(f"\nWhat `fer` needed here: {', '.join('`' + x + '`' for x in fer.get('installed', []))}; "
             "the rest of what its image path imports is the project's own environment ("
             + ", ".join(f"{k} {v}" for k, v in (fer.get("versions") or {}).items()) + ")"
             + ("; `pkg_resources` (gone from setuptools >= 81) was given a one-function stand-in "
                "(`resource_filename`)" if fer.get("pkg_resources_stand_in") else "") + ".\n")

    e2e = inf.get("end_to_end") or {}
    if e2e:
        L.append("### End to end per photo\n")
        L.append("`Recognizer.predict` (the default small-face search down to 40 px, landmarks, "
                 "alignment, the default model on 1 thread) against `FER().detect_emotions` (OpenCV "
                 "Haar cascade, faces of at least 50 px, + its TFLite model) on "
                 "`skimage.data.astronaut()` resized (one face); alternating rounds. `ours` runs "
                 "MediaPipe's face networks directly in LiteRT (the default engine); `ours, MediaPipe "
                 "graphs` runs them in MediaPipe's graphs (`engine=\"mediapipe\"`, as the training "
                 "caches do).\n")
        L.append("| photo | ours ms | `fer` ms | ours / `fer` | ours, MediaPipe graphs | its / `fer` | "
                 "our detection / alignment / classification ms | network runs (MediaPipe graphs) | "
                 "faces ours / fer |")
        L.append("|---|---|---|---|---|---|---|---|---|")
        for size, row in e2e.items():
            t = row["times_ms"]
            st = row["stages_ms"]
            fa = row["faces"]
            L.append(f"| {size} | {_f(_get(t, 'ours', 'median'), 1)} | {_f(_get(t, 'fer', 'median'), 1)} | "
                     f"{_f(row.get('ratio_to_fer'))} | {_f(_get(t, 'ours_mediapipe_graphs', 'median'), 1)} | "
                     f"{_f(row.get('mediapipe_graphs_ratio_to_fer'))} | {_f(st['detection'], 1)} / "
                     f"{_f(st['alignment'], 1)} / {_f(st['classification_and_rest'], 1)} | "
                     f"{_runs(row, 'ours')} ({_runs(row, 'ours_mediapipe_graphs')}) | "
                     f"{fa.get('ours')} / {fa.get('fer', 'n/a')} |")
        L.append("\nDetection is most of our time, and it is network runs: `det0` is the short-range "
                 "detector on the whole photo fitted to its 128x128 input and once more on each face "
                 "found (the second look), `mesh` the landmarks on a crop around each face, `det1` the "
                 "full-range detector on the photo padded by half its size. In LiteRT, `scan` is the "
                 "short-range detector run over the photo at its own scale (it is fully "
                 "convolutional), once per 4x of face size from 40 px up to the whole photo, and the "
                 "whole-photo `det0` and `det1` run only when the scan finds no face; in MediaPipe's "
                 "graphs the small-face search is a `det0` run per 128x128 tile and the whole-photo "
                 "passes always run. Alignment (the warp to 60x60) and classification are the small "
                 "remainder. `fer`'s cascade looks for faces of 50 px and up.\n")
    return L


def _other_cpus_section(r, others):
    """Section 3's headline on each CPU of ``others``
    (:func:`fer_tf.research.reporting.other_cpu_benches`), beside this run's."""
    rows = [(name, o) for name, o in others if o.get("inference")]
    if not rows:
        return []
    L = ["### The same on other CPUs\n",
         "Which TFLite variant is fast depends on the CPU's vector instructions (int8 dot products: "
         "AVX512-VNNI, ARM dotprod), so section 3 was also run on other CPUs "
         "(`python benchmarks/run.py --sections inference --output reports/bench/cpus/NAME`); "
         "each folder has its own README.\n",
         "| CPU | vector instructions | default variant | ours ms/face | `fer` ms/face | ours / `fer` | "
         "end to end, x `fer`'s | commit |",
         "|---|---|---|---|---|---|---|---|"]
    for name, o in [("this run", r)] + rows:
        h = o.get("headline") or {}
        m = _get(o, "run", "machine", default={})
        where = "this run" if o is r else f"[`cpus/{name}`](cpus/{name}/README.md)"
        e2e = ", ".join(f"{k}: {_f(v)}x" for k, v in (h.get("end_to_end_ratio_to_fer") or {}).items())
        L.append(f"| {where} | {cpu_label(m) or 'not recorded'} | {h.get('tflite_variant')} | "
                 f"{_f(h.get('tflite_ms'), 3)} | {_f(h.get('fer_package_ms'), 3)} | "
                 f"**{_f(h.get('tflite_vs_fer_ratio'))}x** | {e2e or 'n/a'} | "
                 f"`{str(_get(o, 'run', 'git_commit', default=''))[:7]}` |")
    L.append("")
    return L


def readme(r, others=()):
    """``r`` (a results dict) as reports/bench/README.md; ``others``:
    :func:`fer_tf.research.reporting.other_cpu_benches`, shown after section 3."""
    h = r.get("headline", {})
    run = r.get("run", {})
    quick = _get(run, "config", "quick")
    L = []
    L.append("# Performance and scale (`make bench`)\n")
    if quick:
        L.append("> **Quick smoke-test run (`--quick`): tiny settings, the figures below are not "
                 "meaningful.**\n")
    L.append(f"- Command: `{run.get('make_command') or run.get('command')}`")
    L.append(f"- Date: {run.get('date')}; wall time {run.get('wall_time_s')} s; commit `{run.get('git_commit')}`")
    L.append(f"- Machine: {_machine(r)}")
    la0, la1 = r.get("load_average_start"), r.get("load_average_end")
    if la0:
        L.append(f"- Load average (1/5/15 min) at start {', '.join(f'{x:.1f}' for x in la0)}, at end "
                 f"{', '.join(f'{x:.1f}' for x in la1)}. The machine is shared: a load above the "
                 "core count means other processes took CPU time during the run, which slows every "
                 "figure; ratios measured in the same run are affected much less than absolute ones.")
    L.append(f"- Every figure is a median over {_get(r, 'settings', 'repeats')} repeats unless stated; "
             "everything compared was measured in this same run. Raw numbers: `results.json`.\n")

    L.append("## Targets\n")
    L.append("| target | measured | met? |")
    L.append("|---|---|---|")
    sp = h.get("in_batch_speedup")
    ts = h.get("time_to_target_speedup")
    if r.get("training") or r.get("race"):
        L.append(f"| `in_batch_speedup` >= 5 (queries/s, at equal accuracy) | {_f(sp)}x queries/s; "
                 f"time to {_f(h.get('target_accuracy'))} accuracy: {_f(ts)}x | "
                 f"{'yes' if sp and sp >= 5 else 'no'} (throughput); "
                 f"{'yes' if ts and ts >= 5 else ('no' if ts else 'see race')} (time to accuracy) |")
    tl, fp, ratio = h.get("tflite_ms"), h.get("fer_package_ms"), h.get("tflite_vs_fer_ratio")
    if r.get("inference"):
        L.append(f"| TFLite per-face latency at or below `fer`'s (one process, 1 thread, XNNPACK) | "
                 f"ours {_f(tl, 3)} ms (default `model.tflite` = {h.get('tflite_variant')}), `fer` "
                 f"{_f(fp, 3)} ms: **{_f(ratio)}x** | {'yes' if ratio and ratio <= 1 else 'no'} |")
        e2e = h.get("end_to_end_ratio_to_fer") or {}
        small = {k: v for k, v in e2e.items() if k in ("256x256", "512x512")}
        met = bool(small) and all(v is not None and v <= 0.5 for v in small.values())
        L.append("| end to end per photo at most 0.5x `fer`'s (256x256 and 512x512) | "
                 + ", ".join(f"{k}: {_f(v)}x" for k, v in e2e.items())
                 + f" | {'yes' if met else 'no'} (see 3) |")
    fr = h.get("fraction_of_matmul_peak")
    if r.get("training"):
        L.append(f"| training at a substantial fraction of the matmul peak | {_f(fr and 100 * fr, 1)}% "
                 f"({_f(h.get('training_gflops'), 1)} of {_f(h.get('matmul_peak_gflops'), 1)} GFLOP/s) | "
                 f"{'yes' if fr and fr >= 0.5 else 'partly' if fr and fr >= 0.2 else 'no'} (see 4 for what limits it) |")
    from benchmarks import people_bench

    if people_bench.target_row(r):
        L.append(people_bench.target_row(r))
    L.append("")

    tr = r.get("training")
    if tr:
        L.append("## 1. Training throughput: `in_batch` against the paper's `tuple` mode\n")
        L.append("Same model (`build_model(\"2B(N+M)\", labels=CKPLUS7)`, M = N = 6, Adam) and CK+48 "
                 "faces; `identity_aware_dataset` with the package defaults. `in_batch`: 64 images per "
                 "step, every image is a query whose positives and negatives are other images of the "
                 "batch. `tuple`: 12 queries per step, each with its own 5 positives and 6 negatives "
                 "as separate images (144 images). Step time fed by the tf.data pipeline, "
                 f"{_get(r, 'settings', 'train_steps')} steps per repeat.\n")
        L.append("| mode | images/step | queries/step | s/step | queries/s | images/s |")
        L.append("|---|---|---|---|---|---|")
        for m in ("in_batch", "tuple"):
            t = tr[m]
            L.append(f"| {m} | {t['images_per_step']} | {t['queries_per_step']} | "
                     f"{_f(t['step_with_pipeline_s']['median'], 3)} | {_f(t['queries_per_s'], 1)} | "
                     f"{_f(t['images_per_s'], 1)} |")
        L.append(f"\n`in_batch_speedup` = **{_f(sp)}x** queries per second. Images per second are "
                 "about the same in both modes (the network's cost is per image); the gain is that "
                 "in `in_batch` mode every image is also a query, while in `tuple` mode 11 of every "
                 "12 images only serve one query's tuple.\n")
    race = r.get("race")
    if race:
        L.append("### Time to the same validation accuracy\n")
        L.append(f"Fold {race['fold']} of CK+48 ({race['train_images']} training, {race['val_images']} "
                 f"validation faces, subject-disjoint), both modes from the same random initialisation "
                 f"(no pretraining), Adam lr {race['learning_rate']}; validation accuracy (EC branch, "
                 f"centre crop) every ~{_get(r, 'settings', 'race_eval_every_s')} s of training; "
                 f"evaluation time is not counted. Target {race['target_accuracy']:.2f} "
                 f"(modest: chance is ~0.25 for the largest class), budget {race['budget_s']:.0f} s "
                 "of training per mode.\n")
        L.append("| mode | reached | training time | steps | epochs | best val. accuracy |")
        L.append("|---|---|---|---|---|---|")
        for m, v in race["modes"].items():
            L.append(f"| {m} | {'yes' if v['reached'] else 'no'} | {_f(v['time_to_target_s'], 1, ' s')} | "
                     f"{_f(v['steps_to_target'])} | {_f(v['epochs_to_target'])} | {_f(v['best_val_accuracy'], 3)} |")
        if race.get("time_speedup"):
            L.append(f"\nTime-to-accuracy speedup of `in_batch`: **{race['time_speedup']:.2f}x**.")
        elif race.get("time_speedup_lower_bound"):
            L.append(f"\n`tuple` mode did not reach the target within the budget: the speedup is at "
                     f"least {race['time_speedup_lower_bound']:.2f}x.")
        else:
            L.append("\n`in_batch` did not reach the target within the budget in this run.")
        ia, tu = race["modes"]["in_batch"], race["modes"]["tuple"]
        if tr and ia["reached"] and tu["reached"]:
            ia_img = ia["steps_to_target"] * tr["in_batch"]["images_per_step"]
            tu_img = tu["steps_to_target"] * tr["tuple"]["images_per_step"]
            ia_q = ia["steps_to_target"] * tr["in_batch"]["queries_per_step"]
            tu_q = tu["steps_to_target"] * tr["tuple"]["queries_per_step"]
            L.append(f"Why the {sp:.1f}x in queries/s becomes {race.get('time_speedup', 0):.2f}x in time to "
                     f"accuracy: to reach the target, `in_batch` passed {ia_img:,} images ({ia_q:,} queries) "
                     f"through the network, `tuple` {tu_img:,} images but only {tu_q:,} queries. Both modes "
                     "process images at the same rate, and from scratch the backbone learns from every "
                     "image that the metric loss sees (in `tuple` mode, also the positives and "
                     "negatives of each query), not only from the classified queries. So per second "
                     "of training the two modes improve the features at similar rates; `in_batch` "
                     "mode's advantage is that every image also trains the classifier. The "
                     "queries/s target (>= 5x) is met; at equal accuracy, measured as wall time in "
                     "this run, it is not.")
        L.append("Validation accuracy from scratch on ~200 faces is noisy from one evaluation to the "
                 "next (dropout 0.5, no pretraining), so the time to a single threshold has a "
                 "granularity of one evaluation interval; the curves are in `results.json`.\n")

    people = r.get("people")
    if people:
        h["identity_embedding_ms"] = people["per_face_ms"]["embedding"]["median"]
        h["classifier_ms_beside_embedding"] = people["per_face_ms"]["classifier"]["median"]
        h["people_video_frames_per_s"] = people["video"]["frames_per_s"]["people"]["median"]
    loss = r.get("loss")
    if loss:
        L.append("## 2. Loss + mining cost as the batch grows\n")
        L.append(f"Forward and backward of each loss on precomputed random L2-normalised embeddings "
                 f"(d = {loss['embedding_dim']}), M = N = {loss['M']}, in a warmed-up `tf.function`; "
                 "milliseconds per step (median).\n")
        sizes = [str(x) for x in loss["sizes"]]
        L.append("| loss | " + " | ".join(f"X={x}" for x in sizes) + " | exponent (X>=128) | Section 3 count |")
        L.append("|---|" + "---|" * len(sizes) + "---|---|")
        for name, rows in loss["ms_per_step"].items():
            cells = [(_f(rows[x]["median"], 2) if "median" in rows.get(x, {}) else "skipped")
                     for x in sizes]
            s = loss["scaling_exponent"][name]
            exp = s["x_ge_128"] if s["x_ge_128"] is not None else s["all_sizes"]
            L.append(f"| {name} | " + " | ".join(cells) + f" | {_f(exp)} | {s['count']} |")
        skipped = [(n, x, v["skipped"]) for n, rows in loss["ms_per_step"].items()
                   for x, v in rows.items() if "skipped" in v]
        if skipped:
            L.append("\nSkipped (memory): " + "; ".join(f"{n} at X={x}: {why}" for n, x, why in skipped)
                     + ". The limit is the smaller of a fixed cap and half the memory available "
                       "when the section starts.")
        L.append("\nThe exponent is the log-log slope of time against X (fitted on X >= 128, where "
                 "fixed per-call overhead no longer dominates). The (N+M)-tuple clusters loss "
                 "computes 2(N+M)X distances and is linear; at small X the time is dominated by "
                 "the fixed cost of launching ~50 small ops, so the slope over all sizes is below 1. "
                 "Batch-all triplet mining forms all X^3 (anchor, positive, negative) triples and "
                 "grows cubically in time and memory. Our (N+1)-tuple loss gathers N negatives per "
                 "query from the same tuple indices, so it is linear too; the paper's (X+1)X^2 count "
                 "is for forming (N+1)-tuples from every pair of a batch.\n")

    L.extend(_inference_section(r))
    if r.get("inference"):
        L.extend(_other_cpus_section(r, others))

    if tr:
        L.append("## 4. Achieved training FLOP/s against the matmul peak\n")
        peak = r["matmul_peak"]
        L.append(f"- Peak: a {peak['before']['n']}^3 float32 `tf.matmul` (2n^3 FLOPs), median of "
                 f"repeats, measured before and after the training section: "
                 f"{_f(peak['before']['gflops'], 1)} and {_f(peak['after']['gflops'], 1)} GFLOP/s; the "
                 f"higher is used: **{_f(peak['gflops'], 1)} GFLOP/s**.")
        L.append(f"- Model: {tr['macs_per_image'] / 1e6:.1f} M forward MACs per 48x48 face, counted "
                 "from the layer shapes by `benchmarks/flops.py` (Conv2D, Dense, ConnectingLayer); "
                 f"training FLOPs = MACs x 2 x 3 = {tr['training_flops_per_image'] / 1e6:.0f} MFLOP per image. "
                 "Largest layers: " + ", ".join(f"{k} {v / 1e6:.1f}M" for k, v in list(tr['largest_layers_macs'].items())[:4]) + ".")
        L.append(f"- Achieved: {tr['in_batch']['images_per_s_compute_only']:.1f} images/s (in_batch, "
                 f"step on a cached batch) x {tr['training_flops_per_image'] / 1e6:.0f} MFLOP = "
                 f"**{_f(tr['achieved_gflops'], 1)} GFLOP/s = {100 * tr['fraction_of_matmul_peak']:.1f}% "
                 "of the matmul peak**.")
        low = min(peak["before"]["gflops"], peak["after"]["gflops"])
        if low < 0.8 * peak["gflops"]:
            L.append(f"- The two peak measurements differ ({low:.1f} vs {peak['gflops']:.1f} GFLOP/s): "
                     "other processes on this shared machine took CPU time during one of them. "
                     f"Against the lower one the fraction would be {100 * tr['achieved_gflops'] / low:.0f}%; "
                     "the higher one is the better estimate of what the cores can do.")
        L.append("\nWhat limits it: (a) the convolutions are small: after the 7x7/2 stem the maps are "
                 "12x12, 6x6 and 3x3, so each GEMM that oneDNN runs is short and thin and spends a "
                 "large share of its time packing data rather than in the inner kernel; (b) every "
                 "convolution is followed by batch normalisation and a per-channel PReLU, and the "
                 "inception blocks concatenate their branches: these are memory-bound elementwise "
                 "ops, each a full pass over the activations forward and backward, with no FLOPs "
                 "counted; (c) Adam updates ~all weights every step (memory-bound); (d) with 64 "
                 "images per step, per-op dispatch overhead of the TF executor (hundreds of ops per "
                 "step) is not negligible; (e) on a shared 2-core machine, other processes take "
                 "part of the cores (see the load average). A larger batch or XLA (`jit_compile`) "
                 "fuses the elementwise ops and raises the fraction; the NHWC 1x1 convolutions, which "
                 "are most of the inception blocks, are already plain GEMMs.\n")

    pre = r.get("preprocess")
    if pre or tr:
        L.append("## 5. Preprocessing, alignment and the input pipeline\n")
    if pre:
        n = pre["normalize"]
        L.append("| stage | faces/s |")
        L.append("|---|---|")
        L.append(f"| `normalize_faces` in a `tf.function`, batches of {n['tf_function']['batch']} | {_f(n['tf_function']['faces_per_s'], 0)} |")
        L.append(f"| `normalize_faces` eager, batches of {n['eager']['batch']} | {_f(n['eager']['faces_per_s'], 0)} |")
        for fmt, a in pre["align"].items():
            if "skipped" in a:
                L.append(f"| `FaceAligner.align` {fmt} | skipped: {a['skipped']} |")
            else:
                L.append(f"| `FaceAligner.align` on {a['photos']} {fmt} photos ({a['photo_shape'][1]}x{a['photo_shape'][0]}), "
                         f"{a['ms_per_photo']['median']:.1f} ms/photo, face found {a['face_found_fraction']:.0%} | {_f(a['faces_per_s'], 1)} |")
        L.append("")
    if tr:
        L.append("Is training input-bound? The tf.data pipeline alone (index sampling in NumPy, "
                 "gather, random crop and flip) against a training step on a cached batch:\n")
        L.append("| mode | pipeline ms/batch | step ms (cached batch) | step ms (fed by pipeline) | pipeline / step |")
        L.append("|---|---|---|---|---|")
        for m in ("in_batch", "tuple"):
            t = tr[m]
            L.append(f"| {m} | {t['pipeline_only_s_per_batch']['median'] * 1e3:.1f} | "
                     f"{t['step_s']['median'] * 1e3:.0f} | {t['step_with_pipeline_s']['median'] * 1e3:.0f} | "
                     f"{t['input_bound_ratio']:.3f} |")
        L.append("\nA ratio well below 1 means the pipeline (prefetching in the background) keeps up "
                 "and training is compute-bound; faces are normalised once and kept in memory, so "
                 "per batch only a gather and a crop remain.\n")
    L.extend(people_bench.readme_section(r, 6))
    L.append("## Reproduce\n")
    L.append("```\nmake bench            # = .venv/bin/python benchmarks/run.py\n"
             ".venv/bin/python benchmarks/run.py --quick --output /tmp/bench   # smoke test, seconds\n```")
    L.append("The first run builds the CK+48 face cache under `runs/cache` and installs `fer` "
             "(without its dependencies) into `.venv-bench/fer` from the package index; later runs "
             "reuse both.")
    return "\n".join(L) + "\n"
