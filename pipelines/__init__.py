"""tf.data input pipelines: MNIST, WIDER FACE, the synthetic WIDER-format face set, augmentation."""
