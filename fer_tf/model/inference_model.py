"""The inference model: what fer_tf's exported and recognised classifiers are, and how one is built.

An inference model maps ``[B, 60, 60, 1]`` float32 grey faces (0..255, aligned) to ``[B, C]``
expression probabilities, with :class:`~fer_tf.preprocess.normalize.FacePreprocessing` inside.
:func:`check_classifier` says which of the three accepted kinds a Keras model is (a JointModel, an
EC network on normalised 48x48 faces, or an inference model already); :func:`build_inference_model`
wraps any of them into an inference model; :func:`as_faces` turns arrays of faces into its input.

Nothing heavy is imported at module import time: Keras loads only when a model is built.
"""

from __future__ import annotations

import numpy as np

from fer_tf.errors import ConfigError, ModelFileError

#: The raw face input of exported / inference models.
FACE_SHAPE = (60, 60, 1)
#: The normalised, centre-cropped input of the EC network.
NETWORK_SHAPE = (48, 48, 1)
#: What to do when a Keras file or model is not a face classifier (ends fer_tf's ModelFileErrors).
KERAS_ADVICE = (
    "pass a .keras checkpoint written by training (make finetune, make ship) or an inference.keras "
    "written by `fer-tf export`"
)


def _shape(tensor_shape):
    return tuple(None if d is None else int(d) for d in tensor_shape)


def check_classifier(model, path="model"):
    """Check that ``model`` is a face classifier this package can run; return its input kind.

    Returns ``"joint"`` (a JointModel with ``ec_model()``), ``"face"`` (input ``[B,60,60,1]`` raw
    grey faces: an inference model) or ``"network"`` (input ``[B,48,48,1]`` normalised: an EC
    network). Raises :class:`ModelFileError` for anything else.
    """
    if callable(getattr(model, "ec_model", None)):
        return "joint"
    inputs = getattr(model, "inputs", None)
    if not inputs or len(inputs) != 1:
        raise ModelFileError(
            f"{path}: the model has {len(inputs or [])} inputs, expected one grey face input "
            f"[batch, 60, 60, 1] or [batch, 48, 48, 1]; {KERAS_ADVICE}"
        )
    in_shape = _shape(inputs[0].shape)
    outputs = getattr(model, "outputs", None) or []
    out_shapes = [_shape(o.shape) for o in outputs]
    if len(out_shapes) != 1 or len(out_shapes[0]) != 2 or not out_shapes[0][1]:
        raise ModelFileError(
            f"{path}: the model's output is {out_shapes}, expected one [batch, classes] tensor of "
            f"expression probabilities; {KERAS_ADVICE}"
        )
    if in_shape[1:] == FACE_SHAPE:
        return "face"
    if in_shape[1:] == NETWORK_SHAPE:
        return "network"
    raise ModelFileError(
        f"{path}: the model's input shape is {list(in_shape)}, expected [batch, 60, 60, 1] (raw "
        f"face) or [batch, 48, 48, 1] (normalised face); this is not a fer_tf expression model; "
        f"{KERAS_ADVICE}"
    )


#: The layer that marks a flip-averaged inference model (:func:`build_inference_model`).
FLIP_AVERAGE = "flip_average"


def is_flip_averaged(model):
    """Whether an inference model averages each face's probabilities with its mirror image's."""
    return any(layer.name == FLIP_AVERAGE for layer in getattr(model, "layers", ()))


def build_inference_model(model, labels=None, name="fer_tf_inference", kind=None,
                          flip_average=False):
    """Wrap an expression classifier into the inference model that export and inference run.

    ``model`` is a JointModel (its ``ec_model()`` is used), an EC network (``[B,48,48,1]``
    normalised -> ``[B,C]``) or an inference model already (``[B,60,60,1]`` raw face; returned as it
    is). The result maps ``[B,60,60,1]`` float32 grey faces 0..255 -> ``FacePreprocessing`` -> EC
    network -> ``[B,C]`` probabilities. Its ``labels`` attribute holds the class names when known
    (from ``labels`` or the model's own ``labels``).

    ``kind`` is what :func:`check_classifier` returned for ``model``, when the caller has checked it
    already (a loader that checks once); ``None`` checks here.

    ``flip_average`` (test-time augmentation, not in the paper): the EC network also runs on the
    mirror image of each normalised face and the two probability vectors are averaged (layer
    ``flip_average``), at twice the network's cost per face. An inference model given as it is
    must then be one this function built (preprocessing followed by one network).
    """
    import keras  # deferred: loads the backend (TensorFlow by default)

    from fer_tf.preprocess.normalize import FacePreprocessing  # deferred with keras

    if kind is None:
        kind = check_classifier(model)
    labels = labels if labels is not None else getattr(model, "labels", None)
    network = model.ec_model() if kind == "joint" else model
    if kind == "face" and flip_average and not is_flip_averaged(model):
        kind, network = "network", _network_of(model)
    if kind == "face":
        inference = model
    else:
        if _shape(network.inputs[0].shape)[1:] != NETWORK_SHAPE:  # a JointModel's own EC network
            raise ModelFileError(
                f"the EC network's input is {list(network.inputs[0].shape)}, expected [batch, 48, 48, 1]"
            )
        face = keras.Input(FACE_SHAPE, dtype="float32", name="face")
        # named "face_preprocessing": export keeps this layer in float32 when it quantises
        x = FacePreprocessing(name="face_preprocessing")(face)
        probabilities = network(x)
        if flip_average:
            from fer_tf.preprocess.normalize import HorizontalFlip  # deferred with keras

            mirrored = network(HorizontalFlip(name="mirror")(x))
            probabilities = keras.layers.Average(name=FLIP_AVERAGE)([probabilities, mirrored])
        inference = keras.Model(face, probabilities, name=name)
    if labels is not None:
        labels = tuple(str(x) for x in labels)
        classes = int(inference.outputs[0].shape[-1])
        if len(labels) != classes:
            raise ConfigError(f"{len(labels)} labels given for a model with {classes} outputs")
        object.__setattr__(inference, "labels", labels)
    return inference


def _network_of(inference):
    """The EC network inside an inference model built by :func:`build_inference_model`."""
    import keras  # deferred: the backend

    names = [layer.name for layer in inference.layers]
    networks = [layer for layer in inference.layers if isinstance(layer, keras.Model)]
    if "face_preprocessing" not in names or len(networks) != 1:
        raise ModelFileError(
            "flip averaging needs the EC network inside the model, but this model is not "
            "preprocessing followed by one network; export the training checkpoint (.keras) instead"
        )
    return networks[0]


def as_faces(faces):
    """Faces ``[n,60,60]`` / ``[n,60,60,1]`` (any real dtype, 0..255) -> float32 ``[n,60,60,1]``."""
    faces = np.asarray(faces)
    if faces.ndim == 2:
        faces = faces[None]
    if faces.ndim == 3:
        faces = faces[..., None]
    if faces.ndim != 4 or tuple(faces.shape[1:]) != FACE_SHAPE:
        raise ValueError(f"faces must be [n, 60, 60] or [n, 60, 60, 1], got {list(faces.shape)}")
    return np.ascontiguousarray(faces, dtype=np.float32)
