"""Cut a few images out of COCO instances / COCO-panoptic annotation files, fast.

``python -m bridge.subset ANN.json [MORE.json ...] (--one [ID] | --ids ID,ID | --first N)
[--only-nonempty | --only-empty] [--out-dir DIR]``

The whole file is never turned into Python objects. It is memory-mapped, and one vectorised (numpy)
pass over its bytes, chunk by chunk, finds the brackets outside strings down to depth 3 (the span of
every top-level value, of every image and of every annotation object) and the depth-3 keys ``"id"``,
``"image_id"`` and ``"segments_info"``, whose values are then read vectorised too. Kept images and
annotations and every other top-level value are copied as raw bytes; the output is checked with orjson.
"""

from __future__ import annotations

import hashlib
import mmap
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson

from bridge.atomic import atomic_group
from bridge.cli import check_outputs
from bridge.errors import SubsetError

Only = Literal["empty", "nonempty"] | None
Raw = bytes | mmap.mmap
_CHUNK = 1 << 20  # bytes per step of the scan
_SUB = 1 << 17  # bytes per step of the bracket/quote test inside a chunk (stays in the CPU cache)
_BLOCK = 1 << 12  # sorted positions handled together after the scan (their bytes stay in the cache)
_KEYS = (b'"id"', b'"image_id"', b'"segments_info"')  # depth-3 keys the scan records
_MAX_DIGITS = 18  # longest integer read vectorised (int64-safe); longer ones go through orjson
_SIGN = np.zeros(256, dtype=np.int8)
_SIGN[[0x7B, 0x5B]], _SIGN[[0x7D, 0x5D]] = 1, -1
_IS_WS = np.zeros(256, dtype=bool)
_IS_WS[[0x20, 0x09, 0x0A, 0x0D]] = True
_WS_RE = re.compile(rb"[ \t\n\r]*")


@dataclass
class _Objects:
    """The objects of a top-level list: their byte spans and the integer id read from each."""

    starts: np.ndarray  # position of each object's "{"
    ends: np.ndarray  # position just after its "}"
    ids: np.ndarray  # images: "id"; annotations: "image_id"


@dataclass
class CocoFile:
    """A COCO annotation file indexed for cutting: its bytes plus the spans of its parts."""

    path: Path
    raw: Raw
    keys: list[tuple[str, Any]]  # top-level (key, scalar value or (start, end) span of a container)
    images: _Objects
    annotations: _Objects
    segments_keys: np.ndarray  # positions of the annotations' "segments_info" keys (panoptic files)

    def image_ids(self) -> list[int]:
        """Image ids in file order."""
        return self.images.ids.tolist()

    def images_with_objects(self) -> set[int]:
        """Ids of the images that have at least one object (panoptic: a non-empty segments_info)."""
        arr = np.frombuffer(self.raw, dtype=np.uint8)
        nonempty = _annotation_nonempty(arr, self.annotations.starts, self.segments_keys)
        return set(np.unique(self.annotations.ids[nonempty]).tolist())


@dataclass
class _Scan:
    """What the pass over the bytes keeps: the brackets outside strings down to depth 3, and depth-3 keys."""

    pos: np.ndarray  # position of every kept bracket
    level: np.ndarray  # its depth (1 = the top-level object), negated for closing brackets
    keys: dict[bytes, np.ndarray]  # key (with its quotes) -> positions of its opening quote


def _byte_at(arr: np.ndarray, where: np.ndarray) -> np.ndarray:
    """``arr[where]``, positions past the end reading the last byte."""
    return arr.take(where, mode="clip")


def _skip_ws(arr: np.ndarray, where: np.ndarray) -> np.ndarray:
    """First position at or after each of ``where`` whose byte is not JSON whitespace (at most the last one)."""
    where = where.copy()
    last = arr.size - 1
    todo = np.flatnonzero(_IS_WS[_byte_at(arr, where)] & (where < last))
    while todo.size:
        where[todo] += 1
        todo = todo[_IS_WS[_byte_at(arr, where[todo])] & (where[todo] < last)]
    return where


def _candidates(chunk: np.ndarray, scratch: np.ndarray) -> np.ndarray:
    """Offsets of the quotes and brackets in ``chunk``.

    ``scratch`` (``_CHUNK + 2 * _SUB`` bytes) holds the marks and two work buffers, so that nothing
    chunk-sized is allocated; the marks are computed ``_SUB`` bytes at a time, in the CPU cache.
    """
    marks = scratch[: chunk.size].view(np.bool_)
    for lo in range(0, chunk.size, _SUB):
        part = chunk[lo : lo + _SUB]
        folded = scratch[_CHUNK : _CHUNK + part.size]
        other = scratch[_CHUNK + _SUB : _CHUNK + _SUB + part.size].view(np.bool_)
        out = marks[lo : lo + part.size]
        np.bitwise_or(part, 0x20, out=folded)  # [ ] -> { }
        np.equal(folded, 0x7B, out=out)
        np.equal(folded, 0x7D, out=other)
        out |= other
        np.equal(part, 0x22, out=other)
        out |= other
    return np.flatnonzero(marks)


def _drop_escaped_quotes(arr: np.ndarray, where: np.ndarray, is_quote: np.ndarray) -> None:
    """Clear ``is_quote`` where the quote at ``where`` follows an odd number of backslashes."""
    quotes = np.flatnonzero(is_quote)
    for k in quotes[arr[np.maximum(where[quotes] - 1, 0)] == 0x5C].tolist():  # rare: count them
        p, n = int(where[k]) - 1, 0
        while p >= 0 and arr[p] == 0x5C:
            n, p = n + 1, p - 1
        if n % 2:
            is_quote[k] = False


def _brackets_outside(is_quote: np.ndarray, quotes: np.ndarray, in_string: int) -> np.ndarray:
    """Indices of the brackets among a chunk's marks that are not inside a string.

    ``quotes`` are the indices of the quote marks; ``in_string`` says whether the chunk starts inside one.
    Usually no string holds a bracket: each opening quote is then followed by its closing one.
    """
    brackets = np.flatnonzero(~is_quote)
    opening, closing = quotes[in_string::2], quotes[1 + in_string :: 2]
    n = is_quote.size
    if (
        (not in_string or (quotes[0] if quotes.size else n) == 0)
        and (opening.size == closing.size or opening[-1] == n - 1)
        and not np.any(closing - opening[: closing.size] > 1)
    ):
        return brackets
    bounds = np.concatenate([[-1], quotes, [n]]) if in_string else np.append(quotes, n)
    inside = np.zeros(n + 1, dtype=np.int8)
    inside[bounds[0:-1:2] + 1] += 1
    inside[bounds[1::2]] -= 1
    return brackets[np.cumsum(inside[:-1], dtype=np.int8).view(np.bool_)[brackets] == 0]


def _match_keys(arr: np.ndarray, quotes: np.ndarray, found: dict[bytes, list[np.ndarray]]) -> None:
    """Append to ``found[key]`` the opening quotes (positions ``quotes``) of the strings equal to ``key``."""
    first = _byte_at(arr, quotes + 1)
    for key, hits in found.items():
        cand = quotes[first == key[1]]
        for j in (len(key) - 1, *range(2, len(key) - 1)):  # the closing quote first: it rules out most
            cand = cand[_byte_at(arr, cand + j) == key[j]]
        hits.append(cand)


class _Scanner:
    """The pass over the bytes, chunk by chunk: brackets outside strings down to depth 3, depth-3 keys.

    Depth is counted on the brackets alone; a quote's depth is that after the brackets before it.
    """

    def __init__(self, arr: np.ndarray, raw: Raw) -> None:
        self.arr, self.raw = arr, raw
        self.in_string, self.depth, self.braces = 0, 0, 0
        self.kept_pos: list[np.ndarray] = []
        self.kept_level: list[np.ndarray] = []
        self.found: dict[bytes, list[np.ndarray]] = {key: [] for key in _KEYS}
        self.scratch = np.empty(_CHUNK + 2 * _SUB, dtype=np.uint8)

    def feed(self, start: int) -> None:
        """Scan the chunk at ``start``; raise SubsetError if the brackets go below depth 0."""
        chunk = self.arr[start : start + _CHUNK]
        where = _candidates(chunk, self.scratch)
        byte = chunk.take(where)
        is_quote = byte == 0x22
        if self.raw.find(b"\\", max(start - 1, 0), start + chunk.size) >= 0:  # a quote may be escaped
            _drop_escaped_quotes(self.arr, where + start, is_quote)
        quotes = np.flatnonzero(is_quote)
        brackets = _brackets_outside(is_quote, quotes, self.in_string)
        bracket_byte = byte.take(brackets)
        sign = _SIGN.take(bracket_byte)
        depth = self._depths(sign)
        self._keep_brackets(where, start, brackets, sign, depth)
        self._keep_keys(where, start, quotes, brackets, depth)
        self.braces += int(np.count_nonzero(bracket_byte == 0x7B)) - int(np.count_nonzero(bracket_byte == 0x7D))
        self.in_string = (self.in_string + quotes.size) & 1
        self.depth = int(depth[-1])

    def _depths(self, sign: np.ndarray) -> np.ndarray:
        """``depth[i]``: the depth after the chunk's first ``i`` brackets (``depth[0]``: at its start)."""
        depth = np.empty(sign.size + 1, dtype=np.int32)
        depth[0] = 0
        np.cumsum(sign, dtype=np.int32, out=depth[1:])
        depth += self.depth
        return depth

    def _keep_brackets(
        self, where: np.ndarray, start: int, brackets: np.ndarray, sign: np.ndarray, depth: np.ndarray
    ) -> None:
        """Keep the brackets down to depth 3 (``where``: offsets of the chunk's marks, which begins at ``start``)."""
        level = depth[1:] - np.minimum(sign, 0)  # 1 = the top-level object
        keep = np.flatnonzero(level <= 3)
        if keep.size and level.take(keep).min() < 1:
            raise SubsetError("malformed JSON (unbalanced brackets)")
        self.kept_pos.append(where.take(brackets.take(keep)) + start)
        self.kept_level.append((level.take(keep) * sign.take(keep)).astype(np.int8))

    def _keep_keys(
        self, where: np.ndarray, start: int, quotes: np.ndarray, brackets: np.ndarray, depth: np.ndarray
    ) -> None:
        """Record the depth-3 strings opened in the chunk that are one of ``_KEYS``."""
        opening = quotes[self.in_string :: 2]
        if brackets.size == where.size - quotes.size:  # every bracket counts: those before = marks - quotes
            before = opening - np.arange(self.in_string, quotes.size, 2)
        else:
            before = np.searchsorted(brackets, opening)
        _match_keys(self.arr, where.take(opening[depth.take(before) == 3]) + start, self.found)

    def result(self) -> _Scan:
        """What the scan kept (after at least one chunk); raise SubsetError if strings or brackets are open."""
        if self.in_string:
            raise SubsetError("malformed JSON (unterminated string)")
        if self.depth or self.braces:
            raise SubsetError(f"malformed JSON ({'unbalanced' if self.depth else 'mismatched'} brackets)")
        return _Scan(
            np.concatenate(self.kept_pos),
            np.concatenate(self.kept_level),
            {key: np.concatenate(hits) for key, hits in self.found.items()},
        )


def _scan(arr: np.ndarray, raw: Raw) -> _Scan:
    """One pass over the (non-empty) bytes; raise SubsetError on unbalanced brackets or strings."""
    scanner = _Scanner(arr, raw)
    for start in range(0, arr.size, _CHUNK):
        scanner.feed(start)
    return scanner.result()


def _index(path: Path, raw: Raw) -> CocoFile:
    """Index ``raw`` (the bytes of ``path``); raise SubsetError if it is not a COCO annotation file."""
    arr = np.frombuffer(raw, dtype=np.uint8)
    top = _WS_RE.match(raw).end()
    if top == len(raw) or raw[top] != 0x7B:
        raise SubsetError(f"{path}: not a COCO file (top level is not a JSON object)")
    try:
        scan = _scan(arr, raw)
    except SubsetError as exc:
        raise SubsetError(f"{path}: {exc}") from None
    outer = np.flatnonzero(np.abs(scan.level) == 1)
    if outer.size != 2 or scan.pos[outer[0]] != top:
        raise SubsetError(f"{path}: malformed JSON (unbalanced brackets)")
    if _WS_RE.match(raw, int(scan.pos[outer[1]]) + 1).end() != len(raw):
        raise SubsetError(f"{path}: malformed JSON (trailing data)")
    spans = [(int(s), int(e) + 1) for s, e in zip(scan.pos[scan.level == 2], scan.pos[scan.level == -2])]
    keys = _top_level_keys(path, raw, top, spans)
    span_of = {k: v for k, v in keys if isinstance(v, tuple)}
    for name in ("images", "annotations"):
        if name not in span_of or raw[span_of[name][0]] != 0x5B:
            raise SubsetError(f"{path}: not a COCO file (no {name!r} list)")
    images = _objects(path, raw, arr, scan, span_of["images"], b'"id"', "images")
    annotations = _objects(path, raw, arr, scan, span_of["annotations"], b'"image_id"', "annotations")
    segments = _keys_in(scan, b'"segments_info"', span_of["annotations"])
    return CocoFile(path, raw, keys, images, annotations, segments)


def _top_level_keys(path: Path, raw: Raw, top: int, spans: list[tuple[int, int]]) -> list[tuple[str, Any]]:
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


def _blocks(n: int) -> list[slice]:
    """Slices covering ``range(n)``, ``_BLOCK`` items each (sorted positions, block by block, stay in cache)."""
    return [slice(k, min(k + _BLOCK, n)) for k in range(0, n, _BLOCK)]


def _keys_in(scan: _Scan, key: bytes, span: tuple[int, int]) -> np.ndarray:
    """Positions of the depth-3 ``key`` strings inside ``span``."""
    hits = scan.keys[key]
    lo, hi = np.searchsorted(hits, span)
    return hits[lo:hi]


def _objects(
    path: Path, raw: Raw, arr: np.ndarray, scan: _Scan, span: tuple[int, int], key: bytes, name: str
) -> _Objects:
    """The objects of the top-level list ``name`` at ``span``, and the integer ``key`` of each."""
    starts, ends = _object_spans(path, arr, scan, span, name)
    ids = _object_ids(path, raw, arr, starts, ends, _keys_in(scan, key, span), key[1:-1].decode(), name[:-1])
    return _Objects(starts, ends, ids)


def _object_spans(
    path: Path, arr: np.ndarray, scan: _Scan, span: tuple[int, int], name: str
) -> tuple[np.ndarray, np.ndarray]:
    """Starts and ends of the elements of the top-level list at ``span``; all must be objects."""
    lo, hi = np.searchsorted(scan.pos, span)
    pos, level = scan.pos[lo:hi], scan.level[lo:hi]
    starts, ends = pos[level == 3], pos[level == -3] + 1
    close = span[1] - 1
    ok = _skip_ws(arr, np.array([span[0] + 1]))[0] == (starts[0] if starts.size else close)
    if ok and starts.size:
        ok = _skip_ws(arr, ends[-1:])[0] == close and _byte_at(arr, starts[-1:])[0] == 0x7B
    for b in _blocks(starts.size - 1):  # every element but the last: "{...}" "," "{"
        comma = _skip_ws(arr, ends[b])
        ok = (
            ok
            and not np.any(_byte_at(arr, comma) != 0x2C)
            and not np.any(_byte_at(arr, starts[b]) != 0x7B)
            and np.array_equal(_skip_ws(arr, comma + 1), starts[1:][b])
        )
    if not ok:
        raise SubsetError(f"{path}: not a COCO file ({name!r} must hold only objects)")
    return starts, ends


def _int_values(arr: np.ndarray, keys: np.ndarray, key_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Values of the keys whose strings (``key_len`` bytes) start at ``keys``, and where they are plain integers.

    A key is followed by optional whitespace, ``:``, whitespace, ``-?[0-9]{1,18}``, whitespace, then
    ``,`` or ``}``; anything else (a string value, a float, a longer integer) is flagged False.
    """
    parts = [_int_values_block(arr, keys[b], key_len) for b in _blocks(keys.size)]
    if not parts:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool)
    return np.concatenate([v for v, _ok in parts]), np.concatenate([ok for _v, ok in parts])


def _int_values_block(arr: np.ndarray, keys: np.ndarray, key_len: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_int_values` for one block of keys."""
    colon = _skip_ws(arr, keys + key_len)
    ok = _byte_at(arr, colon) == 0x3A
    start = _skip_ws(arr, colon + 1)
    negative = _byte_at(arr, start) == 0x2D
    cursor = start + negative
    value = np.zeros(keys.size, dtype=np.int64)
    active = ok.copy()
    for _ in range(_MAX_DIGITS + 1):
        digit = _byte_at(arr, cursor) - 0x30
        active &= digit < 10
        if not active.any():
            break
        value = np.where(active, value * 10 + digit, value)
        cursor += active
    digits = cursor - start - negative
    after = _byte_at(arr, _skip_ws(arr, cursor))
    ok &= (digits >= 1) & (digits <= _MAX_DIGITS) & ((after == 0x2C) | (after == 0x7D))
    return np.where(negative, -value, value), ok


def _object_ids(
    path: Path, raw: Raw, arr: np.ndarray, starts: np.ndarray, ends: np.ndarray, keys: np.ndarray, name: str, what: str
) -> np.ndarray:
    """The integer key ``name`` of every object (``what``: "image" or "annotation", for errors).

    ``keys`` are the positions of that key at depth 3; objects where it is not found exactly once as a
    plain integer (duplicate keys, odd values) are parsed with orjson.
    """
    values, ok = _int_values(arr, keys, len(name) + 2)
    where, values = keys[ok], values[ok]
    if where.size == starts.size and np.all(where > starts) and np.all(where < ends):
        return values  # one per object, in order
    owner = np.searchsorted(starts, where) - 1
    counts = np.bincount(owner, minlength=starts.size)
    ids = np.zeros(starts.size, dtype=np.int64)
    ids[owner] = values
    for k in np.flatnonzero(counts != 1).tolist():
        try:
            value = orjson.loads(raw[starts[k] : ends[k]]).get(name)
        except orjson.JSONDecodeError as exc:
            raise SubsetError(f"{path}: malformed JSON in {what} #{k} ({exc})") from None
        if isinstance(value, bool) or not isinstance(value, int) or not -(2**63) <= value < 2**63:
            raise SubsetError(f"{path}: not a COCO file ({what} #{k} has no integer {name!r})")
        ids[k] = value
    return ids


def _annotation_nonempty(arr: np.ndarray, starts: np.ndarray, segments_keys: np.ndarray) -> np.ndarray:
    """Panoptic annotations are non-empty when their segments_info is; instance ones always are."""
    nonempty = np.ones(starts.size, dtype=bool)
    colon = _skip_ws(arr, segments_keys + len(b'"segments_info"'))
    value = _skip_ws(arr, colon + 1)
    empty = (_byte_at(arr, colon) == 0x3A) & (_byte_at(arr, value) == 0x5B)
    empty &= _byte_at(arr, _skip_ws(arr, value + 1)) == 0x5D
    nonempty[np.searchsorted(starts, segments_keys[empty]) - 1] = False
    return nonempty


def _map(path: Path) -> Raw:
    """The bytes of ``path``: memory-mapped read-only (no private copy) when the file allows it."""
    try:
        with open(path, "rb") as handle:
            try:
                return mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
            except (ValueError, OSError):  # an empty file, a pipe: read it instead
                return handle.read()
    except OSError as exc:
        raise SubsetError(f"{path}: cannot read ({exc.strerror})") from None


def load_coco(path: Path) -> CocoFile:
    """Read and index a COCO instances or panoptic annotation file."""
    path = Path(path)
    coco = _index(path, _map(path))
    ids = coco.images.ids
    if np.unique(ids).size != ids.size:
        values, counts = np.unique(ids, return_counts=True)
        raise SubsetError(
            f"{path}: image id {int(values[counts > 1][0])} appears {int(counts[counts > 1][0])} times "
            "in 'images'; image ids must be unique"
        )
    return coco


def select_image_ids(
    coco: CocoFile,
    *,
    one: int | bool | None = None,
    ids: Sequence[int] | None = None,
    first: int | None = None,
    only: Only = None,
) -> list[int]:
    """Choose image ids from ``coco`` (file order). Exactly one of ``one``/``ids``/``first`` is given.

    ``one=True`` takes the first image with objects (with ``only='empty'``: the first empty one);
    ``one=<id>`` takes that image. ``only`` keeps images with objects ('nonempty') or without ('empty').
    """
    modes = sum(x is not None and x is not False for x in (one, ids, first))
    if modes != 1:
        raise SubsetError("give exactly one of --one, --ids, --first")
    if only not in (None, "empty", "nonempty"):
        raise SubsetError(f"unknown filter {only!r}")
    if ids is not None and (
        not len(ids) or any(isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)) for i in ids)
    ):
        raise SubsetError(f"--ids must name at least one integer image id, got {list(ids)!r}")
    needs_objects = one is True or only is not None
    with_objects = coco.images_with_objects() if needs_objects else set()
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


def _join_objects(raw: Raw, objects: _Objects, wanted: np.ndarray) -> bytes:
    """A JSON list of the objects whose id is in ``wanted``, copied byte for byte."""
    keep = np.flatnonzero(np.isin(objects.ids, wanted))
    spans = zip(objects.starts[keep].tolist(), objects.ends[keep].tolist())
    return b"[" + b",".join(raw[s:e] for s, e in spans) + b"]"


def cut_bytes(coco: CocoFile, image_ids: Sequence[int]) -> bytes:
    """JSON bytes of ``coco`` reduced to ``image_ids``; every other top-level value is copied untouched."""
    wanted = set(image_ids)
    present = set(coco.image_ids())
    for image_id in image_ids:
        if image_id not in present:
            raise SubsetError(f"{coco.path}: image id {image_id} not found")
    raw = coco.raw
    wanted_ids = np.fromiter(wanted, dtype=np.int64, count=len(wanted))
    images = _join_objects(raw, coco.images, wanted_ids)
    anns = _join_objects(raw, coco.annotations, wanted_ids)
    parts = []
    for key, value in coco.keys:
        if key == "images":
            body = images
        elif key == "annotations":
            body = anns
        elif isinstance(value, tuple):
            body = raw[value[0] : value[1]]
        else:
            body = orjson.dumps(value)
        parts.append(orjson.dumps(key) + b":" + body)
    out = b"{" + b",".join(parts) + b"}\n"
    try:
        orjson.loads(out)
    except orjson.JSONDecodeError as exc:
        raise SubsetError(f"{coco.path}: malformed JSON inside the kept images or annotations ({exc})") from None
    return out


def subset_tag(
    *,
    one: int | bool | None = None,
    ids: Sequence[int] | None = None,
    first: int | None = None,
    only: Only = None,
    chosen: Sequence[int] = (),
) -> str:
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
    """Write every output to a temporary file, then rename them all into place (call only once all of them
    are computed): a failure leaves none of them."""
    with atomic_group() as group:
        for target, data in outputs.items():
            group.write_bytes(target, data)
        group.commit()
    return list(outputs)


def cut_subset(
    ann_paths: Sequence[Path],
    *,
    one: int | bool | None = None,
    ids: Sequence[int] | None = None,
    first: int | None = None,
    only: Only = None,
    out_dir: Path | None = None,
) -> list[Path]:
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
    check_outputs({f"input {p}": p for p in map(Path, ann_paths)}, {f"output {t}": t for t in outputs})
    return write_subset(outputs)
