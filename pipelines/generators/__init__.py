"""On-disk data-set generators, apart from the tf.data readers: the synthetic WIDER-format face
set (`synthetic_faces`), the WIDER-geometry set (`wider_geometry`, drawn by
`wider_geometry_render`), and the markers both write (`markers`). Nothing here is read by a
training pipeline directly: `zoo.face.data.resolve` is the one place that finds or generates a
set, and `pipelines.wider_face` reads it like any WIDER-layout folder."""
