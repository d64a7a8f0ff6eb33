"""SavedModel / .keras / TFLite export, the detect command and latency measurement."""
