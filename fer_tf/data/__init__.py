"""Datasets: readers for each layout, the FaceTable they return, and subject-independent splits."""

from fer_tf.data.labels import BASIC7, CKPLUS7, EXPRESSIONS, canonical_expression, label_set
from fer_tf.data.table import FaceTable
