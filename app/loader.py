"""Import the modules that declare transformations: `tasks` and those in BATON_TRANSFORMATIONS.

A module that cannot be imported is remembered rather than raised at `import app`, so
that the `baton` command can report it in one line; `ensure_loaded()` raises it where
transformations are needed (submitting, validating, starting a worker).
"""

from __future__ import annotations

import importlib
import os
import sys

from app.config import get_settings
from app.errors import TransformationError

DEFAULT_MODULES = ("tasks",)

_problem: TransformationError | None = None


def load_transformations() -> None:
    """Import every transformation module once; remember the first that fails."""
    global _problem
    extra = [m.strip() for m in get_settings().transformations.split(",") if m.strip()]
    if extra and os.getcwd() not in sys.path and "" not in sys.path:
        # as `celery -A` and `python -m` do: modules beside the caller are importable
        sys.path.insert(0, os.getcwd())
    for module in dict.fromkeys([*DEFAULT_MODULES, *extra]):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name is None or not (module + ".").startswith(exc.name + "."):
                raise  # the module exists but imports something missing: a real bug
            _problem = TransformationError(
                f"BATON_TRANSFORMATIONS: module '{module}' cannot be imported "
                f"(no module named '{exc.name}')"
            )
            return


def ensure_loaded() -> None:
    """Raise the import problem of a transformation module, if there was one."""
    if _problem is not None:
        raise _problem
