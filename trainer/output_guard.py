"""Keeping a user's model folder safe: the checks ``splat-train`` makes before it writes
anything, and where it saves when the folder fails it later.

Before training (:func:`prepare_model_folder`, after every input has been read and checked):

* a folder that already holds a trained model (``point_cloud/iteration_<N>/point_cloud.ply`` or
  ``chkpnt<N>.pth``) is refused unless the run resumes (``--start_checkpoint``) or asks for
  ``--overwrite``; with ``--overwrite`` the previous run's files are moved into
  ``<model>/previous_<date>_<time>/`` (nothing is ever deleted);
* the folder, and ``point_cloud/`` when it exists, must accept a new file, and its disk must have
  room for the first save at the current number of Gaussians (:func:`save_size_estimate`).

During and after training, a save that fails (a full disk, a read-only or vanished folder) does
not end the run: the trainer keeps what it could not write in memory, says so in one line, tries
again at its next save and at the end, and then falls back to :func:`rescue_folders`.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from rasterizer.model_folder import iteration_folders
from rasterizer.ply import gaussian_property_names

__all__ = ["OutputFolderError", "trained_model_files", "refuse_trained_model", "prepare_model_folder", "move_previous_run",
           "check_writable", "save_size_estimate", "rescue_folders", "describe_os_error",
           "is_write_failure", "RESCUE_ENV", "SAVE_MARGIN_BYTES"]

RESCUE_ENV = "SPLATVIEW_RESCUE_DIR"        # first place tried when the model folder fails a save
SAVE_MARGIN_BYTES = 16 << 20               # on top of the estimate: exposure.json, temp files
CHECKPOINT_FLOATS_PER_PARAMETER = 3        # value + Adam's two moments
STAT_FLOATS = 3                            # gradient accumulator, denominator, max radius

# What a splatview (or graphdeco) training run, splat-render and splat-metrics write into a
# model folder: the files --overwrite moves aside. Anything else in the folder is the user's.
_RUN_FILES = ("cfg_args", "cameras.json", "input.ply", "exposure.json", "results.json", "per_view.json",
              "snapshot_fw.pth", "point_cloud", "train", "test")
_CHECKPOINT = re.compile(r"^chkpnt\d+\.pth$")


class OutputFolderError(OSError):
    """The model folder cannot take this run's files (one line naming the folder and why)."""

    def __str__(self) -> str:  # no "[Errno N]" prefix: the message is written for the user
        return self.args[0] if self.args else ""


def describe_os_error(error: BaseException) -> str:
    """A short reason for a failed write: ``No space left on device``, ``Read-only file system``..."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text[:200]


def trained_model_files(model_path: Path) -> list[Path]:
    """The saved iterations and checkpoints in ``model_path`` (empty: no trained model there)."""
    if not model_path.is_dir():
        return []
    found = [folder / "point_cloud.ply" for _, folder in sorted(iteration_folders(model_path).items())]
    found += sorted(p for p in model_path.iterdir() if _CHECKPOINT.match(p.name) and p.is_file())
    return found


def move_previous_run(model_path: Path, now: float | None = None) -> Path | None:
    """Move a previous run's files (see ``_RUN_FILES`` and ``chkpnt<N>.pth``) into
    ``<model>/previous_<date>_<time>/``; returns that folder, or None when there was nothing."""
    names = [p for p in sorted(model_path.iterdir())
             if p.name in _RUN_FILES or (_CHECKPOINT.match(p.name) and p.is_file())]
    if not names:
        return None
    stamp = time.strftime("%Y%m%d_%H%M%S", time.localtime(now))
    target = model_path / f"previous_{stamp}"
    suffix = 1
    while target.exists():
        suffix += 1
        target = model_path / f"previous_{stamp}_{suffix}"
    target.mkdir()
    for path in names:
        os.replace(path, target / path.name)  # same folder, same file system: a rename
    return target


def save_size_estimate(count: int, sh_degree: int) -> int:
    """Bytes of one PLY plus one checkpoint of ``count`` Gaussians at ``sh_degree`` (what a
    save at the end, or after Ctrl-C, writes), plus :data:`SAVE_MARGIN_BYTES`."""
    floats = len(gaussian_property_names(sh_degree)) - 3          # PLY normals are not parameters
    ply = 4 * (floats + 3) * count
    checkpoint = 4 * (CHECKPOINT_FLOATS_PER_PARAMETER * floats + STAT_FLOATS) * count
    return ply + checkpoint + SAVE_MARGIN_BYTES


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def check_writable(folder: Path, needed_bytes: int) -> None:
    """Raise :class:`OutputFolderError` unless a file can be created in ``folder`` (and in its
    ``point_cloud/`` when that exists) and its disk has ``needed_bytes`` free."""
    for place in (folder, folder / "point_cloud"):
        if place == folder or place.is_dir():
            try:
                handle, probe = tempfile.mkstemp(prefix=".splatview-write-test.", dir=place)
                os.close(handle)
                os.unlink(probe)
            except OSError as error:
                raise OutputFolderError(f"{place}: cannot write there ({describe_os_error(error)}); "
                                        "pick another -m or fix its permissions") from None
    free = shutil.disk_usage(folder).free
    if free < needed_bytes:
        raise OutputFolderError(f"{folder}: only {_megabytes(free)} free on its disk, and the first save "
                                f"needs about {_megabytes(needed_bytes)}; free some space or pick another -m")


def refuse_trained_model(model_path: Path, resuming: bool, overwrite: bool) -> list[Path]:
    """Raise :class:`OutputFolderError` when ``model_path`` is not a folder, or holds a trained
    model that this run would overwrite; returns :func:`trained_model_files`. Writes nothing."""
    if model_path.exists() and not model_path.is_dir():
        raise OutputFolderError(f"{model_path}: not a folder (-m must name a model folder)")
    trained = trained_model_files(model_path)
    if trained and not resuming and not overwrite:
        shown = os.path.relpath(trained[-1], model_path)
        raise OutputFolderError(f"{model_path}: already holds a trained model ({shown}); resume it with "
                                "--start_checkpoint, pick another -m, or pass --overwrite to move its "
                                "files into a previous_<date>_<time>/ subfolder")
    return trained


def prepare_model_folder(model_path: Path, resuming: bool, overwrite: bool, needed_bytes: int,
                         log=print) -> None:
    """Everything :mod:`trainer.train` checks before writing into ``model_path`` (see the module
    docstring); creates the folder. Raises :class:`OutputFolderError`."""
    trained = refuse_trained_model(model_path, resuming, overwrite)
    try:
        model_path.mkdir(parents=True, exist_ok=True)
        if trained and overwrite:
            moved = move_previous_run(model_path)
            if moved is not None:
                log(f"--overwrite: the previous run's files are now in {moved}")
    except OSError as error:
        raise OutputFolderError(f"{model_path}: cannot create or update the model folder "
                                f"({describe_os_error(error)})") from None
    check_writable(model_path, needed_bytes)


def rescue_folders(model_path: Path, now: float | None = None) -> list[Path]:
    """Where a model goes when its own folder refuses the save, in order of preference:
    ``$SPLATVIEW_RESCUE_DIR``, ``~/splatview-rescue`` and the temporary folder, each with a
    ``<model name>_<date>_<time>`` subfolder."""
    name = f"{Path(os.path.abspath(model_path)).name or 'model'}_{time.strftime('%Y%m%d_%H%M%S', time.localtime(now))}"
    roots = []
    if os.environ.get(RESCUE_ENV):
        roots.append(Path(os.environ[RESCUE_ENV]))
    roots += [Path.home() / "splatview-rescue", Path(tempfile.gettempdir()) / "splatview-rescue"]
    return [root / name for root in roots]


def is_write_failure(error: BaseException) -> bool:
    """True for errors that mean "this file could not be written": OS errors (full disk,
    read-only, missing folder, permissions, file too large) and torch.save's stream errors."""
    if isinstance(error, OSError):
        return True
    # torch.save reports a failed write of its zip stream as a RuntimeError ("unexpected pos").
    return isinstance(error, RuntimeError) and ("unexpected pos" in str(error) or "file write failed" in str(error)
                                                or "PytorchStreamWriter" in str(error))

