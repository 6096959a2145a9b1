"""Smoke test of the benchmark code (benchmarks/) with tiny settings: `make bench` stays runnable."""

from __future__ import annotations

import json
import math
import pathlib
import sys

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # benchmarks/ is not part of the installed package
    sys.path.insert(0, str(REPO))


def test_flop_counter_counts_conv_dense_and_connecting_layer():
    import keras

    from benchmarks import flops
    from fer_tf.metric.layers import ConnectingLayer

    x = keras.Input((8, 8, 3))
    y = keras.layers.Conv2D(4, 3, padding="same", name="c")(x)  # 8*8*3*3*3*4 = 6912
    y = keras.layers.GlobalAveragePooling2D()(y)
    a = keras.layers.Dense(5, name="d")(y)  # 4*5 = 20
    b = keras.layers.Dense(6, name="e")(y)  # 4*6 = 24
    z = ConnectingLayer(7, name="k")([a, b])  # (5+6)*7 = 77
    total, per_layer = flops.model_macs(keras.Model(x, z))
    assert per_layer == {"c": 6912, "d": 20, "e": 24, "k": 77}
    assert total == 7033


def test_full_model_flops_are_in_the_expected_range():
    from benchmarks import flops
    from fer_tf.data.labels import CKPLUS7
    from fer_tf.model.network import build_model

    macs, _ = flops.model_macs(build_model("2B(N+M)", labels=CKPLUS7))
    assert 30e6 < macs < 70e6  # the inception FER network: ~44 M MACs per 48x48 face


def test_log_slope_and_summary():
    from benchmarks.common import log_slope, summary

    xs = [32, 64, 128, 256]
    assert math.isclose(log_slope(xs, [x ** 3 for x in xs]), 3.0, rel_tol=1e-6)
    assert log_slope([1], [1]) is None
    s = summary([3.0, 1.0, 2.0], scale=10)
    assert s == {"median": 20.0, "min": 10.0, "max": 30.0, "repeats": 3}


def test_loss_section_tiny():
    from benchmarks import loss_bench
    from benchmarks.common import Settings

    settings = Settings.quick_settings()
    settings.loss_sizes = (8, 16)
    settings.repeats = 1
    out = loss_bench.run(settings, log=lambda *_: None)
    for name in ("nm_tuple_clusters", "n_plus_one_tuple", "batch_all_triplet"):
        assert out["ms_per_step"][name]["16"]["median"] > 0
    assert set(out["scaling_exponent"]) >= {"nm_tuple_clusters", "batch_all_triplet"}


def test_runner_writes_results_and_readme(tmp_path):
    """run.py end to end on the one section that needs no data (seconds)."""
    from benchmarks import run

    out = tmp_path / "bench"
    results = run.run(run.parse_args(["--quick", "--output", str(out), "--sections", "loss"]))
    data = json.loads((out / "results.json").read_text())
    assert data["headline"] == results["headline"]
    assert "nm_tuple_clusters" in data["headline"]["loss_scaling_exponent"]
    assert data["run"]["machine"]["cores"] and data["run"]["machine"]["cpu"]
    readme = (out / "README.md").read_text()
    assert "## 2." in readme and "Machine:" in readme and "Quick smoke-test" in readme


@pytest.mark.integration
def test_people_section_embedding_beside_classifier(tmp_path, datasets_dir):
    """The people section on tiny settings: per-face costs and the --people video figure."""
    from benchmarks import run

    out = tmp_path / "bench"
    results = run.run(run.parse_args(["--quick", "--output", str(out), "--sections", "people",
                                      "--datasets", str(datasets_dir)]))
    people = results["people"]
    assert set(people["per_face_ms"]) == {"classifier", "embedding", "embedding_network_only"}
    assert people["per_face_ms"]["embedding"]["median"] > people["per_face_ms"]["classifier"]["median"]
    video = people["video"]
    assert video["size"] == [640, 480] and video["frames_per_s"]["people"]["median"] > 0
    assert 1 <= video["embeddings"]["attempts"] < video["frames"]  # only where tracking needs it
    readme = (out / "README.md").read_text()
    assert "## 6. People" in readme and "`--people` on a 640x480 one-face video" in readme
    assert "in_batch_speedup" not in readme  # no training section, no training target


@pytest.mark.slow
@pytest.mark.integration
def test_benchmark_quick_run_writes_results_and_readme(tmp_path, ckplus48_dir):
    """The training sections on tiny settings (about a minute or two: the model is traced for
    both modes and twice more for the race); the inference section is left out (it exports and
    may build .venv-bench)."""
    from benchmarks import run

    out = tmp_path / "bench"
    args = run.parse_args(["--quick", "--output", str(out), "--datasets", str(ckplus48_dir.parent),
                           "--sections", "training,race,loss"])
    results = run.run(args)
    data = json.loads((out / "results.json").read_text())
    assert data["headline"]["in_batch_speedup"] > 0
    assert np.isfinite(data["training"]["fraction_of_matmul_peak"])
    assert data["run"]["machine"]["cores"]
    assert set(data["race"]["modes"]) == {"in_batch", "tuple"}
    readme = (out / "README.md").read_text()
    assert "in_batch_speedup" in readme and "Machine:" in readme and "Quick smoke-test" in readme
    assert results["headline"] == data["headline"]


def test_readme_renders_a_full_results_dict():
    """report.readme on a synthetic results dict with every section (no measuring)."""
    from benchmarks import report

    mode = {"images_per_step": 64, "queries_per_step": 64, "steps_per_epoch": 16,
            "step_s": {"median": 0.3}, "step_with_pipeline_s": {"median": 0.31},
            "pipeline_only_s_per_batch": {"median": 0.002}, "queries_per_s": 200.0,
            "images_per_s": 200.0, "images_per_s_compute_only": 210.0, "input_bound_ratio": 0.01}
    tuple_mode = dict(mode, images_per_step=144, queries_per_step=12, queries_per_s=20.0)
    timing = {"median": 1.0, "min": 1.0, "max": 1.0, "repeats": 1}
    r = {
        "settings": {"repeats": 1, "train_steps": 1, "race_eval_every_s": 1},
        "training": {"in_batch": mode, "tuple": tuple_mode, "in_batch_speedup": 10.0,
                     "macs_per_image": 43e6, "training_flops_per_image": 258e6,
                     "largest_layers_macs": {"a": 1e6}, "achieved_gflops": 20.0,
                     "fraction_of_matmul_peak": 0.4},
        "matmul_peak": {"before": {"n": 8, "gflops": 50.0}, "after": {"n": 8, "gflops": 48.0}, "gflops": 50.0},
        "race": {"fold": "f", "train_images": 1, "val_images": 1, "learning_rate": 1e-3,
                 "target_accuracy": 0.5, "budget_s": 10, "time_speedup": 6.0,
                 "modes": {m: {"reached": True, "time_to_target_s": 1.0, "steps_to_target": 1,
                               "epochs_to_target": 1.0, "best_val_accuracy": 0.6, "curve": []}
                           for m in ("in_batch", "tuple")}},
        "loss": {"embedding_dim": 4, "M": 6, "N": 6, "sizes": [8],
                 "ms_per_step": {"nm_tuple_clusters": {"8": timing}},
                 "scaling_exponent": {"nm_tuple_clusters": {"all_sizes": 1.0, "x_ge_128": None,
                                                            "count": "c", "paper_exponent": 1}}},
        "inference": {
            "faces": 4,
            "ours": {"source": "s", "parity_faces": 2,
                     "variants": {"dynamic": {"status": "ok", "note": "dynamic range",
                                              "parity": {"top1_agreement": 1.0},
                                              "xnnpack": {"fallback_ops": {"CUMSUM": 1}}}},
                     "default": {"variant": "dynamic", "reason": "fastest"},
                     "flip_average": {"note": "dynamic range", "parity": {"top1_agreement": 0.99}}},
            "per_face_ms": {k: timing for k in ("fer_tf_dynamic", "fer_tf_default", "fer_litert",
                                                "fer_own", "fer_tf_preprocessing_only",
                                                "fer_tf_default_flip_average")},
            "macs_per_face": {"fer_tf": 42e6, "fer": 10e6},
            "architectures": {"wide": {"options": {"width": 0.5}, "variant": "dynamic", "parameters": 530000,
                                       "macs_per_face": 11.1e6, "ms_per_face": 0.35,
                                       "vs_fer_ratio": 0.7, "vs_default_ratio": 0.875},
                              "broken": {"options": {"extra_blocks": 3}, "error": "no converter"}},
            "fer": {"fer_version": "x", "versions": {"tensorflow": "y"}, "installed": ["fer==x"]},
            "headline": {"tflite_ms": 0.4, "tflite_variant": "dynamic", "fer_package_ms": 0.5,
                         "tflite_vs_fer_ratio": 0.8, "tflite_vs_fer_speedup": 1.25,
                         "flip_average_ms": 0.7, "flip_average_vs_default_ratio": 1.75,
                         "flip_average_vs_fer_ratio": 1.4,
                         "end_to_end_ratio_to_fer": {"256x256": 0.6, "512x512": 0.4}},
            "end_to_end": {size: {"times_ms": {k: timing for k in ("ours", "ours_mediapipe_graphs", "fer")},
                                  "stages_ms": {"detection": 1.0, "alignment": 0.1,
                                                "classification_and_rest": 0.5},
                                  "faces": {"ours": 1, "fer": 1}, "ratio_to_fer": ratio,
                                  "mediapipe_graphs_ratio_to_fer": 1.5,
                                  "network_runs": {"ours": {"det0": 2, "scan": 1, "mesh": 1},
                                                   "ours_mediapipe_graphs": {"det0": 7, "det1": 1, "mesh": 1}}}
                           for size, ratio in (("256x256", 0.6), ("512x512", 0.4))}},
        "preprocess": {"normalize": {"tf_function": {"batch": 4, "faces_per_s": 1.0},
                                     "eager": {"batch": 4, "faces_per_s": 1.0}},
                       "align": {"kdef": {"skipped": "not found"}}},
        "load_average_start": [1.0, 1.0, 1.0], "load_average_end": [1.0, 1.0, 1.0],
        "run": {"command": "c", "date": "d", "machine": {"cpu": "cpu", "cores": 2}},
    }
    r["headline"] = report.headline(r)
    text = report.readme(r)
    for needle in ("## 1.", "## 2.", "## 3.", "## 4.", "## 5.", "10.00x", "| yes |", "| no (see 3) |", "**0.80x**",
                   "256x256: 0.60x, 512x512: 0.40x", "4: det0 2, mesh 1, scan 1 (9: det0 7, det1 1, mesh 1)",
                   "(**default**)", "| 1.50 |", "`--flip-average` (face and mirror image, averaged)",
                   "0.700 ms per face, 1.75x the default's time and 1.40x `fer`'s", "| 99.0% |",
                   "| `wide` | `model.width=0.5` | 0.53M | 11.1 | 0.350 | 0.88x | **0.70x** |",
                   "| `broken` | `model.extra_blocks=3` | could not be exported: no converter |"):
        assert needle in text, needle
    assert r["headline"]["tflite_vs_fer_ratio"] == 0.8
    assert r["headline"]["flip_average_vs_fer_ratio"] == 1.4
    assert "other CPUs" not in text


def test_readme_lists_the_benches_of_other_cpus_and_renders_again_without_measuring(tmp_path, capsys):
    """A bench in <output>/cpus/NAME (run.py --sections inference --output ...) gets a row beside
    this run's in section 3; --readme-only writes README.md from results.json alone."""
    from benchmarks import run
    from fer_tf.research.reporting import other_cpu_benches

    def results(variant, ms, fer_ms, features, commit):
        return {"inference": {"ours": {}, "per_face_ms": {}, "headline": {}},
                "headline": {"tflite_variant": variant, "tflite_ms": ms, "fer_package_ms": fer_ms,
                             "tflite_vs_fer_ratio": ms / fer_ms,
                             "end_to_end_ratio_to_fer": {"256x256": 0.5}},
                "run": {"git_commit": commit, "machine": {"cpu": "c", "cores": 2,
                                                           "cpu_features": features}}}

    out = tmp_path / "bench"
    (out / "cpus" / "vnni").mkdir(parents=True)
    (out / "cpus" / "broken").mkdir()
    (out / "cpus" / "broken" / "results.json").write_text("{not json")
    (out / "results.json").write_text(json.dumps(results("fp32", 1.0, 0.4, ["avx2"], "a" * 40)))
    (out / "cpus" / "vnni" / "results.json").write_text(
        json.dumps(results("dynamic", 0.3, 0.5, ["avx2", "avx512_vnni"], "b" * 40)))
    assert [name for name, _ in other_cpu_benches(out)] == ["vnni"]
    assert "left out" in capsys.readouterr().err  # the unreadable one is named, not hidden
    run.main(["--readme-only", "--output", str(out)])
    text = (out / "README.md").read_text()
    assert "### The same on other CPUs" in text
    assert "| this run | AVX2 | fp32 | 1.000 | 0.400 | **2.50x** | 256x256: 0.50x | `aaaaaaa` |" in text
    assert ("| [`cpus/vnni`](cpus/vnni/README.md) | AVX512-VNNI | dynamic | 0.300 | 0.500 | **0.60x** "
            "| 256x256: 0.50x | `bbbbbbb` |") in text
    with pytest.raises(SystemExit, match="run `python benchmarks/run.py --output"):
        run.main(["--readme-only", "--output", str(tmp_path / "none")])


def test_the_campaigns_networks_are_read_from_its_plan(tmp_path):
    from benchmarks import inference_bench

    found = inference_bench.campaign_architectures()
    assert found == {"extra-blocks-3-75-epochs": {"extra_blocks": 3},
                     "width-0.5-distilled-75-epochs": {"width": 0.5}}
    plan = tmp_path / "plan.yaml"
    plan.write_text("runs:\n  a: {set: [model.width=0.5, train.mixing=mixup]}\n"
                    "  b: {set: [model.width=0.5]}\n  c: {set: [train.epochs=3]}\n")
    assert inference_bench.campaign_architectures(plan) == {"a": {"width": 0.5}}
    assert inference_bench.campaign_architectures(tmp_path / "none.yaml") == {}


def test_interleaved_timing_and_tflite_macs(tmp_path):
    import tensorflow as tf

    from benchmarks import inference_bench

    calls = []
    out = inference_bench.interleaved_ms({"a": calls.append, "b": lambda x: None},
                                         {"a": [1, 2], "b": [3]}, calls=3, repeats=2)
    assert set(out) == {"a", "b"} and out["a"]["repeats"] == 2 and out["a"]["calls_per_repeat"] == 3
    assert calls == [1, 1, 1, 2, 1, 2, 1, 2]  # two warm-up calls, then rounds of 3
    import keras

    inp = keras.Input((8, 8, 1), batch_size=1)
    x = keras.layers.Conv2D(4, 3, padding="same")(inp)  # 8*8*4 outputs x 3*3*1 = 2304
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)  # 8*8*4 x 3*3 = 2304
    x = keras.layers.Dense(5)(keras.layers.Flatten()(x))  # 5 x 256 = 1280
    path = tmp_path / "m.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(keras.Model(inp, x)).convert())
    assert inference_bench.tflite_macs(path) == 2304 + 2304 + 1280


def test_fer_env_stand_in_for_pkg_resources(monkeypatch):
    from benchmarks import fer_env

    monkeypatch.setitem(sys.modules, "pkg_resources", None)  # "import pkg_resources" fails
    assert fer_env._pkg_resources_stand_in() is True
    module = sys.modules["pkg_resources"]
    assert module.resource_filename("json", "__init__.py").endswith("__init__.py")


def test_version_comparison_reads_training_and_loss_step_times():
    from benchmarks import compare_versions

    result = {"training": {"in_batch": {"images_per_step": 64, "step_s": {"median": 0.25},
                                        "step_with_pipeline_s": {"median": 0.26}},
                           "race": "not a mode"},
              "loss": {"ms_per_step": {"nm": {"32": {"median": 3.0}, "64": "skipped"}}}}
    figures = compare_versions.figures(result)
    assert figures == {"training step, in_batch (64 images)": 0.25,
                       "training step with input pipeline, in_batch": 0.26, "loss nm, X=32": 0.003}


def test_version_comparison_spread_and_operation_rows():
    from benchmarks import compare_versions

    def run(step):
        return {"training": {"in_batch": {"images_per_step": 64, "step_s": {"median": step}}}}

    spread = compare_versions.spread([run(0.2), run(0.25), run(0.22)])
    assert spread == {"training step, in_batch (64 images)": pytest.approx(1.25)}
    assert compare_versions.spread([run(0.2)]) == {}  # one round: no spread

    ops = {"before": {"training": {"in_batch": 100}, "loss": {"nm": 10, "gone": 5}},
           "after": {"training": {"in_batch": 103}, "loss": {"nm": 9, "new": 7}}}
    assert compare_versions.op_rows(ops, 64) == [("training step, in_batch", 100, 103),
                                                 ("loss nm, X=64", 10, 9)]
    pairs = {"in_batch": {"ratio": 1.0, "ci95": [0.98, 1.02]}, "loss a": {"ratio": 1.12, "ci95": [1.06, 1.18]},
             "loss b": {"ratio": 0.9, "ci95": [0.85, 0.95]}}
    assert compare_versions.paired_verdict(pairs) == (
        "slower after: loss a (1.12x); faster after: loss b (0.90x); no measured change: in_batch.")


def test_paired_timing_ratio_and_interval():
    from benchmarks import paired_steps

    same = paired_steps.ratio_summary([(0.10, 0.10), (0.20, 0.20), (0.12, 0.12)], samples=2000)
    assert same["ratio"] == pytest.approx(1.0) and same["ci95"] == pytest.approx([1.0, 1.0])
    # a 10% slowdown under a load that doubles from one pair to the next is still 1.10
    drift = [(0.1 * 2 ** i, 0.11 * 2 ** i) for i in range(6)]
    s = paired_steps.ratio_summary(drift, samples=2000)
    assert s["ratio"] == pytest.approx(1.1) and s["ci95"][0] == pytest.approx(1.1)
    assert s["pairs"] == 6 and s["before_s"] == pytest.approx(0.6) and s["after_s"] == pytest.approx(0.66)
    noisy = paired_steps.ratio_summary([(1.0, 1.05), (1.0, 0.95), (1.0, 1.1), (1.0, 0.9)], samples=2000)
    assert noisy["ci95"][0] < 1.0 < noisy["ci95"][1]  # no measured change


def test_paired_timing_alternates_two_workers(monkeypatch):
    from benchmarks import paired_steps

    calls = []

    class FakeWorker:
        def __init__(self, clone, python, datasets, cache):
            self.name, self.modes = clone, ["in_batch", "tuple", "loss nm"]

        def time(self, mode, steps):
            calls.append((self.name, mode, steps))
            return 0.2 if self.name == "before" else 0.1

        def close(self):
            calls.append((self.name, "closed", 0))

    monkeypatch.setattr(paired_steps, "_Worker", FakeWorker)
    out = paired_steps.paired({"before": "before", "after": "after"}, "python", "data",
                              {"before": "c1", "after": "c2"}, pairs=3, log=lambda m: None)
    assert set(out) == {"in_batch", "tuple", "loss nm"}
    assert out["tuple"]["ratio"] == pytest.approx(0.5) and out["tuple"]["pairs"] == 3
    assert out["tuple"]["calls_per_timing"] == paired_steps.WORKER_STEPS
    assert out["loss nm"]["calls_per_timing"] == paired_steps.LOSS_CALLS
    timed = [c for c in calls if c[1] != "closed"]
    assert {c[2] for c in timed if c[1] == "loss nm"} == {paired_steps.LOSS_CALLS}
    assert len(timed) == 18 and {c[0] for c in calls if c[1] == "closed"} == {"before", "after"}


def test_graph_operation_count_follows_nested_functions():
    import tensorflow as tf

    from benchmarks import graph_ops

    @tf.function
    def inner(x):
        return tf.square(x) + 1.0

    @tf.function
    def outer(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.reduce_sum(inner(x))
        return tape.gradient(y, x)

    def wrapper(x):  # a plain function holding the tf.function in its closure, as Keras does
        return outer(x)

    outer(tf.constant([1.0, 2.0]))
    found = graph_ops._tf_functions(wrapper)
    assert found == [outer]
    counts = graph_ops._graph_ops(found)
    assert counts["Square"] >= 1  # inside the nested function's graph
    alone = graph_ops._graph_ops([outer])
    assert sum(counts.values()) == sum(alone.values()) > 5
    top_level = sum(len(c.graph.get_operations()) for c in outer._list_all_concrete_functions())
    assert sum(counts.values()) > top_level  # the graphs outer calls are counted too




def _fer2013_sample(tmp_path, per_folder=2):
    """A FER2013 image-folder layout of a few real test images of each split and label."""
    source = REPO.parent / "shared" / "datasets" / "fer2013" / "test"
    if not source.is_dir():
        pytest.skip("needs ../shared/datasets/fer2013")
    import shutil

    for folder in sorted(source.iterdir()):
        for split in ("PublicTest", "PrivateTest"):
            for path in sorted(folder.glob(f"{split}_*"))[:per_folder]:
                (tmp_path / "test" / folder.name).mkdir(parents=True, exist_ok=True)
                shutil.copy(path, tmp_path / "test" / folder.name / path.name)
    return tmp_path


def test_fer_accuracy_reads_the_test_splits_as_fer_preprocesses_a_face(tmp_path):
    from benchmarks import fer_accuracy

    data = _fer2013_sample(tmp_path / "fer2013")
    found = fer_accuracy.test_images(data)
    assert {len(v) for v in found.values()} == {14} and all(p.name.startswith(s) for s, v in found.items()
                                                            for p, _ in v)
    faces = fer_accuracy.fer_inputs([p for p, _ in found["PublicTest"]])
    assert faces.shape == (14, 64, 64) and faces.dtype == np.float32
    assert -1.0 <= faces.min() < 0 < faces.max() <= 1.0
    with pytest.raises(SystemExit, match="no PublicTest or PrivateTest images in .*pass the FER2013 image folders"):
        fer_accuracy.test_images(tmp_path / "empty")


@pytest.mark.skipif(not __import__("benchmarks.fer_env").fer_env.is_ready(),
                    reason="fer is not installed in .venv-bench (python benchmarks/fer_env.py)")
def test_fer_accuracy_writes_both_splits(tmp_path, monkeypatch):
    from benchmarks import fer_accuracy

    data = _fer2013_sample(tmp_path / "fer2013")
    monkeypatch.setattr(sys, "argv", ["fer_accuracy.py", "--data", str(data), "--output", str(tmp_path / "fer.json")])
    assert fer_accuracy.main() == 0
    result = json.loads((tmp_path / "fer.json").read_text())
    assert result["public_test_images"] == result["private_test_images"] == 14
    assert all(0 <= result[f"{s}_accuracy"] <= 1 for s in ("public_test", "private_test"))
    assert result["labels"] == ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
