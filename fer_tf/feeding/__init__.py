"""Feeding: the model's batches, from a dataset's faces (``data``) once they are normalised
(``preprocess``).

Augmentation and mixing in ``keras.ops``, the faces as one backend tensor, and the one feeder
abstraction (``Feed``: ``tf.data`` under TensorFlow, ``keras.utils.PyDataset`` elsewhere) with the
feeders built on it: identity-aware batches of the sampler's rows (``data.sampling``),
classification batches, evaluation batches.
"""
