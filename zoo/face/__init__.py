"""The face detector: configs, anchors, boxes, backbones, pyramid, heads, models, task and
WIDER evaluation."""
