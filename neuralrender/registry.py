"""The method registry: the CLI and the trainer know methods only by their registered name."""

from __future__ import annotations

import difflib
import importlib
import pkgutil

from neuralrender.errors import NeuralRenderError

_METHODS: dict[str, type] = {}
_LOADED = False


def register(name: str):
    """Class decorator: `@register("neural-textures")` on a `Method` subclass."""

    def deco(cls):
        if name in _METHODS and _METHODS[name] is not cls:
            raise RuntimeError(f"method name '{name}' registered twice ({_METHODS[name].__module__}, {cls.__module__})")
        cls.name = name
        _METHODS[name] = cls
        return cls

    return deco


def _load_all() -> None:
    """Import every module in neuralrender.methods so their decorators run (methods import only core deps)."""
    global _LOADED
    if _LOADED:
        return
    import neuralrender.methods as pkg

    for mod in pkgutil.iter_modules(pkg.__path__):
        if not mod.name.startswith("_") and mod.name != "base":
            importlib.import_module(f"neuralrender.methods.{mod.name}")
    _LOADED = True


def methods() -> dict[str, type]:
    _load_all()
    return dict(sorted(_METHODS.items()))


def get_method(name: str) -> type:
    all_methods = methods()
    if name not in all_methods:
        close = difflib.get_close_matches(name, list(all_methods), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise NeuralRenderError(f"unknown method '{name}'{hint}; registered methods: {', '.join(all_methods) or 'none'}")
    return all_methods[name]
