"""Models (MNIST CNN, MLP, face detector), anchors, boxes, named configs and command lines."""
