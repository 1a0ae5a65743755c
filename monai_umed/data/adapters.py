# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""Dataset adapters: turn a dataset folder (or a MONAI JSON datalist) into a MONAI datalist.

Every adapter returns a :class:`Datalist` -- a plain ``list`` of dicts, usable anywhere MONAI expects a
datalist (``monai.data.Dataset(data=...)``) -- with one dict per case::

    {
        "image": "/abs/path/images/case_001.png",        # absolute path (str)
        "label": "/abs/path/masks/case_001.png",         # absolute path (str), or a list of str when the
                                                         # case has several mask files (their union is the mask)
        "image_rel": "images/case_001.png",              # relative to Datalist.root, posix separators
        "label_rel": ["masks/case_001.png"],             # always a list
        "name": "case_001",                              # case id (file stem)
    }

Entries are sorted in natural order of their relative image path (``"x (2)"`` before ``"x (10)"``).
Layout problems found while scanning (an image without a mask, a mask without an image, two files with one
stem, unsupported files, selected stems that do not exist) do not stop the adapter: the affected cases are
left out and each problem is recorded in ``Datalist.problems`` for
:func:`monai_umed.data.validation.validate_datalist`, which reports them all together.

Supported layouts:

* ``"folders"`` (Kvasir-SEG, CVC-ClinicDB, the ``*_224`` copies): ``images/<stem>.<ext>`` paired with
  ``masks/<stem>.<ext>`` by file stem; the suffixes may differ (``.jpg`` image, ``.png`` mask). Other folder
  pairs recognised by :func:`detect_layout`: ``images``/``labels``, ``imagesTr``/``labelsTr`` and CVC-ClinicDB's
  ``Original``/``Ground Truth``.
* ``"busi"`` (BUSI as published): ``<class>/<name>.png`` beside ``<class>/<name>_mask.png`` and extra lesion
  masks ``<name>_mask_1.png``, ``<name>_mask_2.png``, ...
* ``"nnunet"`` (nnU-Net v2 raw datasets): ``imagesTr/{CASE}_{XXXX}{file_ending}`` (one file per channel,
  ``XXXX`` the channel index) and ``labelsTr/{CASE}{file_ending}``, described by ``dataset.json``
  (``channel_names``, ``labels``, ``file_ending``); :func:`datalist_from_nnunet`. With several channels an entry's
  ``image`` is the list of its channel files (see :func:`~monai_umed.data.io.image_paths`). An MSD dataset
  (``imagesTr/`` + ``labelsTr/`` with equal names) is a ``"folders"`` layout, and its ``dataset.json`` a JSON
  datalist.
* a MONAI / Medical Segmentation Decathlon JSON datalist (:func:`datalist_from_json`).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from monai_umed.data.dicom import is_dicom_series
from monai_umed.data.io import SUPPORTED_IMAGE_SUFFIXES, PathLike, image_key, image_paths, is_supported_image, stem_of
from monai_umed.utils import UserInputError

__all__ = [
    "DatasetError",
    "Datalist",
    "LAYOUTS",
    "FOLDER_PAIRS",
    "BUSI_MASK_PATTERN",
    "detect_layout",
    "find_orphans",
    "datalist_from_folders",
    "datalist_from_busi",
    "datalist_from_nnunet",
    "datalist_from_json",
    "read_stems",
    "select_stems",
    "load_datalist",
]

logger = logging.getLogger(__name__)

#: Layout names returned by :func:`detect_layout`.
LAYOUTS: tuple[str, ...] = ("folders", "busi")
#: ``(image_dir, mask_dir)`` sub-folder pairs recognised as the ``"folders"`` layout, in order of preference.
FOLDER_PAIRS: tuple[tuple[str, str], ...] = (
    ("images", "masks"),
    ("images", "labels"),
    ("imagesTr", "labelsTr"),
    ("Original", "Ground Truth"),
)
#: BUSI mask file stems: ``<name>_mask`` or ``<name>_mask_<k>``.
BUSI_MASK_PATTERN = re.compile(r"^(?P<name>.+)_mask(?:_(?P<index>\d+))?$")
_JUNK_FILES = frozenset({"thumbs.db", "desktop.ini"})
_SUPPORTED_TEXT = "'folders' (images/ + masks/ paired by file stem; also " + ", ".join(
    f"{a}/ + {b}/" for a, b in FOLDER_PAIRS[1:]
) + "), 'busi' (<class>/<name>.png beside <name>_mask.png[, <name>_mask_1.png ...]), 'nnunet' (nnU-Net v2: " \
    "imagesTr/<case>_0000<ending> + labelsTr/<case><ending> + dataset.json), or a JSON datalist (datalist=...)"


class DatasetError(UserInputError):
    """The dataset folder or datalist cannot be used (missing folder, unrecognised layout, bad JSON...)."""


class Datalist(list):
    """A MONAI datalist (``list`` of case dicts) that also records where it came from.

    Attributes:
        root: absolute dataset root; ``image_rel`` / ``label_rel`` are relative to it.
        layout: ``"folders"``, ``"busi"`` or ``"json"`` (``None`` if unknown).
        problems: layout problems found while building it (one line each, naming the files); the cases
            concerned are not in the list. :func:`~monai_umed.data.validation.validate_datalist` reports them.

    Slicing returns a plain ``list`` (without these attributes).
    """

    def __init__(
        self,
        items: Iterable[dict] = (),
        root: PathLike | None = None,
        layout: str | None = None,
        problems: Iterable[str] = (),
    ) -> None:
        super().__init__(items)
        self.root = None if root is None else os.path.abspath(root)
        self.layout = layout
        self.problems = list(problems)

    def __reduce__(self):
        return (type(self), (list(self), self.root, self.layout, self.problems))


def _natural_key(text: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text))


def _rel(path: str, root: str) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def _listing(folder: str) -> list[str]:
    """Regular, non-hidden files of ``folder`` and its DICOM series folders (names; broken symbolic links
    included), natural order."""
    try:
        entries = list(os.scandir(folder))
    except OSError as exc:
        raise DatasetError(f"cannot list folder {folder}: {exc}") from exc
    names = [
        e.name
        for e in entries
        if not e.name.startswith(".")
        and e.name.lower() not in _JUNK_FILES
        # a broken symbolic link is listed too, so that validation names it instead of its partner file
        # being reported without a match
        and (e.is_file() or (e.is_symlink() and not os.path.exists(e.path)) or (e.is_dir() and is_dicom_series(e.path)))
    ]
    return sorted(names, key=_natural_key)


def _group_by_stem(folder: str, names: Iterable[str], kind: str, problems: list[str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = defaultdict(list)
    for n in names:
        path = os.path.join(folder, n)
        if os.path.isdir(path):  # a DICOM series folder (_listing): its name is the stem
            groups[n].append(path)
            continue
        if not is_supported_image(n):
            problems.append(
                f"{path}: unsupported file type in the {kind} folder (supported: {', '.join(SUPPORTED_IMAGE_SUFFIXES)})"
            )
            continue
        groups[stem_of(n)].append(path)
    return groups


def _duplicates(groups: dict[str, list[str]], kind: str, problems: list[str]) -> set[str]:
    dups = {s for s, files in groups.items() if len(files) > 1}
    for s in sorted(dups, key=_natural_key):
        problems.append(f"{groups[s][0]}: duplicate {kind} stem '{s}': " + ", ".join(groups[s]) + " -- keep only one")
    return dups


def _require_dir(path: PathLike, what: str = "dataset folder") -> str:
    p = os.path.abspath(path)
    if not os.path.exists(p):
        raise DatasetError(f"{what} not found: {p}")
    if not os.path.isdir(p):
        raise DatasetError(f"{what} is not a folder: {p}")
    return p


def _folder_pair(root: str) -> tuple[str, str] | None:
    for image_dir, mask_dir in FOLDER_PAIRS:
        if os.path.isdir(os.path.join(root, image_dir)) and os.path.isdir(os.path.join(root, mask_dir)):
            return image_dir, mask_dir
    return None


def _busi_class_dirs(root: str) -> list[str]:
    """Sub-folders of ``root`` holding BUSI-style ``*_mask*`` files ('' = root itself)."""
    found = []
    subdirs = (e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    candidates = [""] + sorted(subdirs, key=_natural_key)
    for c in candidates:
        folder = os.path.join(root, c) if c else root
        try:
            names = [e.name for e in os.scandir(folder) if e.is_file()]
        except OSError:
            continue
        if any(is_supported_image(n) and BUSI_MASK_PATTERN.match(stem_of(n)) for n in names):
            found.append(c)
    if "" in found:  # the folder of one class was given
        return [""]
    return found


def _nnunet_description(root: str) -> dict | None:
    """The ``dataset.json`` of an nnU-Net v2 raw dataset in ``root`` (it has ``file_ending`` and ``channel_names``),
    or ``None``."""
    path = os.path.join(root, "dataset.json")
    if not (os.path.isdir(os.path.join(root, "imagesTr")) and os.path.isdir(os.path.join(root, "labelsTr"))):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            desc = json.load(f)
    except (OSError, ValueError):
        return None
    return desc if isinstance(desc, dict) and "file_ending" in desc and "channel_names" in desc else None


def detect_layout(dataset_dir: PathLike) -> str:
    """Which layout ``dataset_dir`` has: ``"nnunet"``, ``"folders"`` or ``"busi"`` (see the module docstring).

    Raises:
        DatasetError: the folder is missing, or its layout is not one of the supported ones (the message
            lists them).
    """
    root = _require_dir(dataset_dir)
    if _nnunet_description(root) is not None:
        return "nnunet"
    if _folder_pair(root) is not None:
        return "folders"
    if _busi_class_dirs(root):
        return "busi"
    raise DatasetError(f"unrecognised dataset layout in {root}; supported layouts: {_SUPPORTED_TEXT}")


def _scan_folders(root: str, image_dir: str, mask_dir: str) -> tuple[list[dict], list[str]]:
    problems: list[str] = []
    idir, mdir = os.path.join(root, image_dir), os.path.join(root, mask_dir)
    for d, what in ((idir, "image folder"), (mdir, "mask folder")):
        if not os.path.isdir(d):
            raise DatasetError(f"{what} not found: {d} (layout 'folders' needs {image_dir}/ and {mask_dir}/ in {root})")
    images = _group_by_stem(idir, _listing(idir), "image", problems)
    masks = _group_by_stem(mdir, _listing(mdir), "mask", problems)
    bad = _duplicates(images, "image", problems) | _duplicates(masks, "mask", problems)
    entries = []
    for stem, files in images.items():
        if stem not in masks:
            problems.append(f"{files[0]}: image has no mask (no {mask_dir}/{stem}.<ext> in {root})")
        elif stem not in bad:
            entries.append(_entry(files[0], masks[stem], root, stem))
    for stem, files in masks.items():
        if stem not in images:
            problems.append(f"{files[0]}: mask has no image (no {image_dir}/{stem}.<ext> in {root})")
    return entries, problems


def _entry(image: str | list[str], labels: list[str], root: str, name: str) -> dict[str, Any]:
    return {
        "image": image,
        "label": labels[0] if len(labels) == 1 else list(labels),
        "image_rel": _rel(image, root) if isinstance(image, str) else [_rel(p, root) for p in image],
        "label_rel": [_rel(p, root) for p in labels],
        "name": name,
    }


def _finish(entries: list[dict], root: str, layout: str, problems: list[str]) -> Datalist:
    entries.sort(key=lambda e: _natural_key(image_key(e["image_rel"])))
    if problems:
        logger.warning(
            "%d layout problem(s) in %s (cases left out); validate_datalist() lists them: %s%s",
            len(problems), root, problems[0], " ..." if len(problems) > 1 else "",
        )
    return Datalist(entries, root=root, layout=layout, problems=problems)


def datalist_from_folders(dataset_dir: PathLike, image_dir: str = "images", mask_dir: str = "masks") -> Datalist:
    """Datalist of the ``"folders"`` layout: ``<image_dir>/<stem>.<ext>`` paired with ``<mask_dir>/<stem>.<ext>``.

    Any of :data:`~monai_umed.data.io.SUPPORTED_IMAGE_SUFFIXES` (including 2D ``.nii`` / ``.nii.gz``); image
    and mask suffixes may differ. Hidden files, ``Thumbs.db``/``desktop.ini`` and sub-folders are ignored.

    Raises:
        DatasetError: ``dataset_dir``, ``image_dir`` or ``mask_dir`` does not exist.
    """
    root = _require_dir(dataset_dir)
    entries, problems = _scan_folders(root, image_dir, mask_dir)
    return _finish(entries, root, "folders", problems)


def datalist_from_nnunet(dataset_dir: PathLike) -> Datalist:
    """Datalist of an nnU-Net v2 raw dataset: every ``labelsTr/{CASE}{file_ending}`` with its image
    ``imagesTr/{CASE}_0000{file_ending}``; ``name`` is ``CASE``.

    With several channels (``channel_names`` with ``C > 1`` entries: one image file per channel, e.g. MRI
    modalities), ``image`` is the list ``[imagesTr/{CASE}_0000..., ..., imagesTr/{CASE}_{C-1:04d}...]`` in channel
    order (``image_rel`` likewise); every job reads such a list as one ``C``-channel image and writes each channel
    back to its own file. A label without all its channel files, an image file without its label and a channel
    index beyond ``C`` are layout problems.

    Raises:
        DatasetError: the folder is not an nnU-Net v2 raw dataset.
    """
    root = _require_dir(dataset_dir)
    desc = _nnunet_description(root)
    if desc is None:
        raise DatasetError(f"{root} is not an nnU-Net v2 raw dataset (imagesTr/, labelsTr/, dataset.json with "
                           "'file_ending' and 'channel_names')")
    ending = str(desc["file_ending"])
    names = desc.get("channel_names")
    channels = len(names) if isinstance(names, Mapping) else 0
    problems: list[str] = []
    if channels < 1:
        problems.append(f"{os.path.join(root, 'dataset.json')}: 'channel_names' must map channel indices to names, "
                        f"got {names!r:.100}")
        return _finish([], root, "nnunet", problems)
    idir, ldir = os.path.join(root, "imagesTr"), os.path.join(root, "labelsTr")
    images = {n[: -len(ending)]: n for n in _listing(idir) if n.endswith(ending)}
    entries = []
    cases = set()
    for name in _listing(ldir):
        if not name.endswith(ending):
            continue
        case = name[: -len(ending)]
        cases.add(case)
        files = [images.get(f"{case}_{c:04d}") for c in range(channels)]
        absent = [f"imagesTr/{case}_{c:04d}{ending}" for c, f in enumerate(files) if f is None]
        if absent:
            problems.append(
                f"{os.path.join(ldir, name)}: label has no image (no {absent[0]} in {root})" if channels == 1 else
                f"{os.path.join(ldir, name)}: label lacks {len(absent)} of its {channels} channel files "
                f"({', '.join(absent)} not in {root})"
            )
            continue
        paths = [os.path.join(idir, f) for f in files]
        entries.append(_entry(paths[0] if channels == 1 else paths, [os.path.join(ldir, name)], root, case))
    for stem, name in images.items():
        case, _, index = stem.rpartition("_")
        if len(index) != 4 or not index.isdigit() or case not in cases:
            problems.append(f"{os.path.join(idir, name)}: image has no label (no labelsTr/{case or stem}{ending} in "
                            f"{root})")
        elif int(index) >= channels:
            problems.append(f"{os.path.join(idir, name)}: channel {int(index)} beyond the {channels} channel(s) of "
                            f"dataset.json's channel_names")
    return _finish(entries, root, "nnunet", problems)


def _scan_busi(root: str, classes: Iterable[str] | None) -> tuple[list[dict], list[str]]:
    if classes is None:
        class_dirs = _busi_class_dirs(root)
        if not class_dirs:
            raise DatasetError(f"no BUSI class folders (with <name>_mask.png files) found in {root}")
    else:
        class_dirs = list(classes)
        if isinstance(classes, str):
            class_dirs = [classes]
        for c in class_dirs:
            _require_dir(os.path.join(root, c), f"BUSI class folder '{c}'")
    problems: list[str] = []
    entries = []
    for c in class_dirs:
        folder = os.path.join(root, c) if c else root
        names = _listing(folder)
        mask_names = [n for n in names if BUSI_MASK_PATTERN.match(stem_of(n))]
        mask_set = set(mask_names)
        images = _group_by_stem(folder, [n for n in names if n not in mask_set], "image", problems)
        masks: dict[str, list[tuple[int, str]]] = defaultdict(list)
        for n in mask_names:
            path = os.path.join(folder, n)
            if not is_supported_image(n):
                supported = ", ".join(SUPPORTED_IMAGE_SUFFIXES)
                problems.append(f"{path}: unsupported mask file type (supported: {supported})")
                continue
            m = BUSI_MASK_PATTERN.match(stem_of(n))
            index = -1 if m.group("index") is None else int(m.group("index"))
            masks[m.group("name")].append((index, path))
        bad = _duplicates(images, "image", problems)
        for name, items in masks.items():
            indices = [i for i, _ in items]
            for i in sorted({i for i in indices if indices.count(i) > 1}):
                files = [p for j, p in items if j == i]
                problems.append(
                    f"{files[0]}: duplicate mask files for '{name}': " + ", ".join(files) + " -- keep only one"
                )
                bad.add(name)
        for stem, files in images.items():
            if stem not in masks:
                problems.append(f"{files[0]}: image has no mask (no '{stem}_mask.<ext>' beside it)")
            elif stem not in bad:
                labels = [p for _, p in sorted(masks[stem])]
                entries.append(_entry(files[0], labels, root, stem))
        for name, items in masks.items():
            if name not in images:
                for _, p in sorted(items):
                    problems.append(f"{p}: mask has no image (no '{name}.<ext>' beside it)")
    return entries, problems


def datalist_from_busi(dataset_dir: PathLike, classes: Iterable[str] | None = None) -> Datalist:
    """Datalist of BUSI's published layout (``Dataset_BUSI_with_GT``).

    ``<class>/<name>.png`` is paired with ``<class>/<name>_mask.png``; extra lesion masks
    ``<name>_mask_1.png``, ``<name>_mask_2.png``... of the same case are added, and ``"label"`` is then the
    list ``[_mask, _mask_1, _mask_2, ...]`` whose union is the case's mask. ``name`` is the file stem
    (``"benign (4)"``; BUSI stems carry the class). Names may contain spaces and parentheses.

    Args:
        dataset_dir: the folder holding the class folders (``benign/``, ``malignant/``, ``normal/``), or
            one class folder itself.
        classes: class sub-folders to include (default: every sub-folder with ``*_mask*`` files), e.g.
            ``("benign", "malignant")`` for the paper's lesion-only setting.
    """
    root = _require_dir(dataset_dir)
    entries, problems = _scan_busi(root, classes)
    return _finish(entries, root, "busi", problems)


def _is_under(path: str, root: str) -> bool:
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:  # different drives
        return False


def datalist_from_json(datalist_file: PathLike, dataset_dir: PathLike | None = None, key: str = "training") -> Datalist:
    """Datalist from a MONAI / Decathlon-style JSON file ``{"training": [{"image": ..., "label": ...}], ...}``.

    Relative paths are resolved against ``dataset_dir`` when given, else against the JSON file's folder
    (like ``base_dir`` of MONAI's ``load_decathlon_datalist``). ``"label"`` may be one path or a list of
    paths (union); ``"image"`` one path or a list of paths that are one image's channels in order. Entries may also
    be plain strings (an image path, as in Decathlon ``"test"`` lists);
    such entries, and dicts without ``"label"``, get no ``"label"`` key and ``"label_rel": []`` (the
    validator reports them). Extra keys of an entry are kept; ``"name"`` defaults to the image stem.

    ``image_rel`` / ``label_rel`` are relative to that base folder; if some file lies outside it, to the
    deepest folder that contains the base and all files (``Datalist.root``), so they never contain ``..``.

    Raises:
        DatasetError: missing/invalid JSON, ``key`` absent (the message lists the keys present), or
            malformed entries (all listed).
    """
    jf = os.path.abspath(datalist_file)
    if not os.path.isfile(jf):
        raise DatasetError(f"datalist file not found: {jf}")
    try:
        with open(jf, encoding="utf-8") as f:
            content = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{jf}: cannot read JSON datalist: {exc}") from exc
    if not isinstance(content, dict) or key not in content:
        keys = list(content) if isinstance(content, dict) else []
        raise DatasetError(f"{jf}: no '{key}' list in the datalist (keys present: {keys})")
    items = content[key]
    if not isinstance(items, list):
        raise DatasetError(f"{jf}: '{key}' must be a list of entries, got {type(items).__name__}")
    base = _require_dir(dataset_dir) if dataset_dir is not None else os.path.dirname(jf)

    def resolve(p: Any) -> str:
        return os.path.normpath(p if os.path.isabs(p) else os.path.join(base, p))

    bad, raw_entries = [], []
    for i, item in enumerate(items):
        if isinstance(item, str):
            item = {"image": item}
        image = item.get("image") if isinstance(item, dict) else None
        if not (isinstance(image, str) or (isinstance(image, list) and image and all(isinstance(x, str) for x in image))):
            bad.append(f"  entry {i}: needs an 'image' path (or a list of channel files), got {item!r:.100}")
            continue
        label = item.get("label")
        if label is None:
            labels = []
        elif isinstance(label, str):
            labels = [label]
        elif isinstance(label, list) and label and all(isinstance(x, str) for x in label):
            labels = list(label)
        else:
            bad.append(f"  entry {i}: 'label' must be a path or a list of paths, got {label!r:.100}")
            continue
        img = resolve(image) if isinstance(image, str) else [resolve(p) for p in image]
        raw_entries.append((item, img, [resolve(p) for p in labels]))
    if bad:
        raise DatasetError(f"{jf}: malformed '{key}' entries:\n" + "\n".join(bad))
    all_paths = [p for _, img, labels in raw_entries for p in (*image_paths(img), *labels)]
    root = base
    if any(not _is_under(p, base) for p in all_paths):
        root = os.path.commonpath([base, *all_paths])
    entries = []
    for item, img, labels in raw_entries:
        e = {k: v for k, v in item.items() if k not in ("image", "label")}
        e["image"] = img
        if labels:
            e["label"] = labels[0] if len(labels) == 1 else labels
        e["image_rel"] = _rel(img, root) if isinstance(img, str) else [_rel(p, root) for p in img]
        e["label_rel"] = [_rel(p, root) for p in labels]
        e["name"] = str(item.get("name") or stem_of(image_key(img)))
        entries.append(e)
    return Datalist(entries, root=root, layout="json", problems=[])


def find_orphans(dataset_dir: PathLike, image_dir: str | None = None, mask_dir: str | None = None) -> list[str]:
    """Layout problems of a dataset folder, one line each naming the files.

    Reports images without a mask, masks without an image, several files with one stem (``a.png`` and
    ``a.jpg``), and unsupported files in the image/mask folders. The layout is auto-detected unless
    ``image_dir`` and ``mask_dir`` are given (``"folders"`` layout).

    Raises:
        DatasetError: the folder is missing or its layout unrecognised.
    """
    root = _require_dir(dataset_dir)
    if image_dir is not None or mask_dir is not None:
        return _scan_folders(root, image_dir or "images", mask_dir or "masks")[1]
    layout = detect_layout(root)
    if layout == "nnunet":
        return list(datalist_from_nnunet(root).problems)
    if layout == "folders":
        return _scan_folders(root, *_folder_pair(root))[1]
    return _scan_busi(root, None)[1]


def read_stems(stems: PathLike | Iterable[str]) -> list[str]:
    """Case names to select: a text file path (one stem per line; blank lines and ``#`` comments ignored;
    leading/trailing whitespace stripped, inner spaces kept) or an iterable of stems.

    A single ``str`` is taken as a file path; pass a list to select one case.
    """
    if isinstance(stems, (str, os.PathLike)):
        path = os.path.abspath(stems)
        if not os.path.isfile(path):
            raise DatasetError(f"stems file not found: {path}")
        with open(path, encoding="utf-8") as f:
            lines = [line.strip() for line in f]
        return [s for s in lines if s and not s.startswith("#")]
    return [str(s).strip() for s in stems]


def select_stems(datalist: list[dict], stems: PathLike | Iterable[str]) -> Datalist:
    """Keep the entries whose ``"name"`` is in ``stems`` (order of ``datalist``).

    Stems that match no entry are recorded in ``problems`` (carried over from ``datalist`` if it is a
    :class:`Datalist`), not raised, so that validation reports them with the rest.
    """
    wanted = read_stems(stems)
    wanted_set = set(wanted)
    kept = [e for e in datalist if e.get("name") in wanted_set]
    have = {e.get("name") for e in datalist}
    root = getattr(datalist, "root", None)
    problems = list(getattr(datalist, "problems", []))
    source = f" in {root}" if root else ""
    seen: set[str] = set()
    for s in wanted:
        if s not in have and s not in seen:
            problems.append(f"{s}: selected stem has no case{source}")
        seen.add(s)
    return Datalist(kept, root=root, layout=getattr(datalist, "layout", None), problems=problems)


def load_datalist(
    dataset_dir: PathLike | None = None,
    datalist: PathLike | None = None,
    key: str = "training",
    stems: PathLike | Iterable[str] | None = None,
) -> Datalist:
    """One entry point: JSON datalist if ``datalist`` is given, else the auto-detected layout of ``dataset_dir``.

    Args:
        dataset_dir: dataset folder (``"folders"`` or ``"busi"`` layout), or the base folder of the JSON
            datalist's relative paths.
        datalist: a MONAI/Decathlon JSON datalist file (see :func:`datalist_from_json`).
        key: which list of the JSON file (``"training"``, ``"validation"``, ``"test"``...).
        stems: optional selection of cases by ``name``: an iterable of stems or a text file with one per
            line (e.g. BUSI ``benign_malignant_stems.txt``); see :func:`read_stems`.

    Raises:
        DatasetError: neither argument given, folder missing, or layout unrecognised (lists the supported ones).
    """
    if datalist is not None:
        dl = datalist_from_json(datalist, dataset_dir, key)
    elif dataset_dir is None:
        raise DatasetError(
            f"give a dataset folder (dataset_dir) or a JSON datalist (datalist); supported layouts: {_SUPPORTED_TEXT}"
        )
    else:
        layout = detect_layout(dataset_dir)
        if layout == "nnunet":
            dl = datalist_from_nnunet(dataset_dir)
        elif layout == "folders":
            dl = datalist_from_folders(dataset_dir, *_folder_pair(os.path.abspath(dataset_dir)))
        else:
            dl = datalist_from_busi(dataset_dir)
    if stems is not None:
        dl = select_stems(dl, stems)
    return dl
