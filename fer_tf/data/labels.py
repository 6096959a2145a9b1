"""Canonical expression names and the label sets models are trained on."""

from fer_tf.errors import ConfigError

#: Every expression a reader may emit, in a fixed order.
EXPRESSIONS = (
    "anger",
    "contempt",
    "disgust",
    "fear",
    "happiness",
    "neutral",
    "sadness",
    "surprise",
)

#: The seven expressions shared by FER2013, JAFFE and most apps (the shipped model's label set).
BASIC7 = ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise")

#: CK+'s seven labelled expressions (no neutral), as in the paper's Table 3.
CKPLUS7 = ("anger", "contempt", "disgust", "fear", "happiness", "sadness", "surprise")

_ALIASES = {
    "angry": "anger", "an": "anger", "anger": "anger", "mad": "anger",
    "contempt": "contempt", "co": "contempt",
    "disgust": "disgust", "disgusted": "disgust", "di": "disgust",
    "fear": "fear", "fearful": "fear", "afraid": "fear", "scared": "fear", "fe": "fear", "af": "fear",
    "happy": "happiness", "happiness": "happiness", "ha": "happiness", "joy": "happiness",
    "neutral": "neutral", "normal": "neutral", "ne": "neutral",
    "sad": "sadness", "sadness": "sadness", "sa": "sadness",
    "surprise": "surprise", "surprised": "surprise", "su": "surprise",
}


def canonical_expression(name):
    """Map a dataset's own expression name or code onto a canonical name.

    Returns ``None`` when the name is not an expression this package knows; readers report such
    files as skipped with the reason "unknown label".
    """
    if name is None:
        return None
    return _ALIASES.get(str(name).strip().lower())


def label_set(name_or_names):
    """Return a tuple of canonical names from a preset name ("basic7", "ckplus7") or a list."""
    presets = {"basic7": BASIC7, "ckplus7": CKPLUS7, "all": EXPRESSIONS}
    if isinstance(name_or_names, str):
        if name_or_names.lower() in presets:
            return presets[name_or_names.lower()]
        name_or_names = [n for n in name_or_names.split(",") if n.strip()]
    names = []
    for n in name_or_names:
        c = canonical_expression(n)
        if c is None:
            raise ConfigError(
                f"unknown expression {n!r} in the label set; use names from {', '.join(EXPRESSIONS)}"
            )
        names.append(c)
    return tuple(names)
