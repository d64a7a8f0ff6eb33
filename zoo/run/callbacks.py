"""Training callbacks used by `train.py`."""

import time

import keras
from absl import logging


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


class LogCounts(keras.callbacks.Callback):
    """Adds `counts()` (a dict of numbers, e.g. `zoo.face.data.DataCounts.logs`: faces the
    pipeline dropped) to the epoch logs and logs them; put it before CSVLogger / TensorBoard so
    that history.csv and TensorBoard keep them."""

    def __init__(self, counts):
        super().__init__()
        self.counts = counts

    def on_epoch_end(self, epoch, logs=None):
        counts = self.counts()
        logging.info("epoch %d data: %s", epoch + 1,
                     ", ".join(f"{k} {v}" for k, v in counts.items()))
        if logs is not None:
            logs.update(counts)
