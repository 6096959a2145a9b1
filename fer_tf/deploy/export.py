"""Export a trained model for inference: SavedModel, ``inference.keras`` and four TFLite variants.

The exported model takes what :class:`~fer_tf.preprocess.align.FaceAligner` gives: one aligned grey
face ``[B, 60, 60, 1]`` float32 with raw pixel values 0..255. ``FacePreprocessing`` (normalisation
and centre crop to 48x48) is inside the model, then the EC branch returns ``[B, C]`` softmax
probabilities. Only the EC branch is exported; the metric-learning branch is a training aid.

``export_model`` writes into ``output_dir``::

    saved_model/            Keras 3 ``Model.export(format="tf_saved_model")``; signature
                            ``serving_default`` takes ``face`` [None, 60, 60, 1] float32
    saved_model.json        metadata sidecar (see :mod:`fer_tf.model.saving`)
    inference.keras         the same inference model as a Keras file (+ inference.json)
    model_fp32.tflite       float32, converted from saved_model/ (+ model_fp32.json)
    model_float16.tflite    float16 weights, float32 compute/io (+ .json)
    model_dynamic.tflite    dynamic-range quantisation: int8 weights, float32 io (+ .json)
    model_int8.tflite       int8 network calibrated on training faces, float32 preprocessing/io
    model.tflite            the default: a copy of the fastest (or smallest) variant that keeps parity (+ .json)
    export_report.json      sizes, conversion notes, parity, latency and XNNPACK coverage of
                            every variant, and which one is the default and why

How each variant is converted: :mod:`fer_tf.deploy.convert`. How the default is chosen:
:mod:`fer_tf.deploy.choose`.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import time

import numpy as np

from fer_tf.data.labels import label_set
from fer_tf.deploy.choose import PREFER, choose_default, parity, time_variants
from fer_tf.deploy.convert import VARIANTS, convert_variant, short_error, xnnpack_coverage
from fer_tf.errors import ConfigError, ModelFileError, OutputError
from fer_tf.files import atomic_write_bytes, atomic_write_text, fsync_dir, quiet_native_stderr
from fer_tf.model import saving
from fer_tf.model.inference_model import (FACE_SHAPE, build_inference_model, check_classifier,
                                          is_flip_averaged)

#: The default TFLite model's file name in the export folder.
DEFAULT_TFLITE = "model.tflite"


def _size(path):
    path = pathlib.Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _labels_of(model, labels):
    labels = labels if labels is not None else getattr(model, "labels", None)
    if labels is None:
        raise ConfigError(
            "the model does not say its expression labels; pass labels=[...] (canonical names)"
        )
    return tuple(label_set(list(labels)))


def export_model(
    checkpoint_or_model,
    output_dir,
    calibration_faces=None,
    variants=VARIANTS,
    labels=None,
    parity_faces=None,
    source=None,
    overwrite=True,
    flip_average=False,
    prefer="speed",
):
    """Export a checkpoint (path to ``.keras``) or a model; return a report dict.

    The report: ``{"output_dir", "labels", "source", "artefacts": {name: {"path", "size"}},
    "variants": {variant: {"path", "size", "status": "ok"|"failed"|"skipped", "note",
    "quantization", "parity"?, "latency_ms", "xnnpack"}}, "default": {"variant", "path",
    "reason"}}``. A variant that fails to convert is reported as ``failed`` with the converter's
    message and does not stop the others; ``int8`` without calibration faces is ``skipped``.
    ``parity_faces`` (``[n,60,60]``) adds each variant's :func:`parity`. ``model.tflite`` is the
    default variant (:func:`choose_default`): of those that keep parity, the fastest on this
    machine (``prefer="speed"``) or the smallest (``prefer="size"``, for a model that will run on
    other machines); its sidecar holds the variant's keys plus ``default_of`` and
    ``default_reason``.

    Nothing is lost: the export is built in a folder beside ``output_dir`` and moved in only when
    complete, so a failure (a full disk included) leaves ``output_dir`` as it was, and a rerun
    removes what a failed one left. An earlier export's files in ``output_dir`` are all removed
    first (none mixes with the new ones); without ``overwrite`` they are refused
    (:class:`~fer_tf.errors.OutputError`), as is an export that would replace its own input.

    ``flip_average`` (not in the paper): every artefact averages each face's probabilities with
    those of its mirror image (:func:`~fer_tf.model.inference_model.build_inference_model`), at
    about twice the network's cost per face; the sidecars and the report say ``flip_average``.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf  # deferred: TensorFlow (the converter)

    variants = tuple(variants)
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ConfigError(f"unknown TFLite variants {unknown}; use {', '.join(VARIANTS)}")
    if prefer not in PREFER:
        raise ConfigError(f"prefer={prefer!r}: the default TFLite variant is chosen for "
                          f"{' or '.join(PREFER)}; use one of those")
    final = pathlib.Path(output_dir)
    check_output(final, checkpoint_or_model, overwrite)
    if isinstance(checkpoint_or_model, (str, os.PathLike)):
        source = source or str(checkpoint_or_model)
        model = saving.load_model(checkpoint_or_model, check=False)  # checked below, once
        kind = check_classifier(model, checkpoint_or_model)
        if labels is None and not hasattr(model, "labels"):  # an exported model: labels in its sidecar
            labels = (saving.read_metadata(checkpoint_or_model) or {}).get("labels")
    else:
        model = checkpoint_or_model
        kind = check_classifier(model)
    labels = _labels_of(model, labels)
    inference = build_inference_model(model, labels, kind=kind, flip_average=flip_average)

    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(final)
    out = staging_folder(final)  # everything is written here first, then moved into final
    out.mkdir()
    try:
        report = _export_into(out, final, inference, labels, source, variants, calibration_faces,
                              parity_faces, tf, prefer)
        publish(out, final)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return report


#: What an export writes into its folder (another export's files are removed before a new one's
#: are moved in, so that the folder never mixes two exports).
EXPORT_NAMES = ("saved_model", "saved_model.json", "inference.keras", "inference.json",
                *(f"model_{v}.{ext}" for v in VARIANTS for ext in ("tflite", "json")),
                DEFAULT_TFLITE, "model.json", "export_report.json")
_STAGING = ".tmp-export-"


def check_output(folder, source=None, overwrite=False):
    """Refuse (:class:`~fer_tf.errors.OutputError`) an export into ``folder`` that would replace
    its own input ``source``, or, without ``overwrite``, any file of an earlier export."""
    folder = pathlib.Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder}: exists and is not a folder; export into a folder")
    if isinstance(source, (str, os.PathLike)):
        src = pathlib.Path(source).resolve()
        if any(src == (folder / name).resolve() or (folder / name).resolve() in src.parents
               for name in EXPORT_NAMES):
            raise OutputError(f"{source}: the export into {folder} would replace its own input; "
                              "export into another folder")
    present = [name for name in EXPORT_NAMES if (folder / name).exists()]
    if present and not overwrite:
        raise OutputError(f"{folder} holds an earlier export ({', '.join(present[:4])}"
                          f"{', ...' if len(present) > 4 else ''}); pass --overwrite to replace it "
                          "(all of it), or export into another folder")


def staging_folder(final):
    """The folder an export into ``final`` is built in: beside it, named after this process."""
    return final.with_name(f"{_STAGING}{os.getpid()}-{final.name}")


def remove_stale_staging(final):
    """Remove what exports into ``final`` that were killed (or stopped by a full disk) left behind."""
    for path in final.parent.glob(f"{_STAGING}*-{final.name}"):
        pid = path.name[len(_STAGING):].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
            continue  # another export into the same folder is running
        shutil.rmtree(path, ignore_errors=True)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def publish(staging, final):
    """Replace the earlier export's files in ``final`` by the new ones of ``staging`` (other files
    of ``final`` are left alone)."""
    final.mkdir(parents=True, exist_ok=True)
    for name in EXPORT_NAMES:
        old = final / name
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        elif old.exists() or old.is_symlink():
            old.unlink()
    for item in sorted(staging.iterdir()):
        os.replace(item, final / item.name)
    fsync_dir(final)


def _paths_in(value, staging, final):
    """``value`` (a report) with ``staging``'s paths rewritten as ``final``'s."""
    if isinstance(value, dict):
        return {k: _paths_in(v, staging, final) for k, v in value.items()}
    if isinstance(value, list):
        return [_paths_in(v, staging, final) for v in value]
    if isinstance(value, str) and value.startswith(str(staging)):
        return str(final) + value[len(str(staging)):]
    return value


def _export_into(out, final, inference, labels, source, variants, calibration_faces, parity_faces, tf,
                 prefer="speed"):
    """The body of :func:`export_model`: every artefact into ``out`` (the staging folder)."""
    flip = is_flip_averaged(inference)
    report = {"output_dir": str(out), "labels": list(labels), "source": source,
              "flip_average": flip, "artefacts": {}, "variants": {}}
    flip_meta = {"flip_average": True} if flip else {}  # (sidecars of plain exports stay as they were)

    # inference.keras
    keras_path = out / "inference.keras"
    saving.save_model(inference, keras_path)
    saving.write_metadata(keras_path, labels, source=source, format="keras", **flip_meta)
    report["artefacts"]["inference.keras"] = {"path": str(keras_path), "size": _size(keras_path)}

    # SavedModel
    sm_dir = out / "saved_model"
    inference.export(
        str(sm_dir),
        format="tf_saved_model",
        verbose=False,
        input_signature=[tf.TensorSpec([None, *FACE_SHAPE], tf.float32, name="face")],
    )
    saving.write_metadata(sm_dir, labels, source=source, format="tf_saved_model",
                          signature="serving_default", **flip_meta)
    report["artefacts"]["saved_model"] = {"path": str(sm_dir), "size": _size(sm_dir)}

    fp32_flatbuffer = None
    infos = {}
    for variant in variants:
        path = out / f"model_{variant}.tflite"
        entry = {"path": str(path), "size": None, "status": "ok", "note": ""}
        report["variants"][variant] = entry
        if variant == "int8" and (calibration_faces is None or len(calibration_faces) == 0):
            entry.update(status="skipped", note="no calibration faces given")
            continue
        started = time.perf_counter()
        try:
            with quiet_native_stderr():  # calibration logs; errors come as exceptions
                flatbuffer, info = convert_variant(sm_dir, variant, calibration_faces,
                                                   fp32_flatbuffer=fp32_flatbuffer)
        except Exception as exc:
            entry.update(status="failed", note=short_error(exc))
            continue
        atomic_write_bytes(path, flatbuffer)
        if variant == "fp32":
            fp32_flatbuffer = flatbuffer
        info["seconds"] = round(time.perf_counter() - started, 2)
        saving.write_metadata(path, labels, source=source, format="tflite", **info, **flip_meta)
        entry.update(size=_size(path), quantization=info.get("quantization"),
                     note=info.get("quantization", ""))
        if "int8_only_error" in info:
            entry["int8_only_error"] = info["int8_only_error"]
        try:  # it must open in the standalone LiteRT runtime
            saving.load_tflite(path)
        except ModelFileError as exc:
            entry.update(status="failed", note=f"LiteRT cannot run it: {exc}")
            continue
        entry["xnnpack"] = xnnpack_coverage(path)
        infos[variant] = info
        if parity_faces is not None and len(parity_faces):
            entry["parity"] = parity(inference, path, parity_faces)

    converted = {v: e["path"] for v, e in report["variants"].items() if e["status"] == "ok"}
    if converted:
        timing_faces = next((f for f in (parity_faces, calibration_faces)
                             if f is not None and len(f)), None)
        if timing_faces is None:
            timing_faces = np.random.default_rng(0).integers(0, 256, (8, 60, 60), dtype=np.uint8)
        for variant, latency in time_variants(converted, timing_faces).items():
            report["variants"][variant]["latency_ms"] = latency
    default, reason = choose_default(report["variants"], prefer=prefer)
    report["default"] = {"variant": default, "path": None, "reason": reason, "prefer": prefer}
    target = out / DEFAULT_TFLITE
    if default is not None:
        atomic_write_bytes(target, pathlib.Path(converted[default]).read_bytes())
        saving.write_metadata(target, labels, source=source, format="tflite", **infos[default],
                              default_of=default, default_reason=reason, **flip_meta)
        report["default"]["path"] = str(target)
    report = _paths_in(report, out, final)
    atomic_write_text(out / "export_report.json", json.dumps(report, indent=2) + "\n")
    return report


def format_report(report):
    """Human-readable table of an export report."""
    lines = [f"exported to {report['output_dir']} (labels: {', '.join(report['labels'])})"]
    for name, art in report["artefacts"].items():
        lines.append(f"  {name:<22} {_human(art['size']):>10}")
    header = (f"  {'variant':<10} {'file':<22} {'size':>10}  {'status':<8} {'top-1 agree':>11} "
              f"{'max |dp|':>9} {'ms/face':>8}  note")
    lines.append(header)
    for variant, entry in report["variants"].items():
        name = pathlib.Path(entry["path"]).name
        par = entry.get("parity")
        agree = f"{100 * par['top1_agreement']:.1f}%" if par else "-"
        diff = f"{par['max_abs_prob_diff']:.4f}" if par else "-"
        size = _human(entry["size"]) if entry.get("size") else "-"
        latency = entry.get("latency_ms")
        ms = f"{latency['median']:.3f}" if latency else "-"
        lines.append(
            f"  {variant:<10} {name:<22} {size:>10}  {entry['status']:<8} {agree:>11} {diff:>9} "
            f"{ms:>8}  {entry.get('note', '')}"
        )
    if any(e.get("parity") for e in report["variants"].values()):
        n = next(e["parity"]["n"] for e in report["variants"].values() if e.get("parity"))
        lines.append(f"  parity against the Keras inference model on {n} faces; ms/face: one face "
                     f"per call, 1 thread, XNNPACK")
    default = report.get("default") or {}
    if default.get("variant"):
        lines.append(f"  default: {DEFAULT_TFLITE} = {default['variant']} ({default['reason']})")
    elif default:
        lines.append(f"  no default {DEFAULT_TFLITE}: {default['reason']}")
    return "\n".join(lines)


def _human(size):
    if size is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
