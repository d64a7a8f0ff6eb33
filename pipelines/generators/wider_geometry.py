"""A WIDER-geometry face set: each image reproduces one real WIDER FACE validation image's boxes.

The `synthetic_faces` set places a few faces at random; this one takes the real layouts of the
WIDER FACE validation ground truth (`wider_face_val.mat`: 3 226 images, crowds of up to 709
faces, faces down to a few pixels, overlapping boxes) and pastes one real LFW face exactly at each
ground-truth box, rendered from that box's own WIDER attributes (blur, occlusion, illumination,
pose; `pipelines.wider_geometry_render` documents the rules and the canvas size), on a crop of a
real scikit-image photo. Nothing is downloaded: the faces and photos ship with scikit-image, the
layouts come from the official ground-truth files (`source`).

Split by event, so no validation layout is ever trained on: events with an even index
(`0--Parade`, `2--Demonstration`, ...) give the train layouts, odd ones the validation layouts.
Each train layout is rendered `train_renders` times (other faces, other backgrounds); each
validation layout once.

Written (the official WIDER layout, read unchanged by `pipelines.wider_face` and the WIDER
evaluation with `gt_dir=<out_dir>/ground_truth`):
```
<out_dir>/WIDER_val/images/<event>/<name>.jpg             (the real image names)
<out_dir>/WIDER_train/images/<event>/<name>_r<k>.jpg      (render k of a train layout)
<out_dir>/wider_face_split/wider_face_{train,val}_bbx_gt.txt
<out_dir>/ground_truth/wider_face_val.mat, wider_{easy,medium,hard}_val.mat
<out_dir>/HANDGRAD_WIDER_GEOMETRY.json                    (marker: options, counts, complete)
```
The annotation rows are the .mat's, attributes and invalid flags included, in the real order
(so face k of an image is face k of the real image; a real 0-face image keeps its one all-zero
box, as the official files have it). The .mat files are the real ones restricted to
the validation part's events and images: the same variables, and the real `gt_list`s, so easy /
medium / hard select exactly the faces they select on WIDER.

Deterministic for a seed; any image can be rendered alone (`render.part_rng`). Images are
written one at a time, so memory does not grow with the set.

    python -m handgrad.pipelines.generators.wider_geometry --out_dir=/tmp/wg \
        --source=../shared/widerface/ground_truth
"""

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image
from tqdm import tqdm

from handgrad.pipelines.generators import markers
from handgrad.pipelines.generators import wider_geometry_render as render
from handgrad.pipelines.generators.synthetic_faces import (
    _annotation_text,
    _cell,
    load_backgrounds,
    load_faces,
)

MARKER = "HANDGRAD_WIDER_GEOMETRY.json"
KIND = "WIDER-geometry"
SETTINGS = ("easy", "medium", "hard")
LABELS = ("blur", "expression", "illumination", "invalid", "occlusion", "pose")
_OUTPUTS = ("WIDER_train", "WIDER_val", "wider_face_split", "ground_truth")
_GENERATOR = "handgrad.pipelines.wider_geometry"  # the name its markers carry on disk


@dataclasses.dataclass(frozen=True)
class Layout:
    """One real image's ground truth.

    Attributes:
        index: position in the source's .mat order; names the image's random streams.
        event, name: e.g. `0--Parade`, `0_Parade_marchingband_1_465` (no extension).
        rows: (M, 10) int32 `x y w h blur expression illumination invalid occlusion pose`.
        cell: (event position, file position) in the .mat cells.
    """

    index: int
    event: str
    name: str
    rows: np.ndarray
    cell: tuple

    @property
    def key(self):
        return f"{self.event}/{self.name}"


def split_of(event):
    """"train" for an even event index (`2--Demonstration`), "val" for an odd one."""
    head = str(event).split("--")[0]
    if not head.isdigit():
        raise ValueError(f"event must look like '<index>--<Name>'. Received: event={event!r}")
    return "train" if int(head) % 2 == 0 else "val"


def find_source(source):
    """The folder holding the four official .mat files: `source` or `source/ground_truth`."""
    root = Path(source)
    names = ["wider_face_val.mat"] + [f"wider_{s}_val.mat" for s in SETTINGS]
    for candidate in (root, root / "ground_truth"):
        if all((candidate / n).is_file() for n in names):
            return candidate
    raise FileNotFoundError(f"source={source}: expected {', '.join(names)} in {root} or "
                            f"{root / 'ground_truth'}")


def load_source(source):
    """Reads the real ground truth.

    Returns:
        (layouts, mats): every image as a `Layout`, in .mat order, and the four loaded .mat
        dicts keyed "wider_face_val", "easy", "medium", "hard".
    """
    folder = find_source(source)
    mats = {"wider_face_val": scipy.io.loadmat(folder / "wider_face_val.mat")}
    mats.update({s: scipy.io.loadmat(folder / f"wider_{s}_val.mat") for s in SETTINGS})
    full = mats["wider_face_val"]
    layouts = []
    for i in range(full["event_list"].shape[0]):
        event = str(full["event_list"][i, 0][0])
        files = full["file_list"][i, 0]
        for j in range(files.shape[0]):
            boxes = np.asarray(full["face_bbx_list"][i, 0][j, 0]).reshape(-1, 4)  # (M, 4) x y w h
            labels = [np.asarray(full[f"{n}_label_list"][i, 0][j, 0]).reshape(-1, 1)
                      for n in LABELS]  # 6 x (M, 1)
            rows = np.concatenate([boxes, *labels], axis=1).astype(np.int32)  # (M, 10)
            layouts.append(Layout(len(layouts), event, str(files[j, 0][0]), rows, (i, j)))
    return layouts, mats


def select(layouts, *, images=None, max_images_per_split=None):
    """{"train": [...], "val": [...]} layouts by event parity, in .mat order.

    Args:
        images: optional `event/name` keys; only these layouts are kept.
        max_images_per_split: optional cap on the layouts of each split (the first ones).
    """
    if isinstance(images, str):
        raise ValueError(f"images must be a list of 'event/name' keys. Received: images={images!r}")
    if images is not None:
        wanted = {str(k).removesuffix(".jpg") for k in images}
        unknown = sorted(wanted - {layout.key for layout in layouts})
        if unknown:
            raise ValueError(f"images: {len(unknown)} keys are not in the source, e.g. "
                             f"{unknown[0]!r}. Expected 'event/name' keys of wider_face_val.mat.")
        layouts = [layout for layout in layouts if layout.key in wanted]
    parts = {"train": [], "val": []}
    for layout in layouts:
        parts[split_of(layout.event)].append(layout)
    if max_images_per_split is not None:
        parts = {k: v[:max_images_per_split] for k, v in parts.items()}
    return parts


def _restrict(cells, picks):
    """The (E, 1) cell of (n, 1) cells `cells`, keeping `picks` = {event: [file positions]}."""
    return _cell([_cell([cells[i, 0][j, 0] for j in js]) for i, js in picks.items()])


def write_ground_truth(gt_dir, mats, layouts):
    """Writes the four .mat files of `mats` restricted to `layouts` (all variables kept)."""
    gt_dir = Path(gt_dir)
    gt_dir.mkdir(parents=True, exist_ok=True)
    picks = {}
    for layout in layouts:
        picks.setdefault(layout.cell[0], []).append(layout.cell[1])
    for key, mat in mats.items():
        out = {"event_list": _cell([mat["event_list"][i, 0] for i in picks])}
        for name, value in mat.items():
            if not name.startswith("__") and name != "event_list":
                out[name] = _restrict(value, picks)
        filename = "wider_face_val.mat" if key == "wider_face_val" else f"wider_{key}_val.mat"
        scipy.io.savemat(gt_dir / filename, out)


def read_marker(out_dir):
    """The marker of a generated set in `out_dir` (a dict), or None when there is none."""
    return markers.read_marker(out_dir, MARKER, _GENERATOR)


def is_ready(out_dir, options):
    """Whether `out_dir` holds a finished set made with `options` (any of `generate`'s
    recorded options); ValueError for a finished set of other options."""
    return markers.is_ready(out_dir, MARKER, _GENERATOR, options, KIND)


def _claim(out_dir, options):
    """Makes `out_dir` ready: empty or a previous generated set (whose outputs are removed)."""
    return markers.claim(out_dir, MARKER, _GENERATOR, options, _OUTPUTS)


def _write_marker(out_dir, options, *, complete, summary=None):
    markers.write_marker(out_dir, MARKER, _GENERATOR, options, complete=complete,
                           summary=summary)


def image_path(layout, split, render_index):
    """Path under `WIDER_<split>/images`: the real name for val, `<name>_r<k>` for train."""
    suffix = "" if split == "val" else f"_r{render_index}"
    return f"{layout.event}/{layout.name}{suffix}.jpg"


# The integer options and their ranges (low, high or None), checked by `generate` and `main`.
_RANGES = {"seed": (0, None), "train_renders": (1, None), "quality": (1, 100),
           "max_images_per_split": (1, None)}


def _check_options(images, **options):
    for name, value in options.items():
        if not (name == "max_images_per_split" and value is None):  # None: every layout
            markers.check_integer(name, value, *_RANGES[name])
    if images is not None and not isinstance(images, str) and len(images) == 0:
        raise ValueError("images must name at least one 'event/name' layout, or be None for "
                         "every layout. Received: images=[]")


def generate(out_dir, *, source, seed=0, train_renders=2, quality=90, max_images_per_split=None,
             images=None, progress=True):
    """Writes the WIDER-geometry set to `out_dir` (see the module docstring).

    Args:
        out_dir: output folder; must be absent, empty or a previous set of this generator.
        source: folder with the real `wider_face_val.mat` and `wider_{easy,medium,hard}_val.mat`
            (or its parent).
        seed: integer; the same seed and options write the same bytes.
        train_renders: renders of each train layout.
        quality: JPEG quality.
        max_images_per_split: optional cap on the layouts per split (quick tests).
        images: optional `event/name` keys: render only these layouts (each goes to its split).
        progress: show a tqdm progress bar.

    Returns:
        `{"train": {"layouts", "images", "faces"}, "val": {...}}`; faces count annotation rows,
        invalid ones and the all-zero row of a 0-face image included.
    """
    _check_options(images, seed=seed, train_renders=train_renders, quality=quality,
                   max_images_per_split=max_images_per_split)
    layouts, mats = load_source(source)
    parts = select(layouts, images=images, max_images_per_split=max_images_per_split)
    options = {"seed": int(seed), "train_renders": int(train_renders), "quality": int(quality),
               "max_images_per_split": max_images_per_split,
               "images": sorted(images) if images is not None else None,
               "source": str(find_source(source).resolve())}
    out_dir = _claim(out_dir, options)
    faces, photos = load_faces(), load_backgrounds()
    jobs = [("val", layout, 0) for layout in parts["val"]]
    jobs += [("train", layout, r) for layout in parts["train"] for r in range(train_renders)]
    entries = {"train": [], "val": []}
    for split, layout, r in tqdm(jobs, desc="wider_geometry", unit="image", disable=not progress):
        rel = image_path(layout, split, r)
        _, image = render.render(layout.rows, seed=seed, split=split, layout=layout.index,
                                 render_index=r, faces=faces, photos=photos)
        dest = out_dir / f"WIDER_{split}" / "images" / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(render.to_uint8(image)).save(dest, quality=quality)
        entries[split].append((rel, layout.rows))
    split_dir = out_dir / "wider_face_split"
    split_dir.mkdir(parents=True, exist_ok=True)
    for split, rows in entries.items():
        (split_dir / f"wider_face_{split}_bbx_gt.txt").write_text(_annotation_text(rows))
    write_ground_truth(out_dir / "ground_truth", mats, parts["val"])
    summary = {split: {"layouts": len(parts[split]), "images": len(entries[split]),
                       "faces": int(sum(len(r) for _, r in entries[split]))}
               for split in ("train", "val")}
    _write_marker(out_dir, options, complete=True, summary=summary)
    return summary


def main(argv=None):
    """Command line:
    `python -m handgrad.pipelines.generators.wider_geometry --out_dir=... --source=...`.

    A bad argument ends in one `parser.error` line naming it (exit 2), before anything is
    written."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out_dir", required=True)
    parser.add_argument("--source", required=True,
                        help="folder with the real wider_face_val.mat and wider_*_val.mat")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train_renders", type=int, default=2)
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--max_images_per_split", type=int, default=None)
    args = parser.parse_args(argv)
    for name in _RANGES:
        try:
            _check_options(None, **{name: getattr(args, name)})
        except ValueError as e:
            parser.error(f"argument --{name}: {e}")
    try:
        find_source(args.source)
    except FileNotFoundError as e:
        parser.error(f"argument --source: {e}")
    try:
        summary = generate(args.out_dir, source=args.source, seed=args.seed,
                           train_renders=args.train_renders, quality=args.quality,
                           max_images_per_split=args.max_images_per_split)
    except (NotADirectoryError, FileExistsError) as e:  # raised by the claim, before writing
        parser.error(f"argument --out_dir: {e}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
