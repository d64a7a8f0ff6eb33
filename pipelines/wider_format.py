"""WIDER FACE result files: `<out_dir>/<event>/<name>.txt`, one per image.

Format (the official submission format read by the eval tools' `read_pred.m`):
```
<name>                 image name without extension (not read by the evaluation)
<count>                number of detections
x y w h score          one line per detection, pixels of the original image
```
Inside the package boxes are `[ymin, xmin, ymax, xmax]`; result files (written and read here)
and annotation files (`wider_face`) are where they become `x y w h` and back, through
`pipelines.boxes`.
"""

from pathlib import Path

import numpy as np

from handgrad.pipelines.boxes import xywh_to_yxyx, yxyx_to_xywh


def image_key(image_path):
    """`"0--Parade/0_Parade_x_465.jpg"` -> `"0--Parade/0_Parade_x_465"` (event/name, no ext)."""
    path = Path(str(image_path))
    return f"{path.parent.name}/{path.stem}"


def write_results(out_dir, image_path, boxes, scores):
    """Writes one image's detections to `<out_dir>/<event>/<name>.txt`.

    Args:
        out_dir: the prediction folder (created).
        image_path: `<event>/<name>.jpg` (any leading folders are ignored).
        boxes: (N, 4) `[ymin, xmin, ymax, xmax]` in pixels of the original image.
        scores: (N,) detection scores.

    Returns:
        The path written.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    if len(boxes) != len(scores):
        raise ValueError(
            f"boxes and scores must have the same length. Received: {len(boxes)} boxes, "
            f"{len(scores)} scores for {image_path}")
    key = image_key(image_path)
    dest = Path(out_dir) / f"{key}.txt"
    dest.parent.mkdir(parents=True, exist_ok=True)
    lines = [Path(key).name, str(len(boxes))]
    for (x, y, w, h), s in zip(yxyx_to_xywh(boxes), scores, strict=True):
        lines.append(f"{x:.3f} {y:.3f} {w:.3f} {h:.3f} {s:.6f}")
    dest.write_text("\n".join(lines) + "\n")
    return dest


def read_utf8_text(path):
    """The text of a WIDER text file (annotations, results): UTF-8, a leading BOM tolerated;
    ValueError naming the file, the line and the byte offset of the first byte that is not UTF-8
    (a file saved as Latin-1, a stray byte)."""
    path = Path(path)
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        lineno = raw.count(b"\n", 0, e.start) + 1
        line = raw[raw.rfind(b"\n", 0, e.start) + 1:].split(b"\n", 1)[0]
        raise ValueError(
            f"{path}:{lineno}: expected UTF-8 text. Received: byte 0x{raw[e.start]:02x} at byte "
            f"offset {e.start} ({e.reason}) in {line!r}; re-save the file as UTF-8.") from None


def read_result_file(path):
    """Reads one result file -> (boxes (N, 4) yxyx float64, scores (N,) float64), file order.

    Raises ValueError naming the file and line when a line does not hold >= 5 numbers, the
    count disagrees with the lines present, or the file is not UTF-8 (`read_utf8_text`).
    """
    path = Path(path)
    lines = read_utf8_text(path).splitlines()
    if len(lines) < 2:
        raise ValueError(f"{path}: expected a name line and a count line. Received "
                         f"{len(lines)} line(s)")
    try:
        count = int(float(lines[1].strip()))
    except ValueError:
        raise ValueError(f"{path}:2: expected the number of detections. Received: "
                         f"{lines[1]!r}") from None
    rows = []
    for k in range(count):
        if k + 2 >= len(lines):
            raise ValueError(f"{path}:{k + 3}: expected detection {k + 1} of {count}. "
                             "Received: <end of file>")
        try:
            values = [float(v) for v in lines[k + 2].split()]
        except ValueError:
            values = []
        if len(values) < 5:
            raise ValueError(f"{path}:{k + 3}: expected 'x y w h score'. Received: "
                             f"{lines[k + 2]!r}")
        # read_pred.m takes the first four numbers and the fifth as the score.
        rows.append(values[:5])
    rows = np.asarray(rows, np.float64).reshape(-1, 5)
    return xywh_to_yxyx(rows[:, :4]), rows[:, 4]


def read_results(pred_dir):
    """Reads every `<event>/<name>.txt` under `pred_dir` -> `{"event/name": (boxes, scores)}`."""
    pred_dir = Path(pred_dir)
    results = {}
    for path in sorted(pred_dir.glob("*/*.txt")):
        results[f"{path.parent.name}/{path.stem}"] = read_result_file(path)
    return results
