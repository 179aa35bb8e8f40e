"""Cut a few images out of COCO instances / COCO-panoptic annotation files, fast.

``python -m bridge.subset ANN.json [MORE.json ...] (--one [ID] | --ids ID,ID | --first N)
[--only-nonempty | --only-empty] [--out-dir DIR]``

The whole file is never turned into Python objects: a vectorised (numpy) scan of the raw bytes finds
the structural brackets outside strings, which gives the span of every top-level value and of every
annotation object. Only ``images`` (small) is parsed with orjson; each annotation's ``image_id`` is read
with a regex; kept annotations and every other top-level value are copied as raw bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson

from bridge.atomic import atomic_write_bytes
from bridge.errors import SubsetError

Only = Literal["empty", "nonempty"] | None
_CHUNK = 1 << 20
_IMAGE_ID_RE = re.compile(rb'"image_id"\s*:\s*(-?\d+)(?=\s*[,}])')
_SEGMENTS_RE = re.compile(rb'"segments_info"\s*:\s*(\[\s*\])?')


@dataclass
class CocoFile:
    """A COCO annotation file indexed for cutting: raw bytes plus the spans of its parts."""

    path: Path
    raw: bytes
    keys: list[tuple[str, Any]]  # top-level (key, scalar value or (start, end) span of a container)
    images: list[dict[str, Any]]
    ann_spans: np.ndarray  # (n, 2) start/end (exclusive) of every annotation object
    ann_image_ids: np.ndarray  # (n,) image_id of every annotation
    pos: np.ndarray  # structural bracket positions and depth after each (to read segments_info lazily)
    depth: np.ndarray
    ann_region: tuple[int, int]

    def image_ids(self) -> list[int]:
        """Image ids in file order."""
        return [img["id"] for img in self.images]

    def images_with_objects(self) -> set[int]:
        """Ids of the images that have at least one object (panoptic: a non-empty segments_info)."""
        spans = self.ann_spans
        if len(spans) and b'"segments_info"' in self.raw[spans[0, 0]:spans[0, 1]]:
            nonempty = _annotation_nonempty(self.raw, self.pos, self.depth, spans, self.ann_region)
        else:
            nonempty = np.ones(len(spans), dtype=bool)
        return set(np.unique(self.ann_image_ids[nonempty]).tolist())


_KIND = {0x22: 1, 0x7B: 2, 0x5B: 2, 0x7D: 3, 0x5D: 3}
_LUT = bytes(_KIND.get(b, 0) for b in range(256))


def _structural_brackets(raw: bytes, arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the brackets outside strings and their kind (+1 open / -1 close), chunk by chunk."""
    positions, signs = [], []
    in_string = 0
    pos_type = np.int32 if len(raw) < 2**31 else np.int64
    for start in range(0, len(raw), _CHUNK):
        marks = np.frombuffer(raw[start:start + _CHUNK].translate(_LUT), dtype=np.uint8)
        where = np.flatnonzero(marks.view(np.bool_))
        kind = marks[where]
        is_quote = kind == 1
        quotes = where[is_quote] + start
        if quotes.size:
            escaped = np.flatnonzero(arr[np.maximum(quotes - 1, 0)] == 0x5C)
            quote_index = np.flatnonzero(is_quote)
            for k in escaped.tolist():  # rare: count the backslashes before the quote
                p, n = int(quotes[k]) - 1, 0
                while p >= 0 and arr[p] == 0x5C:
                    n, p = n + 1, p - 1
                if n % 2:
                    is_quote[quote_index[k]] = False
        parity = (np.cumsum(is_quote, dtype=np.int64) + in_string) & 1
        structural = ~is_quote & (kind != 1) & (parity == 0)
        positions.append((where[structural] + start).astype(pos_type))
        signs.append(np.where(kind[structural] == 2, 1, -1).astype(np.int8))
        in_string = int((int(np.count_nonzero(is_quote)) + in_string) & 1)
    if in_string:
        raise SubsetError("malformed JSON (unterminated string)")
    if not positions:
        return np.zeros(0, dtype=pos_type), np.zeros(0, dtype=np.int8)
    return np.concatenate(positions), np.concatenate(signs)


def _index(path: Path, raw: bytes) -> CocoFile:
    """Index ``raw`` (the bytes of ``path``); raise SubsetError if it is not a COCO annotation file."""
    arr = np.frombuffer(raw, dtype=np.uint8)
    stripped = raw.lstrip()
    if not stripped.startswith(b"{"):
        raise SubsetError(f"{path}: not a COCO file (top level is not a JSON object)")
    try:
        pos, sign = _structural_brackets(raw, arr)
    except SubsetError as exc:
        raise SubsetError(f"{path}: {exc}") from None
    if pos.size == 0 or pos[0] != len(raw) - len(stripped):
        raise SubsetError(f"{path}: malformed JSON (no top-level object)")
    depth = np.cumsum(sign, dtype=np.int32)
    if depth.size == 0 or depth.min() < 0 or depth[-1] != 0 or np.count_nonzero(depth == 0) != 1:
        raise SubsetError(f"{path}: malformed JSON (unbalanced brackets)")
    if raw[pos[-1]:].strip() != b"}":
        raise SubsetError(f"{path}: malformed JSON (trailing data)")
    kinds = arr[pos]
    for o, c in ((0x7B, 0x7D), (0x5B, 0x5D)):
        if np.count_nonzero(kinds == o) != np.count_nonzero(kinds == c):
            raise SubsetError(f"{path}: malformed JSON (mismatched brackets)")
    top_open = np.flatnonzero((sign == 1) & (depth == 2))
    top_close = np.flatnonzero((sign == -1) & (depth == 1))
    spans = [(int(pos[o]), int(pos[c]) + 1) for o, c in zip(top_open, top_close)]
    keys = _top_level_keys(path, raw, pos[0], spans)
    span_of = {k: v for k, v in keys if isinstance(v, tuple)}
    if "images" not in span_of or raw[span_of["images"][0]] != 0x5B:
        raise SubsetError(f"{path}: not a COCO file (no 'images' list)")
    if "annotations" not in span_of or raw[span_of["annotations"][0]] != 0x5B:
        raise SubsetError(f"{path}: not a COCO file (no 'annotations' list)")
    images = _parse_images(path, raw, span_of["images"])
    a0, a1 = span_of["annotations"]
    lo, hi = np.searchsorted(pos, [a0, a1])
    inner_pos, inner_sign, inner_depth = pos[lo:hi], sign[lo:hi], depth[lo:hi]
    starts = inner_pos[(inner_sign == 1) & (inner_depth == 3)]
    ends = inner_pos[(inner_sign == -1) & (inner_depth == 2)] + 1
    if starts.size != ends.size or (starts.size and np.any(arr[starts] != 0x7B)):
        raise SubsetError(f"{path}: not a COCO file ('annotations' must hold objects)")
    spans_arr = np.stack([starts, ends], axis=1) if starts.size else np.zeros((0, 2), dtype=np.int64)
    image_ids = _annotation_ids(path, raw, arr, pos, depth, spans_arr, (a0, a1))
    return CocoFile(path, raw, keys, images, spans_arr, image_ids, pos, depth, (a0, a1))


def _top_level_keys(path: Path, raw: bytes, top: int, spans: list[tuple[int, int]]) -> list[tuple[str, Any]]:
    """Parse the top-level object with every container replaced by an empty one; map keys to spans."""
    pieces, cursor = [], int(top)
    for s, e in spans:
        pieces += [raw[cursor:s], b"[]" if raw[s] == 0x5B else b"{}"]
        cursor = e
    pieces.append(raw[cursor:])
    try:
        skeleton = orjson.loads(b"".join(pieces))
    except orjson.JSONDecodeError as exc:
        raise SubsetError(f"{path}: malformed JSON ({exc})") from None
    keys: list[tuple[str, Any]] = []
    containers = iter(spans)
    for key, value in skeleton.items():
        keys.append((key, next(containers) if isinstance(value, (list, dict)) else value))
    if sum(isinstance(v, tuple) for _k, v in keys) != len(spans):
        raise SubsetError(f"{path}: duplicate top-level keys")
    return keys


def _parse_images(path: Path, raw: bytes, span: tuple[int, int]) -> list[dict[str, Any]]:
    try:
        images = orjson.loads(raw[span[0]:span[1]])
    except orjson.JSONDecodeError as exc:
        raise SubsetError(f"{path}: malformed JSON in 'images' ({exc})") from None
    for img in images:
        if not isinstance(img, dict) or not isinstance(img.get("id"), int):
            raise SubsetError(f"{path}: not a COCO file (an image without an integer 'id': {img!r:.80})")
    return images


def _depth_at(pos: np.ndarray, depth: np.ndarray, where: np.ndarray) -> np.ndarray:
    return depth[np.searchsorted(pos, where) - 1]


def _annotation_ids(path: Path, raw: bytes, arr: np.ndarray, pos: np.ndarray, depth: np.ndarray,
                    spans: np.ndarray, region: tuple[int, int]) -> np.ndarray:
    """image_id of every annotation object, read with a regex (keys at depth 3 only)."""
    hits = [(m.start(), m.group(1)) for m in _IMAGE_ID_RE.finditer(raw, region[0], region[1])]
    where = np.fromiter((h[0] for h in hits), dtype=np.int64, count=len(hits))
    values = np.fromiter((int(h[1]) for h in hits), dtype=np.int64, count=len(hits))
    if where.size:
        ok = (_depth_at(pos, depth, where) == 3) & (arr[where - 1] != 0x5C)
        where, values = where[ok], values[ok]
    owner = np.searchsorted(spans[:, 0], where) - 1
    counts = np.bincount(owner, minlength=len(spans)) if owner.size else np.zeros(len(spans), dtype=np.int64)
    if np.all(counts == 1):
        return values
    ids = np.zeros(len(spans), dtype=np.int64)
    ids[owner] = values
    for k in np.flatnonzero(counts != 1).tolist():  # unusual layout: parse those objects for real
        ann = orjson.loads(raw[spans[k, 0]:spans[k, 1]])
        if not isinstance(ann.get("image_id"), int):
            raise SubsetError(f"{path}: not a COCO file (annotation #{k} has no integer 'image_id')")
        ids[k] = ann["image_id"]
    return ids


def _annotation_nonempty(raw: bytes, pos: np.ndarray, depth: np.ndarray, spans: np.ndarray,
                         region: tuple[int, int]) -> np.ndarray:
    """Panoptic annotations are non-empty when their segments_info is; instance ones always are."""
    hits = [(m.start(), m.group(1) is not None) for m in _SEGMENTS_RE.finditer(raw, region[0], region[1])]
    nonempty = np.ones(len(spans), dtype=bool)
    if not hits or not len(spans):
        return nonempty
    where = np.array([h[0] for h in hits], dtype=np.int64)
    empty = np.array([h[1] for h in hits], dtype=bool)
    ok = _depth_at(pos, depth, where) == 3
    owner = np.searchsorted(spans[:, 0], where[ok]) - 1
    nonempty[owner[empty[ok]]] = False
    return nonempty


def load_coco(path: Path) -> CocoFile:
    """Read and index a COCO instances or panoptic annotation file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SubsetError(f"{path}: cannot read ({exc.strerror})") from None
    return _index(path, raw)


def select_image_ids(coco: CocoFile, *, one: int | bool | None = None, ids: Sequence[int] | None = None,
                     first: int | None = None, only: Only = None) -> list[int]:
    """Choose image ids from ``coco`` (file order). Exactly one of ``one``/``ids``/``first`` is given.

    ``one=True`` takes the first image with objects (with ``only='empty'``: the first empty one);
    ``one=<id>`` takes that image. ``only`` keeps images with objects ('nonempty') or without ('empty').
    """
    modes = sum(x is not None and x is not False for x in (one, ids, first))
    if modes != 1:
        raise SubsetError("give exactly one of --one, --ids, --first")
    if only not in (None, "empty", "nonempty"):
        raise SubsetError(f"unknown filter {only!r}")
    with_objects = coco.images_with_objects()
    order = coco.image_ids()

    def passes(image_id: int) -> bool:
        return only is None or (image_id in with_objects) == (only == "nonempty")

    if one is True:
        want_objects = only != "empty"
        for image_id in order:
            if (image_id in with_objects) == want_objects:
                return [image_id]
        raise SubsetError(f"{coco.path}: no image {'with' if want_objects else 'without'} annotations")
    explicit = [int(one)] if ids is None and first is None else (list(ids) if ids is not None else None)
    if explicit is not None:
        known = set(order)
        for image_id in explicit:
            if image_id not in known:
                raise SubsetError(f"{coco.path}: image id {image_id} not found")
            if not passes(image_id):
                raise SubsetError(f"{coco.path}: image id {image_id} is not {only}")
        wanted = set(explicit)
        return [i for i in order if i in wanted]
    if first is None or first < 1:
        raise SubsetError(f"--first needs a positive count, got {first}")
    chosen = [i for i in order if passes(i)][:first]
    if not chosen:
        raise SubsetError(f"{coco.path}: no image is {only}")
    return chosen


def cut_bytes(coco: CocoFile, image_ids: Sequence[int]) -> bytes:
    """JSON bytes of ``coco`` reduced to ``image_ids``; every other top-level value is copied untouched."""
    wanted = set(image_ids)
    present = set(coco.image_ids())
    for image_id in image_ids:
        if image_id not in present:
            raise SubsetError(f"{coco.path}: image id {image_id} not found")
    raw = coco.raw
    images = orjson.dumps([img for img in coco.images if img["id"] in wanted])
    keep = np.isin(coco.ann_image_ids, np.fromiter(wanted, dtype=np.int64, count=len(wanted)))
    anns = b"[" + b",".join(raw[s:e] for s, e in coco.ann_spans[keep].tolist()) + b"]"
    parts = []
    for key, value in coco.keys:
        if key == "images":
            body = images
        elif key == "annotations":
            body = anns
        elif isinstance(value, tuple):
            body = raw[value[0]:value[1]]
        else:
            body = orjson.dumps(value)
        parts.append(orjson.dumps(key) + b":" + body)
    out = b"{" + b",".join(parts) + b"}\n"
    try:
        orjson.loads(out)
    except orjson.JSONDecodeError as exc:
        raise SubsetError(f"{coco.path}: malformed JSON inside kept annotations ({exc})") from None
    return out


def subset_tag(*, one: int | bool | None = None, ids: Sequence[int] | None = None, first: int | None = None,
               only: Only = None, chosen: Sequence[int] = ()) -> str:
    """File-name tag: ``onesample_<id>``, ``subset_ids_1-2-3`` or ``subset_first_5`` (+ ``_empty``/``_nonempty``)."""
    if one is not None and one is not False:
        return f"onesample_{chosen[0]}"
    if ids is not None:
        tag = "ids_" + "-".join(map(str, ids))
        if len(ids) > 8:
            digest = hashlib.sha1(",".join(map(str, ids)).encode()).hexdigest()[:8]
            tag = f"ids_{len(ids)}_{digest}"
    else:
        tag = f"first_{first}"
    return "subset_" + tag + (f"_{only}" if only else "")


def write_subset(outputs: dict[Path, bytes]) -> list[Path]:
    """Write every output atomically (call only once all of them are computed)."""
    for target, data in outputs.items():
        atomic_write_bytes(target, data)
    return list(outputs)


def cut_subset(ann_paths: Sequence[Path], *, one: int | bool | None = None, ids: Sequence[int] | None = None,
               first: int | None = None, only: Only = None, out_dir: Path | None = None) -> list[Path]:
    """Cut the same images out of every file in ``ann_paths``; return the written paths.

    Ids are chosen from the first file (see :func:`select_image_ids`); each later file must hold them
    all. Outputs go beside the inputs or into ``out_dir``; nothing is written when anything fails.
    """
    if not ann_paths:
        raise SubsetError("no annotation file given")
    outputs: dict[Path, bytes] = {}
    chosen: list[int] = []
    for n, path in enumerate(map(Path, ann_paths)):
        coco = load_coco(path)
        if n == 0:
            chosen = select_image_ids(coco, one=one, ids=ids, first=first, only=only)
            tag = subset_tag(one=one, ids=ids, first=first, only=only, chosen=chosen)
        target = (Path(out_dir) if out_dir is not None else path.parent) / f"{path.stem}_{tag}.json"
        if target in outputs or target.resolve() == path.resolve():
            raise SubsetError(f"{path}: output {target} would collide with another file")
        outputs[target] = cut_bytes(coco, chosen)
        del coco
    return write_subset(outputs)


def _parse_ids(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 ok, 2 bad input)."""
    parser = argparse.ArgumentParser(prog="python -m bridge.subset", description=__doc__.splitlines()[0])
    parser.add_argument("ann", nargs="+", type=Path, help="COCO instances or panoptic JSON files")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--one", nargs="?", type=int, const=True, default=None, metavar="IMAGE_ID")
    mode.add_argument("--ids", type=_parse_ids)
    mode.add_argument("--first", type=int, metavar="N")
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--only-nonempty", dest="only", action="store_const", const="nonempty")
    only.add_argument("--only-empty", dest="only", action="store_const", const="empty")
    parser.add_argument("--out-dir", type=Path)
    args = parser.parse_args(argv)
    try:
        paths = cut_subset(args.ann, one=args.one, ids=args.ids, first=args.first, only=args.only,
                           out_dir=args.out_dir)
    except SubsetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for p in paths:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
