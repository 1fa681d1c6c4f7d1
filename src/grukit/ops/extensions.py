"""Build grukit's C++ kernels on first use, cache them in a fixed folder, and fall back cleanly.

Each extension is compiled with ``torch.utils.cpp_extension.load`` (needs a C++ compiler and ``ninja``) into
``$GRUKIT_CACHE/extensions/<name>-<hash>`` (default ``~/.cache/grukit``), where the hash covers the sources,
the flags and the torch version, so later runs and other processes reuse the build. A failed build returns
``None`` and warns once per extension; callers then pick another engine.
"""

from __future__ import annotations

import hashlib
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch

CSRC = Path(__file__).with_name("csrc")
_loaded: dict[str, ModuleType | None] = {}


def cache_root() -> Path:
    """The folder that holds built extensions: ``$GRUKIT_CACHE/extensions`` or ``~/.cache/grukit/extensions``."""
    base = os.environ.get("GRUKIT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "grukit")
    return Path(base) / "extensions"


def _build_dir(name: str, sources: list[Path], flags: list[str]) -> Path:
    digest = hashlib.sha256()
    for source in sources:
        digest.update(source.read_bytes())
    digest.update("\0".join(flags).encode())
    digest.update(torch.__version__.encode())
    return cache_root() / f"{name}-{digest.hexdigest()[:16]}"


def load(
    name: str,
    sources: list[str],
    cflags: list[str] | None = None,
    ldflags: list[str] | None = None,
    include_dirs: list[str] | None = None,
    missing: Callable[[], str | None] | None = None,
) -> ModuleType | None:
    """Compile (or reuse) the extension ``name`` from files in ``ops/csrc``; ``None`` (and one warning) if the
    build or the import fails, or if ``missing()`` names a dependency that is not installed. The answer is
    remembered for the rest of the process."""
    if name in _loaded:
        return _loaded[name]
    reason = missing() if missing is not None else None
    if reason is not None:
        warnings.warn(f"{reason}; falling back to a slower engine", RuntimeWarning, stacklevel=3)
        _loaded[name] = None
        return None
    paths = [CSRC / source for source in sources]
    cflags, ldflags, include_dirs = list(cflags or []), list(ldflags or []), list(include_dirs or [])
    try:
        from torch.utils import cpp_extension

        build_dir = _build_dir(name, paths, cflags + ldflags + include_dirs)
        build_dir.mkdir(parents=True, exist_ok=True)
        module = cpp_extension.load(
            name=name,
            sources=[str(p) for p in paths],
            extra_cflags=cflags,
            extra_ldflags=ldflags,
            extra_include_paths=include_dirs,
            build_directory=str(build_dir),
            verbose=False,
        )
    except Exception as error:  # any compiler, linker or loader failure means "not available here"
        warnings.warn(
            f"grukit could not build its {name!r} kernel ({type(error).__name__}: {str(error).strip()[:300]}); "
            "falling back to a slower engine",
            RuntimeWarning,
            stacklevel=3,
        )
        module = None
    _loaded[name] = module
    return module


def venv_prefix() -> Path:
    """The environment's prefix, where ``onednn-cpu-gomp`` puts ``lib/libdnnl.so`` and the devel package
    ``include/oneapi/dnnl``."""
    return Path(sys.prefix)
