"""Model runners: ``runner(faces [n,60,60(,1)]) -> [n, C]`` float32 probabilities.

:class:`TFLiteRunner` runs a ``.tflite`` in the standalone LiteRT runtime (no TensorFlow);
:class:`KerasRunner` runs an inference ``keras.Model`` through one ``tf.function``. Both take what
:func:`fer_tf.model.inference_model.as_faces` accepts.
"""

from __future__ import annotations

import os

import numpy as np

from fer_tf.files import quiet_native_stderr
from fer_tf.model import saving
from fer_tf.model.inference_model import FACE_SHAPE, as_faces


class TFLiteRunner:
    """Run a face-classifier ``.tflite`` in ``ai_edge_litert``: ``runner(faces) -> [n, C]``.

    Fewer than :attr:`BATCH_FROM` faces are run one at a time; more are run in batches of up to
    ``max_batch`` in one invocation when the model's batch dimension is dynamic (it is for models
    from :func:`fer_tf.deploy.export.export_model`), on a second interpreter opened for them. Resizing an
    interpreter re-plans XNNPACK (about 1-3 ms), and a batch is no faster per face than single
    faces for this network on a CPU, so the single-face interpreter is never resized: photos and
    video frames with one or a few faces each pay no re-planning. Quantised (int8/uint8) inputs
    and outputs are (de)quantised with the tensors' own scale and zero point.
    """

    #: Calls with at least this many faces run as batches (when the model allows it).
    BATCH_FROM = 8

    def __init__(self, model, num_threads=None):
        self._num_threads = num_threads
        self._batch_runner = None
        if isinstance(model, (str, os.PathLike)):
            self.path = str(model)
            self.interpreter = saving.load_tflite(model, num_threads=num_threads)
        else:
            self.path = "<interpreter>"
            self.interpreter = model
        self._input = self.interpreter.get_input_details()[0]
        self._output = self.interpreter.get_output_details()[0]
        signature = self._input.get("shape_signature")
        self.dynamic_batch = signature is not None and len(signature) and int(signature[0]) == -1
        self._batch = int(self._input["shape"][0])
        self.num_classes = int(self._output["shape"][-1])

    def _set_batch(self, n):
        if n == self._batch:
            return True
        if not self.dynamic_batch:
            return False
        with quiet_native_stderr():
            self.interpreter.resize_tensor_input(self._input["index"], [n, *FACE_SHAPE])
            self.interpreter.allocate_tensors()
        self._input = self.interpreter.get_input_details()[0]
        self._output = self.interpreter.get_output_details()[0]
        self._batch = n
        return True

    def _quantize(self, x):
        dtype = self._input["dtype"]
        if dtype == np.float32:
            return x
        scale, zero = self._input["quantization"]
        info = np.iinfo(dtype)
        return np.clip(np.rint(x / scale + zero), info.min, info.max).astype(dtype)

    def _dequantize(self, y):
        if self._output["dtype"] == np.float32:
            return y
        scale, zero = self._output["quantization"]
        return (y.astype(np.float32) - zero) * scale

    def _invoke(self, batch):
        self.interpreter.set_tensor(self._input["index"], self._quantize(batch))
        self.interpreter.invoke()
        return self._dequantize(self.interpreter.get_tensor(self._output["index"])).copy()

    def _batches(self):
        """The runner for batched calls: a second interpreter of the same file (the first one
        stays at batch 1), or this one when the model came as an interpreter object."""
        if self.path == "<interpreter>":
            return self
        if self._batch_runner is None:
            self._batch_runner = TFLiteRunner(self.path, num_threads=self._num_threads)
        return self._batch_runner

    def _run_batches(self, faces, max_batch):
        out = []
        for start in range(0, len(faces), max_batch):
            chunk = faces[start:start + max_batch]
            if self._set_batch(len(chunk)):
                out.append(self._invoke(chunk))
            else:
                self._set_batch(1)
                out.extend(self._invoke(face[None]) for face in chunk)
        return out

    def __call__(self, faces, max_batch=64):
        faces = as_faces(faces)
        if len(faces) == 0:
            return np.zeros((0, self.num_classes), np.float32)
        if len(faces) >= self.BATCH_FROM and self.dynamic_batch and max_batch > 1:
            out = self._batches()._run_batches(faces, max_batch)
        elif self._batch == 1 or self._set_batch(1):
            out = [self._invoke(face[None]) for face in faces]
        else:  # a fixed batch size other than 1
            out = self._run_batches(faces, max_batch)
        return np.concatenate(out, axis=0).astype(np.float32)


class KerasRunner:
    """Run an inference ``keras.Model`` (``[B,60,60,1]`` -> ``[B,C]``) through one ``tf.function``."""

    def __init__(self, model):
        import tensorflow as tf  # deferred: TensorFlow, only to run a Keras model through it

        self.model = model
        self.num_classes = int(model.outputs[0].shape[-1])
        self._tf = tf
        self._fn = tf.function(
            lambda x: model(x, training=False),
            input_signature=[tf.TensorSpec([None, *FACE_SHAPE], tf.float32)],
            reduce_retracing=True,
        )

    def __call__(self, faces, max_batch=256):
        faces = as_faces(faces)
        if len(faces) == 0:
            return np.zeros((0, self.num_classes), np.float32)
        out = [np.asarray(self._fn(self._tf.constant(faces[s:s + max_batch])))
               for s in range(0, len(faces), max_batch)]
        return np.concatenate(out, axis=0).astype(np.float32)
