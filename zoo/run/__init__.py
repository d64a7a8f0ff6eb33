"""Running experiments: the train / eval command lines, the config registry and overrides,
callbacks, crash safety and tf.distribute."""
