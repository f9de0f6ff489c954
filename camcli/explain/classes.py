"""Which classes to explain: `--class` requests, and the one rule that turns a class given as text into
the model's class index (used for `--class` and for the labels of ground-truth boxes alike).

A class is given by its label, compared case-insensitively with `_` standing for a space
("Egyptian_cat", "egyptian cat"), or by its index, written in ASCII digits ("281"). A label wins
over an index: with labels "1".."10", "3" is the class named 3. `--class` also takes "top1".."topK",
the k-th ranked prediction of each image.
"""

from __future__ import annotations

import difflib
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from camcli.errors import UsageError
from camcli.models.loading import index_labels

_INDEX = re.compile(r"-?[0-9]+")  # only ASCII digits: "²".isdigit() is True, but int("²") fails
_RANK = re.compile(r"top([0-9]+)")
_LISTED_LABELS = 10  # an unknown class lists the labels of a model with at most this many classes


@dataclass(frozen=True)
class ClassRequest:
    """A class to explain: a fixed index, or the k-th ranked prediction of each image."""

    text: str
    index: int | None = None
    rank: int | None = None  # 1-based


def _spaced(text: str) -> str:
    return text.strip().lower().replace("_", " ")


def _label_indices(text: str, labels: Sequence[str]) -> list[int]:
    """The labels equal to `text` ignoring case, else those equal to it with `_` as a space."""
    wanted = text.strip().lower()
    for match in (lambda label: label.lower() == wanted, lambda label: _spaced(label) == _spaced(wanted)):
        found = [i for i, label in enumerate(labels) if match(label)]
        if found:
            return found
    return []


def same_label_classes(text: str, labels: Sequence[str]) -> list[int]:
    """Every class `text` names as a label, when it names more than one (ImageNet's two cranes); else []."""
    found = _label_indices(text, labels)
    return found if len(found) > 1 else []


def _label_index(text: str, labels: Sequence[str]) -> int | None:
    """The first label equal to `text` ignoring case, else the first equal to it with `_` as a space."""
    found = _label_indices(text, labels)
    return found[0] if found else None


class ClassChoiceWarning(UserWarning):
    """A class given as digits named a label that is not the class of that index (one line)."""


def resolve_label(text: str | None, labels: Sequence[str]) -> int | None:
    """The class index `text` names: a label (case-insensitive, `_` = space) or an index in ASCII
    digits; None when `text` is None or names no class of `labels`."""
    if text is None:
        return None
    index = _label_index(text, labels)
    if index is None and _INDEX.fullmatch(text.strip()):
        index = int(text.strip())
    return index if index is not None and 0 <= index < len(labels) else None


def _parse_one(text: str, labels: Sequence[str]) -> ClassRequest:
    rank = _RANK.fullmatch(text.lower())
    if rank:
        if not 1 <= int(rank.group(1)) <= len(labels):
            raise UsageError(f"`classes={text}`: the model has {len(labels)} classes, so use top1..top{len(labels)}")
        return ClassRequest(text, rank=int(rank.group(1)))
    named = _label_indices(text, labels)
    if len(named) > 1:
        listed = ", ".join(str(i) for i in named[:-1]) + f" and {named[-1]}"
        raise UsageError(f"`classes={text}` is ambiguous: classes {listed} are {'both' if len(named) == 2 else 'all'} "
                         f"labelled {labels[named[0]]!r}; "
                         "give the index of the one to explain")
    index = resolve_label(text, labels)
    if index is not None:
        _say_label_over_index(text, index, labels)
        return ClassRequest(text, index=index)
    if _INDEX.fullmatch(text):
        raise UsageError(f"`classes={text}` is out of range: class indices run from 0 to {len(labels) - 1}")
    if list(labels) == index_labels(len(labels)):  # the model's classes have no names
        raise UsageError(f"unknown class {text!r}: the model's classes have no names; give them with "
                         f"`labels_file=FILE` (one name per line), or give a class index, 0 to {len(labels) - 1}")
    close = difflib.get_close_matches(text.lower(), [label.lower() for label in labels], n=3, cutoff=0.6)
    hint = (f"closest: {', '.join(close)}" if close else f"the model's classes: {', '.join(labels)}"
            if len(labels) <= _LISTED_LABELS else "give a class index, a label or top1..topK")
    raise UsageError(f"unknown class {text!r} ({hint})")


def _say_label_over_index(text: str, index: int, labels: Sequence[str]) -> None:
    """Digits that are a label (of another class than that index) name the label: say so."""
    if not _INDEX.fullmatch(text) or int(text) == index or not 0 <= int(text) < len(labels):
        return
    warnings.warn(f"`classes={text}` is the class labelled {labels[index]!r} (index {index}), not class index "
                  f"{int(text)} (labelled {labels[int(text)]!r}): labels win over indices", ClassChoiceWarning,
                  stacklevel=4)


def parse_class_requests(values: str | Sequence[str] | None, labels: Sequence[str]) -> list[ClassRequest]:
    """Parse `--class` values: an index, a label (case-insensitive, `_` = space), or top1..topK.
    One string is one request (`classes="tabby"` is ["tabby"], not five letters). No values: the
    top-1 class."""
    if isinstance(values, str):
        values = [values]
    if not values:
        return [ClassRequest("top1", rank=1)]
    return [_parse_one(str(value).strip(), labels) for value in values]


def compared_class_ids(values: Sequence[str], labels: Sequence[str]) -> tuple[int, ...]:
    """FinerCAM's `compare_with`: each an index or a label (not topK), as class indices, in order."""
    requests = [_parse_one(str(value).strip(), labels) for value in values]
    for request in requests:
        if request.index is None:
            raise UsageError(f"`compare_with={request.text}` names no class: give an index or a label (a ranked "
                             "prediction such as top2 is not one class for every image)")
    return tuple(dict.fromkeys(request.index for request in requests))


def parse_detection_requests(values: Sequence[str], labels: Sequence[str]) -> list[ClassRequest]:
    """`--class` for a detector's detections: a class (index or label) keeps the detections of that class,
    top1..topK the K best detections, whatever their class. No values: every detection (no request)."""
    requests = []
    for value in values:
        rank = _RANK.fullmatch(str(value).strip().lower())
        if rank and int(rank.group(1)) >= 1:
            requests.append(ClassRequest(str(value).strip(), rank=int(rank.group(1))))
        else:
            requests.append(_parse_one(str(value).strip(), labels))
    return requests


def forced_class_ids(class_ids: np.ndarray | None, images: int, requests: int, num_classes: int) -> np.ndarray:
    """(images, requests) int32 class indices that replace the requests image by image; -1 keeps the
    request. None: keep every request."""
    forced = np.full((images, requests), -1, dtype=np.int32)
    if class_ids is None:
        return forced
    wanted = f"{images}x{requests} class indices (images x classes asked for; -1 keeps a request)"
    try:
        given = np.asarray(class_ids, dtype=np.float64)
    except (ValueError, TypeError):
        raise UsageError(f"`class_ids` holds something other than numbers; give {wanted}") from None
    if given.size != forced.size:
        raise UsageError(f"`class_ids` has {given.size} values; give {wanted}")
    bad = [value for value in given.ravel().tolist() if not (value == round(value) and value >= -1)]
    if bad:  # NaN fails the comparison too
        raise UsageError(f"`class_ids` holds {bad[0]!r}, which is no class index; give {wanted}")
    forced = given.astype(np.int32).reshape(forced.shape)
    if forced.max(initial=-1) >= num_classes:
        raise UsageError(f"class index {forced.max()} is out of range: the model has {num_classes} classes")
    return forced
