"""`--seed` + op determinism: two CPU runs of handgrad-train give bit-identical weights.

Run in a subprocess because `tf.config.experimental.enable_op_determinism()` is process-wide.
The runs shuffle and augment (random shifts) so that every seeded random source is exercised; a
third run with another seed must differ, or the comparison would prove nothing.
"""

import os
import subprocess
import sys

SCRIPT = """
import sys
import keras
import numpy as np
from handgrad.zoo.run.train import train_and_evaluate

out, data = sys.argv[1:3]
quick = {"model.filters": (4, 8, 8), "training.batch_size": 32, "training.epochs": 2,
         "training.steps_per_epoch": 4, "data.train_limit": 640, "data.test_limit": 100,
         "training.validate_every_epoch": False, "data.augment_shift": 2}
weights = []
for name, seed in (("a", 7), ("b", 7), ("c", 8)):
    train_and_evaluate("mnist_cnn", f"{out}/{name}", data, verbose=0, seed=seed, overrides=quick)
    weights.append(keras.models.load_model(f"{out}/{name}/model.keras").get_weights())
same = all(np.array_equal(x, y) for x, y in zip(weights[0], weights[1]))
other = all(np.array_equal(x, y) for x, y in zip(weights[0], weights[2]))
print(f"identical={same} other_seed_identical={other}")
"""


def test_same_seed_gives_bit_identical_weights(mnist_dir, tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path), str(mnist_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    try:
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err[-3000:]
    assert out.strip().splitlines()[-1] == "identical=True other_seed_identical=False"
