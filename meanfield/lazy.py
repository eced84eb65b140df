"""Package attributes that load their modules on first use (PEP 562), for packages whose import
must stay light (``import meanfield``, the ``meanfield`` command line and its plugins)."""

from __future__ import annotations

import importlib


def lazy_attributes(namespace: dict, table: dict[str, str]):
    """The module-level ``__getattr__`` and ``__dir__`` of a package with lazy public names.

    Args:
        namespace: the package's ``globals()``; a name is stored there once loaded, so later
            lookups skip ``__getattr__``.
        table: {public name: module that defines it}; a module named ``<package>.<name>`` is
            the value itself (a submodule exposed as an attribute).
    Returns:
        (``__getattr__``, ``__dir__``) to assign in the package.
    """
    package = namespace["__name__"]

    def __getattr__(name: str):
        module = table.get(name)
        if module is None:  # other submodules (``from package import sub``) import as usual
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = importlib.import_module(module)
        if module != f"{package}.{name}":
            value = getattr(value, name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(table))

    return __getattr__, __dir__
