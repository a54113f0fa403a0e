"""Public names that import on first use (PEP 562), as diffusers' packages do: importing a package costs nothing until
one of its names is used."""

import importlib
import sys


def lazy_exports(package: str, exports: dict[str, str], submodules: bool = False):
    """The module-level `__getattr__` and `__dir__` of `package`, whose public names are `exports` (name -> the
    relative module that defines it). Each name is imported on first use and then kept in the package. With
    `submodules`, any other name is tried as a submodule, as `import package.name` would give it."""

    def __getattr__(name: str):
        if name in exports:
            value = getattr(importlib.import_module(exports[name], package), name)
            setattr(sys.modules[package], name, value)  # later look-ups skip this function
            return value
        if submodules:
            try:
                return importlib.import_module(f".{name}", package)
            except ModuleNotFoundError as error:
                if error.name != f"{package}.{name}":  # the submodule exists, and something it imports is missing
                    raise
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted([*vars(sys.modules[package]), *exports])

    return __getattr__, __dir__
