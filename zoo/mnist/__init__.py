"""The MNIST digit readers: models, configs, task."""
