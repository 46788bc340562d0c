"""Baton's bundled transformations; each module declares steps with `@transformation`."""

from tasks import media as media
