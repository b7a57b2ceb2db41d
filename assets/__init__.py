"""Non-code files of splatview (icons, colour maps), shipped as package data.

``asset_bytes(name)`` returns the contents from a checkout and a regular install alike.
"""

from importlib import resources


def asset_bytes(name: str) -> bytes:
    """Contents of the asset file ``name``."""
    resource = resources.files(__name__) / name
    if not resource.is_file():
        raise FileNotFoundError(f"asset {name!r} is not part of the splatview installation")
    return resource.read_bytes()
