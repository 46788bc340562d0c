"""Media transformations used by the example workflows: encode, deploy, thumbnail, notify.

They stand in for real services (an encoder, a CDN, an image tool, a mailer): each derives
its output deterministically from its input, so workflows over them can be checked.
"""

from __future__ import annotations

import hashlib
from typing import Any

from app import transformation


def _stem(location: str) -> str:
    name = location.rstrip("/").rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[0] or name


@transformation(queue="encode")
def encode(fileLocation: str, format: str = "mp4") -> dict[str, Any]:  # noqa: N803
    """Encode a media file; returns where the encoded file lies."""
    return {"encodeLocation": f"s3://encoded/{_stem(fileLocation)}.{format}", "format": format}


@transformation(queue="deploy")
def deploy(fileLocation: str) -> dict[str, Any]:  # noqa: N803
    """Publish a file to the CDN; returns its public location."""
    digest = hashlib.sha256(fileLocation.encode()).hexdigest()[:12]
    return {"location": f"https://cdn.example.com/{digest}/{fileLocation.rsplit('/', 1)[-1]}"}


@transformation(queue="thumbnail")
def thumbnail(fileLocation: str, width: int = 320) -> dict[str, Any]:  # noqa: N803
    """Cut a still image from a media file."""
    return {"thumbnailLocation": f"s3://thumbs/{_stem(fileLocation)}-{width}.jpg", "width": width}


@transformation(queue="notify")
def notify(message: str, channel: str = "ops") -> dict[str, Any]:
    """Tell people something happened; returns what was sent where."""
    return {"sent": True, "channel": channel, "message": message}
