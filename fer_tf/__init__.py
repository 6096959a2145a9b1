"""fer_tf: identity-aware facial expression recognition (Liu et al., CVPR-W 2017) in Keras 3."""

import os as _os

_os.environ.setdefault("KERAS_BACKEND", "tensorflow")

__version__ = "0.1.0"


def __getattr__(name):
    if name == "Recognizer":
        # deferred: numpy, and LiteRT, Keras or MediaPipe when used; `import fer_tf` (every CLI
        # command, every submodule) stays fast
        from fer_tf.deploy.recognizer import Recognizer

        return Recognizer
    raise AttributeError(f"module 'fer_tf' has no attribute {name!r}")
