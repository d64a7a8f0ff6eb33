"""The seed's detector family (RetinaNet, seed section 3.5.2): anchors (+ target encoding),
pyramid, heads, the model (`FaceDetector`), post-processing, configs (+ the rule of every field)
and the task ("face"). It imports the floor of `zoo.face`, never another family."""
