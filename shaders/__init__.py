"""GLSL sources of the viewer, shipped as package data.

``shader_source(name)`` works from a checkout (``pip install -e .``) and a regular install alike,
because the files are found next to this module through ``importlib.resources``.
"""

from importlib import resources


def shader_source(name: str) -> str:
    """Text of the shader file ``name`` (e.g. ``"splat.vert"``), with each line
    ``#include "other.glsl"`` replaced by that file's text (GLSL has no include of its own)."""
    resource = resources.files(__name__) / name
    if not resource.is_file():
        raise FileNotFoundError(f"shader {name!r} is not part of the splatview installation")
    lines = []
    for line in resource.read_text(encoding="utf-8").splitlines(keepends=True):
        if line.startswith("#include "):
            lines.append(shader_source(line.split('"')[1]))
        else:
            lines.append(line)
    return "".join(lines)
