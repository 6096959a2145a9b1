"""The dataset layouts the readers take, by name (standard library only: the CLI's argument
parsers list them without loading NumPy or the readers)."""

#: Every layout :func:`fer_tf.data.readers.read_dataset` reads.
FORMATS = ("ckplus48", "ckplus", "fer2013", "fer2013-csv", "jaffe", "kdef", "yale", "manifest", "cache")
#: The layouts of images to align (a face cache is aligned already).
IMAGE_FORMATS = tuple(f for f in FORMATS if f != "cache")
