"""GLSL sources of the viewer, shipped as package data.

``shader_source(name)`` works from a checkout (``pip install -e .``) and a regular install alike,
because the files are found next to this module through ``importlib.resources``.
"""

from importlib import resources


def shader_source(name: str) -> str:
    """Text of the shader file ``name`` (e.g. ``"splat.vert"``)."""
    resource = resources.files(__name__) / name
    if not resource.is_file():
        raise FileNotFoundError(f"shader {name!r} is not part of the splatview installation")
    return resource.read_text(encoding="utf-8")
