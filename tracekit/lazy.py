"""A package's public names imported on first use (PEP 562), so importing the package stays cheap.

    __getattr__, __dir__ = lazy_names(__name__, {"write_trace": ("tracekit.trace.write", "write_trace")})

A name whose module is missing (a part not installed) is an AttributeError that says so.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_names"]


def lazy_names(package: str, targets: Mapping[str, tuple[str, str]]
               ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The `__getattr__` and `__dir__` of `package`: name -> (module, attribute), each resolved
    on first use and then kept in the package's namespace."""
    def __getattr__(name: str) -> Any:
        try:
            module_name, attribute = targets[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name is not None and module_name.startswith(error.name):
                raise AttributeError(f"{package}.{name} is not available: {module_name} is "
                                     "missing") from None
            raise
        value = getattr(module, attribute)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(targets))

    return __getattr__, __dir__
