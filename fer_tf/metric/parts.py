"""Base class of the swappable metric-learning parts (distances, miners, reducers).

In the manner of pytorch-metric-learning, a loss is assembled from small stateless parts: a
:mod:`~fer_tf.metric.distances` distance, a :mod:`~fer_tf.metric.mining` positive miner and a
:mod:`~fer_tf.metric.reducers` reducer.  Each part is a plain callable with a Keras-serialisable config,
so a loss that holds parts keeps working with ``keras.losses.serialize`` / ``deserialize`` and
``.keras`` files.
"""

import keras

from fer_tf.errors import ConfigError

__all__ = ["Part", "resolve", "registered_class", "known_names"]


class Part:
    """A stateless, serialisable part: ``get_config`` holds its constructor arguments."""

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash(type(self))

    def __repr__(self):
        arguments = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({arguments})"


def known_names(base):
    """Names of the registered (``fer_tf>``) concrete subclasses of ``base``, sorted."""
    names, stack = set(), [base]
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        name = keras.saving.get_registered_name(cls)
        if name.startswith("fer_tf>"):
            names.add(name.split(">", 1)[1])
    return sorted(names)


def registered_class(name, base):
    """The subclass of ``base`` registered as ``fer_tf>name`` (or under the full ``package>name``);
    ConfigError listing the known names when there is none."""
    cls = keras.saving.get_registered_object(name if ">" in name else f"fer_tf>{name}")
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ConfigError(
            f"unknown {base.__name__} {name!r}: use one of {', '.join(known_names(base))}, or a "
            f"{base.__name__} subclass registered with keras.saving.register_keras_serializable"
        )
    return cls


def resolve(identifier, base, default):
    """``identifier`` as an instance of ``base``: ``None`` gives ``default()``, a string the registered
    class of that name (see :func:`registered_class`) built with no arguments, a dict is
    deserialised with Keras, an instance is returned as is; anything else raises ConfigError."""
    if identifier is None:
        return default()
    if isinstance(identifier, str):
        return registered_class(identifier, base)()
    if isinstance(identifier, dict):
        identifier = keras.saving.deserialize_keras_object(identifier)
    if not isinstance(identifier, base):
        raise ConfigError(f"expected a {base.__module__}.{base.__name__}, got {identifier!r}")
    return identifier


def serialize(part):
    """Keras serialisation of a part (``None`` stays ``None``)."""
    return None if part is None else keras.saving.serialize_keras_object(part)
