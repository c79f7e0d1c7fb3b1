"""Registry of every architecture of the course.

    models.names()                         -> sorted list of registered names
    models.build(name, image_shape=(C, H, W), levels=2, num_classes=None, **hparams)
    models.hyperparameters(name)           -> {hparam: default}

A model is one file in this package whose class is decorated with ``@register("name")``;
the registry finds it by importing every module of the package, so nothing else changes
when a model is added. This package is pure PyTorch and never imports ``workbench``.
"""
from __future__ import annotations

import difflib
import importlib
import inspect
import pkgutil

from models.base import GenerativeModel

__all__ = ["GenerativeModel", "register", "names", "build", "hyperparameters", "get"]

_REGISTRY: dict[str, type[GenerativeModel]] = {}
_CONTRACT_ARGS = ("self", "image_shape", "levels", "num_classes")
_discovered = False


def register(name: str):
    """Class decorator: make ``cls`` buildable as ``models.build(name, ...)``."""

    def deco(cls):
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"model name {name!r} registered twice")
        cls.registered_name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    for info in pkgutil.iter_modules(__path__):
        if info.name not in ("base", "layers") and not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")
    _discovered = True


def names() -> list[str]:
    _discover()
    return sorted(_REGISTRY)


def get(name: str) -> type[GenerativeModel]:
    _discover()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown model {name!r}{hint}; known models: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def hyperparameters(name: str) -> dict[str, object]:
    """The model's own keyword arguments and their defaults (the contract's arguments excluded)."""
    sig = inspect.signature(get(name).__init__)
    return {
        p.name: p.default
        for p in sig.parameters.values()
        if p.name not in _CONTRACT_ARGS and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    }


def build(name: str, image_shape, levels: int = 2, num_classes: int | None = None, **hparams) -> GenerativeModel:
    cls = get(name)
    allowed = hyperparameters(name)
    unknown = sorted(set(hparams) - set(allowed))
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, allowed, n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ValueError(
            f"unknown hyper-parameter {', '.join(hints)} for model {name!r}; "
            f"allowed: {', '.join(sorted(allowed)) or 'none'}"
        )
    return cls(image_shape=tuple(int(s) for s in image_shape), levels=int(levels), num_classes=num_classes, **hparams)
