"""Training callbacks used by `train.py`."""

import time

import keras


class EpochTimer(keras.callbacks.Callback):
    """Adds `epoch_seconds` (wall time of the epoch, validation included) to the epoch logs.

    Put it before CSVLogger / TensorBoard in the callback list so they record the value; the
    sum over `history.csv` is the training time of a run, resumed or not.
    """

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["epoch_seconds"] = time.perf_counter() - self._start
