"""The face detector: configs, anchors, boxes, backbones, pyramid, heads, models, task, WIDER evaluation."""
