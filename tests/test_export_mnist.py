"""MNIST export: SavedModel signatures, reload without handgrad, saved_model_cli, bad input,
TFLite, and fine-tuning through the saved hand-derived gradients."""

import json
import shutil
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from handgrad.export import tflite
from handgrad.export.export import export_model
from handgrad.pipelines.mnist import load_idx_split
from handgrad.zoo.mnist.models import build_mnist_cnn


@pytest.fixture(scope="module")
def digits(mnist_dir):
    images, labels = load_idx_split(mnist_dir, "test")
    return images[:64], labels[:64]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, mnist_dir):
    """A small fig. 10 model trained briefly on real digits, exported with --tflite."""
    keras.utils.set_random_seed(0)
    images, labels = load_idx_split(mnist_dir, "train")
    model = build_mnist_cnn(filters=(8, 16, 16))
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    model.fit(images[:3000, ..., None] / 255.0, labels[:3000], batch_size=50, epochs=1, verbose=0)
    model_dir = tmp_path_factory.mktemp("mnist_model")
    model.save(model_dir / "model.keras")
    export_dir = export_model(model_dir, model_dir / "export", config="mnist_cnn",
                              tflite_modes=tflite.MODES)
    return model, export_dir


def test_reload_without_handgrad_matches_in_memory_model(exported, digits, tmp_path):
    model, export_dir = exported
    images, _ = digits
    np.save(tmp_path / "x.npy", images)
    script = textwrap.dedent(f"""
        import sys
        sys.modules["handgrad"] = None  # any `import handgrad` now raises ImportError
        import numpy as np, tensorflow as tf
        f = tf.saved_model.load({str(export_dir)!r}).signatures["serving_default"]
        out = f(images=tf.constant(np.load({str(tmp_path / "x.npy")!r})))
        np.save({str(tmp_path / "p.npy")!r}, out["probabilities"].numpy())
        np.save({str(tmp_path / "c.npy")!r}, out["classes"].numpy())
    """)
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True)
    expected = model.predict(images[..., None] / 255.0, verbose=0)
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.load(tmp_path / "c.npy"), expected.argmax(-1))


def test_rank3_and_rank4_inputs_agree(exported, digits):
    _, export_dir = exported
    f = tf.saved_model.load(str(export_dir)).signatures["serving_default"]
    a = f(images=tf.constant(digits[0]))["probabilities"]
    b = f(images=tf.constant(digits[0][..., None]))["probabilities"]
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_saved_model_cli_shows_and_runs_the_signature(exported, digits, tmp_path):
    _, export_dir = exported
    np.save(tmp_path / "x.npy", digits[0][:2])
    cli = shutil.which("saved_model_cli")
    assert cli, "saved_model_cli ships with tensorflow"
    show = subprocess.run([cli, "show", "--dir", str(export_dir), "--all"],
                          capture_output=True, text=True, check=True).stdout
    block = show[show.index("signature_def['serving_default']"):]
    assert "dtype: DT_UINT8" in block and "shape: unknown_rank" in block
    assert "outputs['probabilities']" in block and "shape: (-1, 10)" in block
    assert "outputs['classes']" in block and "dtype: DT_INT64" in block
    run = subprocess.run([cli, "run", "--dir", str(export_dir), "--tag_set", "serve",
                          "--signature_def", "serving_default",
                          "--inputs", f"images={tmp_path / 'x.npy'}"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "probabilities" in run.stdout and "classes" in run.stdout


@pytest.mark.parametrize(
    "images, message",
    [(np.zeros((2, 28, 28), np.float32), "expected to be a uint8 tensor"),
     (np.zeros((2, 28, 27), np.uint8), r"expected uint8 \[batch, 28, 28\] or \[batch, 28, 28, 1\]"),
     (np.zeros((2, 28, 28, 3), np.uint8), r"expected uint8 \[batch, 28, 28\]"),
     (np.zeros((28, 28), np.uint8), r"expected uint8 \[batch, 28, 28\]")],
    ids=["float_images", "wrong_width", "three_channels", "no_batch_axis"])
def test_bad_input_is_refused_with_a_message(exported, images, message):
    _, export_dir = exported
    f = tf.saved_model.load(str(export_dir)).signatures["serving_default"]
    with pytest.raises((tf.errors.InvalidArgumentError, TypeError, ValueError), match=message):
        f(images=tf.constant(images))
    ok = f(images=tf.zeros([1, 28, 28], tf.uint8))  # the process still serves
    assert ok["probabilities"].shape == (1, 10)
    np.testing.assert_allclose(float(tf.reduce_sum(ok["probabilities"])), 1.0, rtol=1e-5)


def test_fine_tuning_gradient_through_reloaded_model_equals_original(exported, digits):
    """The SavedModel carries the hand-derived gradient functions (SaveOptions(
    experimental_custom_gradients=True)); saved without them, the reloaded function cannot be
    differentiated at all (TF raises an out-of-scope tensor error)."""
    model, export_dir = exported
    loaded = tf.saved_model.load(str(export_dir))
    x = tf.constant(digits[0][:8, ..., None] / 255.0, tf.float32)
    y = tf.one_hot(digits[1][:8], 10)

    def grads(forward, variables):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = -tf.reduce_sum(y * tf.math.log(forward(x)))
        return tape.gradient(loss, [x, *variables])

    reloaded = grads(loaded.forward, loaded.trainable_weights)
    original = grads(lambda v: model(v, training=False), model.trainable_weights)
    assert len(reloaded) == len(original) == 1 + len(model.trainable_weights)
    for a, b in zip(reloaded, original):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode, atol", [("float32", 1e-5), ("int8", 0.05)])
def test_tflite_matches_saved_model(exported, digits, mode, atol):
    """float32: same math, rounding only. int8 (dynamic range): weights quantised to 8 bits, so
    probabilities may move by a few hundredths; the predicted digit stays (>= 95 % agreement)."""
    model, export_dir = exported
    f = tf.saved_model.load(str(export_dir)).signatures["serving_default"]
    tfl = (export_dir / f"model_{mode}.tflite").read_bytes()
    x = digits[0][:32]
    expected = f(images=tf.constant(x))["probabilities"].numpy()
    got = np.concatenate([tflite.run(tfl, (x[i:i + 1, ..., None] / 255.0).astype(np.float32))
                          ["probabilities"] for i in range(len(x))])
    np.testing.assert_allclose(got, expected, atol=atol)
    assert np.mean(got.argmax(-1) == expected.argmax(-1)) >= 0.95


def test_export_keeps_a_keras_copy(exported, digits):
    model, export_dir = exported
    import handgrad  # noqa: F401

    again = keras.models.load_model(export_dir / "model.keras")
    x = digits[0][:4, ..., None] / 255.0
    np.testing.assert_array_equal(again.predict(x, verbose=0), model.predict(x, verbose=0))
    assert json.loads(json.dumps(again.get_config()))["name"] == model.name
