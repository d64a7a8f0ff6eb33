"""tf.distribute: MirroredStrategy over 2 logical CPUs and MultiWorkerMirroredStrategy with two
worker processes on 127.0.0.1, against single-device references.

The work runs in subprocesses (`tests/distributed_worker.py`): logical devices and TF_CONFIG
must be set before TensorFlow starts. Each test kills its subprocesses when it ends, also on
failure.

Tolerances: the same float32 math runs on 1 or 2 replicas; only the order of the sums changes
(per-replica partial sums, then the all-reduce), which moves the last bits: relative 1e-5 on
one BN call (gradients scaled by their largest entry), relative 1e-4 after 4 training steps
on the losses. Weights: absolute 1e-4, 1 % of the at most 4 x lr = 4e-2 that Adam moves a
weight in 4 steps (Adam divides by sqrt(v), so a gradient entry near 0 turns its rounding into
an update of up to lr; seen: 1.7e-5). A wrong synchronisation (per-replica statistics, a
missing all-reduce of a backward sum, a double-counted gamma gradient) is off by O(1) in the
losses or by O(lr) in the weights.
"""

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import handgrad  # noqa: F401  (registers the layers for load_model)

WORKER = Path(__file__).with_name("distributed_worker.py")
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
ENV.pop("TF_CONFIG", None)
WEIGHT_ATOL = 1e-4


def _run(procs, timeout):
    """Waits for every Popen; kills all of them if one fails or on timeout."""
    try:
        outs = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-4000:]
    return outs


def _losses(model_dir):
    with open(Path(model_dir) / "history.csv") as f:
        return np.array([float(row["loss"]) for row in csv.DictReader(f)])


def _weights(model_dir):
    return keras.models.load_model(Path(model_dir) / "model.keras").get_weights()


@pytest.fixture(scope="module")
def mirrored_run(tmp_path_factory, mnist_dir):
    out = tmp_path_factory.mktemp("mirrored")
    proc = subprocess.Popen([sys.executable, str(WORKER), "mirrored", str(out), str(mnist_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    _run([proc], timeout=240)
    return out


def test_synchronized_bn_on_2_replicas_equals_one_device_on_the_global_batch(mirrored_run):
    r = np.load(mirrored_run / "bn.npz")
    for name in ("y", "dx", "dgamma", "dbeta", "moving_mean"):
        ref = r[f"{name}_ref"]
        np.testing.assert_allclose(r[name], ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max(),
                                   err_msg=name)


def test_default_bn_uses_per_replica_statistics(mirrored_run):
    r = np.load(mirrored_run / "bn.npz")
    np.testing.assert_allclose(r["y_local"], r["y_local_ref"], rtol=1e-5, atol=1e-5)
    assert np.abs(r["y_local"] - r["y_ref"]).max() > 0.05  # and so differs from global BN


def test_mirrored_training_follows_the_single_device_trajectory(mirrored_run):
    mirrored, single = _losses(mirrored_run / "mirrored"), _losses(mirrored_run / "single")
    assert len(mirrored) == 4 and mirrored[-1] < mirrored[0] - 0.5  # it trained
    np.testing.assert_allclose(mirrored, single, rtol=1e-4)
    config = json.loads((mirrored_run / "mirrored" / "config.json").read_text())
    assert config["run"]["replicas"] == 2 and config["run"]["strategy"] == "MirroredStrategy"
    for a, b in zip(_weights(mirrored_run / "mirrored"), _weights(mirrored_run / "single")):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=WEIGHT_ATOL)


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def test_multi_worker_mirrored_two_processes_end_with_identical_weights(mirrored_run, tmp_path,
                                                                         mnist_dir):
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    procs = []
    try:
        for index in range(2):
            tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker",
                                                                  "index": index}}
            procs.append(subprocess.Popen(
                [sys.executable, str(WORKER), "multi_worker", str(tmp_path), str(mnist_dir)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                env={**ENV, "TF_CONFIG": json.dumps(tf_config)}))
    finally:
        _run(procs, timeout=240)
    chief, other = tmp_path / "run", tmp_path / "run" / "worker_1"
    weights = _weights(chief)
    for a, b in zip(weights, _weights(other)):
        np.testing.assert_array_equal(a, b)
    # Two workers x 16 examples with synchronized BN: the single-device run on batch 32.
    np.testing.assert_allclose(_losses(chief), _losses(mirrored_run / "single"), rtol=1e-4)
    for a, b in zip(weights, _weights(mirrored_run / "single")):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=WEIGHT_ATOL)
