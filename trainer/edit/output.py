"""Opening a model to edit, and saving the result without ever writing over the original.

An edit is saved either as a **model folder** (``-o`` names no file: the reference's layout,
``cfg_args``, ``cameras.json`` and ``input.ply`` copied from the edited model folder and the
edited Gaussians as ``point_cloud/iteration_<N>/point_cloud.ply`` with the same N; built beside
the target and renamed into place, and never over an existing folder) or as a **file** in any of
``rasterizer.formats.FORMATS`` (written atomically; never the file being edited).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from rasterizer.camera import Camera
from rasterizer.formats import FORMATS, SUFFIXES, format_from_suffix, read_gaussians, write_gaussians
from rasterizer.gaussians import Gaussians
from rasterizer.model_folder import latest_iteration, point_cloud_path, read_cameras_json

__all__ = ["EditSource", "open_model", "plan_output", "save_edited", "default_output", "COPIED_FILES"]

COPIED_FILES = ("cfg_args", "cameras.json", "input.ply")


@dataclass
class EditSource:
    """A model opened for editing: its Gaussians and input cameras, and where they came from
    (``model_folder`` and ``iteration`` are None for a bare file)."""

    gaussians: Gaussians
    cameras: list[Camera]
    file: Path
    model_folder: Path | None = None
    iteration: int | None = None


def open_model(path: str | os.PathLike, iteration: int = -1, source: str | os.PathLike | None = None) -> EditSource:
    """A model folder (its ``--iteration``, default the largest) or a model file in any format.

    Cameras: the dataset ``source`` when given, else the folder's ``cameras.json``, else none.
    """
    path = Path(path)
    if path.is_dir():
        iteration = latest_iteration(path) if iteration == -1 else iteration
        file = point_cloud_path(path, iteration)
        if not file.is_file():
            raise FileNotFoundError(f"{file}: no such file (iteration {iteration} was not saved)")
        folder = path
    elif path.is_file():
        file, folder, iteration = path, None, None
    else:
        raise FileNotFoundError(f"{path}: no such model folder or model file")
    gaussians = read_gaussians(file)
    if source is not None:
        from trainer.scene import load_cameras  # noqa: PLC0415 - only with -s

        cameras = load_cameras(source)
    elif folder is not None and (folder / "cameras.json").is_file():
        cameras = read_cameras_json(folder)
    else:
        cameras = []
    return EditSource(gaussians, cameras, file, folder, iteration)


def _suffix_fits(path: Path, format_name: str) -> bool:
    named = format_from_suffix(path)
    return named == format_name or (format_name == "compressed-ply" and named == "ply")


def plan_output(out: str | os.PathLike, format_name: str | None, source: EditSource) -> tuple[Path, str, bool]:
    """``(path, format, is_model_folder)`` for ``-o out`` and ``--export format`` (None: from the
    name). Raises ValueError with a one-line reason when the combination cannot be written."""
    out = Path(out)
    if format_name is not None and format_name not in FORMATS:
        raise ValueError(f"unknown format {format_name!r}: expected one of {', '.join(FORMATS)}")
    named = format_from_suffix(out)
    if named is None:   # a model folder
        if format_name not in (None, "ply"):
            raise ValueError(f"{out}: a model folder holds a 3DGS PLY; for {format_name} give a file name "
                             f"ending in {SUFFIXES[format_name]}")
        if source.model_folder is None:
            raise ValueError(f"{out}: the edited model is a file, not a model folder; give a file name "
                             f"(e.g. {out}{SUFFIXES[format_name or 'ply']})")
        if out.exists():
            raise ValueError(f"{out}: already exists; choose a new folder (an edit never writes over one)")
        return out, "ply", True
    format_name = format_name or named
    if not _suffix_fits(out, format_name):
        raise ValueError(f"{out}: the name asks for {named} but --export is {format_name}")
    if out.exists() and out.resolve() == source.file.resolve():
        raise ValueError(f"{out}: that is the model being edited; choose another name")
    if out.is_dir():
        raise ValueError(f"{out}: is a folder")
    return out, format_name, False


def save_edited(gaussians: Gaussians, out: str | os.PathLike, format_name: str | None, source: EditSource) -> Path:
    """Write ``gaussians`` where :func:`plan_output` says; returns the file or folder written."""
    path, format_name, folder = plan_output(out, format_name, source)
    if not folder:
        write_gaussians(path, gaussians, format_name)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        for name in COPIED_FILES:
            if (source.model_folder / name).is_file():
                shutil.copy2(source.model_folder / name, building / name)
        write_gaussians(point_cloud_path(building, source.iteration), gaussians, "ply")
        os.chmod(building, 0o777 & ~_umask())
        os.rename(building, path)   # fails rather than replace a folder that appeared meanwhile
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def default_output(source: EditSource, format_name: str = "ply") -> Path:
    """A name that does not exist yet: ``<folder>-edited`` beside a model folder (for ``ply``),
    else ``<stem>-edited<suffix>`` beside the edited file (``-2``, ``-3``... when taken)."""
    if source.model_folder is not None and format_name == "ply":
        base, suffix = source.model_folder.parent / f"{source.model_folder.name}-edited", ""
    else:
        where = source.model_folder.parent if source.model_folder is not None else source.file.parent
        stem = source.model_folder.name if source.model_folder is not None else source.file.name
        for ending in SUFFIXES.values():
            if stem.lower().endswith(ending):
                stem = stem[: -len(ending)]
                break
        base, suffix = where / f"{stem}-edited", SUFFIXES[format_name]
    candidate, number = Path(f"{base}{suffix}"), 2
    while candidate.exists():
        candidate, number = Path(f"{base}-{number}{suffix}"), number + 1
    return candidate
