"""`make bench`: performance and scale of fer_tf on this machine.

    .venv/bin/python benchmarks/run.py [--quick] [--output reports/bench] [--datasets DIR]
                                       [--sections training,race,loss,inference,preprocess,people]

Writes ``<output>/results.json`` (every figure, with the machine and the run's metadata) and
``<output>/README.md`` (the figures explained). Every figure is measured in this run, next to what
it is compared with; times are medians over repeats. ``--quick`` runs tiny settings (seconds, for
the smoke test); the full run takes about 12-15 minutes on 2 cores. The PyPI package ``fer`` is
installed (without its dependencies) into ``.venv-bench/fer`` on first use and timed in this same
process (benchmarks/fer_env.py).

Which TFLite variant is fast depends on the CPU's vector instructions (int8 dot products: AVX512-VNNI,
ARM dotprod), which ``results.json`` records (``run.machine.cpu_features``). The same measurement on
another CPU goes beside the committed one: ``--sections inference --output reports/bench/cpus/NAME``
(reports/fer2013 shows the Accuracy III networks' cost on each). The committed README lists them;
``--readme-only`` renders ``<output>/README.md`` again from ``<output>/results.json`` (measures nothing).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

SECTIONS = ("training", "race", "loss", "inference", "preprocess", "people")


def default_datasets():
    return pathlib.Path(os.environ.get("FER_TF_DATASETS", REPO.parent / "shared" / "datasets"))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny settings (smoke test)")
    parser.add_argument("--output", default=str(REPO / "reports" / "bench"))
    parser.add_argument("--datasets", default=str(default_datasets()))
    parser.add_argument("--cache", default=str(REPO / "runs" / "cache"), help="face cache folder")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--readme-only", action="store_true",
                        help="render <output>/README.md again from <output>/results.json and the "
                             "benches of <output>/cpus/ (nothing is measured)")
    return parser.parse_args(argv)


def _log(message):
    print(message, file=sys.stderr, flush=True)


def run(args):
    from benchmarks import common, report
    from fer_tf.research import reporting

    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    settings = common.Settings.quick_settings() if args.quick else common.Settings()
    sections = [s for s in args.sections.split(",") if s]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown sections {sorted(unknown)}; use {','.join(SECTIONS)}")
    started = time.time()
    datasets = pathlib.Path(args.datasets)
    results = {"settings": vars(settings), "sections": sections,
               "load_average_start": list(os.getloadavg()), "section_seconds": {}}
    need_ck = any(s in sections for s in ("training", "race", "inference", "preprocess"))
    if need_ck:
        from fer_tf.preprocess.prepared import prepared_dataset

        table, faces = prepared_dataset(datasets / "ckplus48", "ckplus48", cache_root=args.cache)
        results["data"] = {"ckplus48_faces": int(len(table)), "face_shape": list(faces.shape[1:])}

    if "training" in sections:
        from benchmarks import training_bench

        _log("training throughput and matmul peak ...")
        with common.stopwatch(results["section_seconds"], "training"):
            peak_before = training_bench.matmul_peak(settings.matmul_n, settings.repeats)
            results["training"] = training_bench.throughput(table, faces, settings, _log)
            peak_after = training_bench.matmul_peak(settings.matmul_n, settings.repeats)
        peak = max(peak_before["gflops"], peak_after["gflops"])
        results["matmul_peak"] = {"before": peak_before, "after": peak_after, "gflops": peak}
        tr = results["training"]
        achieved = tr["training_flops_per_image"] * tr["in_batch"]["images_per_s_compute_only"] / 1e9
        results["training"]["achieved_gflops"] = achieved
        results["training"]["fraction_of_matmul_peak"] = achieved / peak
        _log(f"  matmul {peak:.1f} GFLOP/s; training {achieved:.1f} GFLOP/s = {achieved / peak:.1%}")
    if "race" in sections:
        from benchmarks import training_bench

        _log("time to target accuracy ...")
        with common.stopwatch(results["section_seconds"], "race"):
            results["race"] = training_bench.race(table, faces, settings, _log)
    if "loss" in sections:
        from benchmarks import loss_bench

        _log("loss + mining cost against batch size ...")
        with common.stopwatch(results["section_seconds"], "loss"):
            results["loss"] = loss_bench.run(settings, _log)
    if "inference" in sections:
        from benchmarks import inference_bench

        _log("inference per face ...")
        with common.stopwatch(results["section_seconds"], "inference"), \
                tempfile.TemporaryDirectory() as tmp:
            crops = faces[:: max(1, len(faces) // 128)][:128]
            results["inference"] = inference_bench.run(crops, settings, pathlib.Path(tmp) / "export", _log)
    if "preprocess" in sections:
        from benchmarks import preprocess_bench

        _log("preprocessing and alignment ...")
        with common.stopwatch(results["section_seconds"], "preprocess"):
            results["preprocess"] = {"normalize": preprocess_bench.normalize(faces, settings),
                                     "align": preprocess_bench.align(datasets, settings, _log)}
    if "people" in sections:
        from benchmarks import people_bench

        _log("people: identity embedding per face, --people on a 640x480 video ...")
        with common.stopwatch(results["section_seconds"], "people"), \
                tempfile.TemporaryDirectory() as tmp:
            results["people"] = people_bench.run(datasets, settings, tmp, _log)

    results["load_average_end"] = list(os.getloadavg())
    results["headline"] = report.headline(results)
    results["run"] = reporting.run_info({"quick": bool(args.quick), "sections": sections,
                                         "datasets": str(datasets)}, started=started)
    out = pathlib.Path(args.output)
    reporting.write_json(out / "results.json", results)
    (out / "README.md").write_text(report.readme(results, reporting.other_cpu_benches(out)), encoding="utf-8")
    _log(f"wrote {out / 'results.json'} and {out / 'README.md'} in {time.time() - started:.0f} s")
    return results


def readme_only(args):
    """``--readme-only``: README.md from the committed results.json, for a change of the report's
    text or a new bench in ``cpus/``."""
    import json

    from benchmarks import report
    from fer_tf.research import reporting

    out = pathlib.Path(args.output)
    path = out / "results.json"
    if not path.is_file():
        raise SystemExit(f"{path} not found: --readme-only renders a bench that was run; run "
                         f"`python benchmarks/run.py --output {out}` first")
    results = json.loads(path.read_text(encoding="utf-8"))
    (out / "README.md").write_text(report.readme(results, reporting.other_cpu_benches(out)), encoding="utf-8")
    _log(f"wrote {out / 'README.md'} from {path}")


def main(argv=None):
    args = parse_args(argv)
    if args.readme_only:
        readme_only(args)
    else:
        run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
