"""Reference figures that give sample-quality metrics a scale: the floor (real test images
against real training images, what a perfect model scores) and the ceiling (real test images
against uniform noise on the level grid, what a useless one scores).

``reference(dataset, binarize, extractor=, levels=)`` reads ``benchmarks/results/fid_reference*.json``
(written by ``benchmarks/bench_fid.py``) when the source tree is at hand, else falls back on the
figures measured for the README (classifier extractor, n = 10,000, Fashion-MNIST). Rows are keyed
by (dataset, extractor, levels, binarisation): threshold and dynamic binarisation give different
real test sets, an Inception row says nothing of classifier features, and 4 levels are not 256.
It never computes anything.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results"


@dataclass(frozen=True)
class Reference:
    dataset: str
    binarize: str          # "none" for grey data, else "dynamic"/"threshold"
    extractor: str
    levels: int
    source: str            # where the figures come from
    floor: dict[str, float]
    ceiling: dict[str, float]


#: Classifier-feature figures from the README's table, keyed by (dataset, extractor, levels, binarize).
_README = {
    ("fashion-mnist", "classifier", 256, "none"): (
        {"fid": 0.082, "kid_mean": -0.0016, "is_mean": 7.83, "precision": 0.870, "recall": 0.873},
        {"fid": 178.40, "kid_mean": 6.377, "is_mean": 1.15, "precision": 0.008, "recall": 0.000}),
    ("fashion-mnist", "classifier", 2, "dynamic"): (
        {"fid": 0.061, "kid_mean": -0.0018, "is_mean": 6.90, "precision": 0.879, "recall": 0.879},
        {"fid": 110.19, "kid_mean": 1.475, "is_mean": 1.07, "precision": 0.653, "recall": 0.000}),
}


def _key(dataset: str, extractor: str, levels: int | None, binarize: str) -> tuple[str, str, int, str]:
    """Binarised data has 2 levels whatever ``levels`` says; grey data 256 unless told."""
    levels = 2 if binarize != "none" else int(levels or 256)
    return dataset, extractor, levels, binarize


def _from_files(folder: Path) -> dict[tuple[str, str, int, str], Reference]:
    found = {}
    for path in sorted(folder.glob("fid_reference*.json")) if folder.is_dir() else []:
        try:
            data = json.loads(path.read_text())
            key = _key(str(data["dataset"]), str(data.get("extractor", "classifier")), data.get("levels"),
                       str(data.get("binarize", "none")))
            found[key] = Reference(key[0], key[3], key[1], key[2], f"{path.name} (n = {data.get('n', '?')})",
                                   dict(data["floor"]), dict(data["ceiling"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return found


def reference(dataset: str, binarize: str = "none", folder: Path | None = None, extractor: str = "classifier",
              levels: int | None = None) -> Reference | None:
    """The floor and ceiling for a dataset as the model sees it (its levels and binarisation),
    read by ``extractor``, or None if never measured."""
    key = _key(dataset, extractor or "classifier", levels, binarize)
    measured = _from_files(folder if folder is not None else RESULTS)
    if key in measured:
        return measured[key]
    if key in _README:
        floor, ceiling = _README[key]
        return Reference(key[0], key[3], key[1], key[2], "README table (n = 10,000)", floor, ceiling)
    return None
