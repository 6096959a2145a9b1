"""A full-size 2B(N+M) model trained for a few dozen steps with model.fit on CK+48 lowers its loss."""

import numpy as np
import pytest


@pytest.mark.integration
def test_2b_nm_lowers_its_loss_on_ckplus48(ckplus48_dir):
    import keras

    from fer_tf.data.labels import CKPLUS7
    from fer_tf.data.readers import read_dataset
    from fer_tf.model.network import build_model
    from fer_tf.preprocess.cache import prepare_faces
    from fer_tf.feeding.feeders import identity_aware_dataset

    keras.utils.set_random_seed(0)
    faces, table, _ = prepare_faces(read_dataset(ckplus48_dir, "ckplus48"), progress=False)
    dataset = identity_aware_dataset(table, faces, CKPLUS7, mode="in_batch", seed=0)
    model = build_model("2B(N+M)", labels=CKPLUS7)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = model.fit(dataset, epochs=4, steps_per_epoch=8, verbose=0).history
    losses, metric = history["loss"], history["metric_loss"]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.8 * losses[0], losses
    assert metric[-1] < metric[0], metric
