"""Persistent XLA compilation cache: a second process reuses the programs the first compiled.

On by default in a per-user cache directory,
``<user cache dir>/meanfield/jax-<jax version>-<backend>`` (``platformdirs.user_cache_dir``, e.g.
``~/.cache/meanfield/...`` on Linux). It is switched on lazily, when the first run starts, so
``import meanfield`` stays light. Turn it off or move it with

* the environment variable ``MEANFIELD_COMPILATION_CACHE``: ``off`` (also ``0``, ``false``,
  ``no``, ``none``) disables it, any other value is the base directory to use;
* ``meanfield.set_compilation_cache(path_or_False)`` in a program (takes precedence over the
  environment variable; ``None`` returns to the default).

A directory set by the user through jax itself (``jax_compilation_cache_dir`` or
``JAX_COMPILATION_CACHE_DIR``) is left alone. The cache is jax's own (``jax.config`` options
``jax_compilation_cache_dir``, ``jax_persistent_cache_min_compile_time_secs``,
``jax_compilation_cache_max_size``): its entries are keyed by the program, the jax/XLA version,
the backend and the compile options, so an entry from another version is never read; reads and
writes take a file lock (``filelock``), so concurrent processes share one directory; an entry
that cannot be read (truncated, corrupt) is reported as a warning by jax and the program is
compiled again - never an error.
"""

from __future__ import annotations

import os

ENV_VAR = "MEANFIELD_COMPILATION_CACHE"
OFF_VALUES = ("off", "0", "false", "no", "none")
# programs compiling faster than this are not written to the cache (reading them back would save
# little); a one-operation program compiles in ~36 ms and is read back in ~8 ms
MIN_COMPILE_SECONDS = 0.02
MAX_CACHE_BYTES = 2 * 1024**3  # least recently used entries are evicted beyond this

_UNSET = object()
_override: object = _UNSET  # set_compilation_cache() value: a path, False, or _UNSET
_active: str | None = None  # directory handed to jax in this process


def set_compilation_cache(path: str | os.PathLike | bool | None) -> None:
    """Move or disable the persistent compilation cache for this process.

    Args:
        path: base directory of the cache (a subdirectory per jax version and backend is used);
            ``False`` disables the cache; ``None`` or ``True`` returns to the default (the
            ``MEANFIELD_COMPILATION_CACHE`` variable, else the per-user cache directory).
    Raises:
        ValueError: ``path`` is not a path, a bool or None.
    """
    global _override
    if path is None or path is True:
        value = _UNSET
    elif path is False:
        value = False
    elif isinstance(path, (str, os.PathLike)):
        value = os.fspath(path)
    else:
        raise ValueError(f"set_compilation_cache(path) takes a directory, False or None; "
                         f"got {path!r}")
    _override = value
    if _active is not None:  # already handed to jax: switch now
        _disable()
        enable_compilation_cache()


def compilation_cache_base() -> str | None:
    """Base directory the cache would use in this process (None: disabled)."""
    if _override is False:
        return None
    if _override is not _UNSET:
        return str(_override)
    setting = os.environ.get(ENV_VAR, "").strip()
    if setting.lower() in OFF_VALUES:
        return None
    if setting:
        return os.path.expanduser(setting)
    import platformdirs

    return platformdirs.user_cache_dir("meanfield", appauthor=False)


def enable_compilation_cache() -> str | None:
    """Hand the cache directory to jax (idempotent; called when a run starts).

    Returns:
        The directory in use, or None when the cache is disabled or jax's cache directory was
        set by the user.
    """
    global _active
    import jax

    user_dir = jax.config.jax_compilation_cache_dir
    if user_dir is not None and user_dir != _active:
        return None  # the user's own jax setting wins
    base = compilation_cache_base()
    if base is None:
        if _active is not None:
            _disable()
        return None
    path = os.path.join(base, f"jax-{jax.__version__}-{jax.default_backend()}")
    if path == _active:
        return path
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:  # read-only home, bad path: run without the cache
        import warnings

        warnings.warn(f"meanfield: compilation cache disabled, cannot create {path} ({exc}); "
                      f"set {ENV_VAR} to a writable directory or to 'off'", stacklevel=2)
        return None
    if _active is not None:
        _disable()
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    jax.config.update("jax_compilation_cache_max_size", MAX_CACHE_BYTES)
    jax.config.update("jax_compilation_cache_dir", path)
    _active = path
    return path


def _disable() -> None:
    global _active
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    jax.config.update("jax_compilation_cache_dir", None)
    compilation_cache.reset_cache()
    _active = None
