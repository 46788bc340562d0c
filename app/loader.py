"""Import the modules that declare transformations: `tasks` and those in BATON_TRANSFORMATIONS."""

from __future__ import annotations

import importlib

from app.config import get_settings
from app.errors import TransformationError

DEFAULT_MODULES = ("tasks",)


def load_transformations() -> None:
    """Import every transformation module once; a missing module is a clear error."""
    extra = [m.strip() for m in get_settings().transformations.split(",") if m.strip()]
    for module in dict.fromkeys([*DEFAULT_MODULES, *extra]):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            raise TransformationError(
                f"BATON_TRANSFORMATIONS names module '{module}', which cannot be imported"
            ) from None
