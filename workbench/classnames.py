"""The class names of the datasets genwb knows, for labels on screen (torch-free).

    class_name("fashion-mnist", 0)   # "T-shirt/top"
    class_name("cifar10", 3)          # "cat"
    class_name("unknown", 3)          # "3"
"""
from __future__ import annotations

CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                      "Bag", "Ankle boot"),
    "mnist": tuple(str(i) for i in range(10)),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
}


def _key(dataset: str) -> str:
    return dataset.strip().lower().replace("_", "-").replace("cifar-10", "cifar10")


def class_names(dataset: str | None) -> tuple[str, ...] | None:
    """The dataset's class names in label order, or None for a dataset without known names."""
    return CLASS_NAMES.get(_key(dataset)) if dataset else None


def class_name(dataset: str | None, label: int) -> str:
    """Label ``label``'s name, or the number itself where the name is unknown."""
    names = class_names(dataset)
    return names[label] if names is not None and 0 <= label < len(names) else str(label)


def labelled(dataset: str | None, label: int) -> str:
    """"3 Dress" for a named class, "3" for digits and unknown datasets."""
    name = class_name(dataset, label)
    return str(label) if name == str(label) else f"{label} {name}"
