"""``splat-train`` arguments: every flag of graphdeco-inria's ``train.py`` plus splatview's own.

The reference builds its parser from three ``ParamGroup`` classes (``arguments/__init__.py``):
a field ``_x`` becomes ``--x`` with the short form ``-<first letter>``, a field ``x`` becomes
``--x``; booleans are ``store_true``. The dataclasses below list the same fields with the same
defaults (graphdeco HEAD ``54c035f``), in the same order, so ``cfg_args`` comes out identical.

Groups:

* :class:`ModelParams` ("Loading Parameters"): what ``cfg_args`` records.
* :class:`PipelineParams`: rasterizer switches.
* :class:`OptimizationParams`: learning rates, loss weight, densification schedule.
* :class:`ScriptParams`: the flags ``train.py`` adds itself, then splatview's additions
  (``--backend``, ``--max_gaussians``, ``--cache_budget``, ``--seed``, ``--random_init_points``,
  ``--fix_densification_quirks``, ``--overwrite``, ``--batch_size``, ``--fast``, ``--gpus``,
  ``--no_cuda_graphs``).

Every numeric flag is range-checked while parsing (``trainer.arg_types``): a bad value is
argparse's one-line error with exit status 2.
"""

from __future__ import annotations

import argparse
import os
import re
import uuid
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, Sequence

from .arg_types import float_range, int_range, iteration_number, resolution_value

__all__ = ["ModelParams", "PipelineParams", "OptimizationParams", "ScriptParams", "TrainConfig",
           "build_parser", "parse_args", "default_model_path", "parse_bytes", "ConfigError",
           "add_model_params", "model_param_defaults"]


class ConfigError(ValueError):
    """A flag combination splat-train cannot run (the message is one line, shown to the user)."""


_NON_NEGATIVE = float_range(0.0)
_FRACTION = float_range(0.0, 1.0)
_COUNT = int_range(0)
_POSITIVE_COUNT = int_range(1)


def _flag(default: Any = MISSING, *, short: str | None = None, help: str = "",
          nargs: str | None = None, choices: Sequence[str] | None = None, type=None,
          default_factory=MISSING, metavar: str | None = None):
    """A dataclass field carrying its command-line spelling in ``metadata``."""
    metadata = {"short": short, "help": help, "nargs": nargs, "choices": choices, "type": type,
                "metavar": metavar}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class ModelParams:
    """The reference's ``ModelParams``; field order is ``cfg_args``'s key order."""

    sh_degree: int = _flag(3, type=int_range(0, 3), help="highest spherical-harmonics degree (0-3)")
    source_path: str = _flag("", short="-s", help="scene folder (COLMAP or NeRF-synthetic)")
    model_path: str = _flag("", short="-m", help="output folder (default ./output/<uuid4[:10]>)")
    images: str = _flag("images", short="-i", help="COLMAP image subfolder")
    depths: str = _flag("", short="-d", help="depth-map subfolder (depth regularisation; not supported yet)")
    resolution: int = _flag(-1, short="-r", type=resolution_value, help="1/2/4/8 divisor, -1 = cap width at 1600 px, "
                                                  "other = target width in pixels")
    white_background: bool = _flag(False, short="-w", help="white background instead of black")
    train_test_exp: bool = _flag(False, help="exposure compensation (not supported yet)")
    data_device: str = _flag("cuda", help="where ground-truth images live (cuda falls back to "
                                          "cpu when CUDA is absent)")
    eval: bool = _flag(False, help="hold out test views (every 8th; NeRF-synthetic: the test json)")


@dataclass
class PipelineParams:
    """The reference's ``PipelineParams``."""

    convert_SHs_python: bool = _flag(False, help="accepted for compatibility (no effect here)")
    compute_cov3D_python: bool = _flag(False, help="accepted for compatibility (no effect here)")
    debug: bool = _flag(False, help="on a rendering error or a non-finite loss, save a snapshot "
                                    "<model>/snapshot_fw.pth before stopping")
    antialiasing: bool = _flag(False, help="Mip-Splatting 2D filter opacity compensation")


@dataclass
class OptimizationParams:
    """The reference's ``OptimizationParams`` (HEAD defaults; ``opacity_lr`` is 0.025 since 2024)."""

    iterations: int = _flag(30_000, type=_COUNT, help="training iterations")
    position_lr_init: float = _flag(0.00016, type=_NON_NEGATIVE, help="initial position learning rate (x scene extent)")
    position_lr_final: float = _flag(0.0000016, type=_NON_NEGATIVE, help="final position learning rate (x scene extent)")
    position_lr_delay_mult: float = _flag(0.01, type=_NON_NEGATIVE, help="accepted; unused by the reference too "
                                                     "(its schedule never gets delay steps)")
    position_lr_max_steps: int = _flag(30_000, type=_POSITIVE_COUNT, help="steps of the exponential position schedule")
    feature_lr: float = _flag(0.0025, type=_NON_NEGATIVE, help="SH DC learning rate (higher bands: /20)")
    opacity_lr: float = _flag(0.025, type=_NON_NEGATIVE, help="opacity learning rate")
    scaling_lr: float = _flag(0.005, type=_NON_NEGATIVE, help="scale learning rate")
    rotation_lr: float = _flag(0.001, type=_NON_NEGATIVE, help="rotation learning rate")
    exposure_lr_init: float = _flag(0.01, type=_NON_NEGATIVE, help="exposure compensation (with --train_test_exp)")
    exposure_lr_final: float = _flag(0.001, type=_NON_NEGATIVE, help="exposure compensation (with --train_test_exp)")
    exposure_lr_delay_steps: int = _flag(0, type=_COUNT, help="exposure compensation (with --train_test_exp)")
    exposure_lr_delay_mult: float = _flag(0.0, type=_NON_NEGATIVE, help="exposure compensation (with --train_test_exp)")
    percent_dense: float = _flag(0.01, type=_FRACTION, help="clone/split size boundary, fraction of the extent")
    lambda_dssim: float = _flag(0.2, type=_FRACTION, help="weight of (1 - SSIM) in the loss")
    densification_interval: int = _flag(100, type=_POSITIVE_COUNT, help="iterations between densifications")
    opacity_reset_interval: int = _flag(3000, type=_POSITIVE_COUNT, help="iterations between opacity resets")
    densify_from_iter: int = _flag(500, type=_COUNT, help="first densification after this iteration")
    densify_until_iter: int = _flag(15_000, type=_COUNT, help="no densification from this iteration on")
    densify_grad_threshold: float = _flag(0.0002, type=_NON_NEGATIVE, help="mean NDC gradient norm that triggers "
                                                       "clone/split")
    depth_l1_weight_init: float = _flag(1.0, type=_NON_NEGATIVE, help="depth regularisation (with -d)")
    depth_l1_weight_final: float = _flag(0.01, type=_NON_NEGATIVE, help="depth regularisation (with -d)")
    random_background: bool = _flag(False, help="random background colour every iteration")
    optimizer_type: str = _flag("default", choices=("default", "sparse_adam"),
                                help="sparse_adam: update only the Gaussians visible in the step")


def _byte_count(text: str) -> int:
    try:
        return parse_bytes(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None




@dataclass
class ScriptParams:
    """Flags added by ``train.py`` itself, then splatview's additions."""

    ip: str = _flag("127.0.0.1", help="network viewer address (a non-loopback one is reachable without authentication)")
    port: int = _flag(6009, type=int_range(0, 65535), help="network viewer port")
    debug_from: int = _flag(-1, type=int_range(-1), help="turn --debug on from this iteration")
    detect_anomaly: bool = _flag(False, help="torch.autograd anomaly detection")
    test_iterations: list[int] = _flag(nargs="+", type=iteration_number, default_factory=lambda: [7_000, 30_000],
                                       help="iterations at which test/train L1 and PSNR are printed")
    save_iterations: list[int] = _flag(nargs="+", type=iteration_number, default_factory=lambda: [7_000, 30_000],
                                       help="iterations at which point_cloud.ply is saved "
                                            "(--iterations is always added)")
    quiet: bool = _flag(False, help="no progress bar or log lines (errors still print)")
    disable_viewer: bool = _flag(False, help="do not listen for the network viewer")
    checkpoint_iterations: list[int] = _flag(nargs="+", type=iteration_number, default_factory=list,
                                             help="iterations at which chkpnt<N>.pth is saved")
    start_checkpoint: str | None = _flag(None, type=str, help="resume from a chkpnt<N>.pth")
    # ----- splatview additions -----
    backend: str = _flag("auto", choices=("reference", "cuda", "auto"),
                         help="rasterizer backend (auto: cuda when available)")
    max_gaussians: int | None = _flag(None, type=_POSITIVE_COUNT, metavar="N",
                                      help="cap on the number of Gaussians (default: none)")
    cache_budget: int | None = _flag(None, type=_byte_count, metavar="BYTES",
                                     help="image cache memory budget, e.g. 4G (default: half "
                                          "the available memory)")
    seed: int = _flag(0, type=int_range(0, 2 ** 32 - 1), help="seed of every random generator")
    random_init_points: int = _flag(100_000, type=_POSITIVE_COUNT, help="random initial points for scenes without a "
                                                  "point cloud (the reference uses 100000)")
    fix_densification_quirks: bool = _flag(False, help="make the size prune (max_radii2D > 20) "
                                                       "effective; off = the reference's behaviour")
    overwrite: bool = _flag(False, help="train anew in a model folder that holds a trained model: "
                                        "its previous files are first moved into "
                                        "<model>/previous_<date>_<time>/ (nothing is deleted)")
    batch_size: int = _flag(1, type=int_range(1), metavar="B",
                            help="training views rendered per optimiser step (1 = the reference); "
                                 "--iterations and every schedule still count views, learning rates "
                                 "are multiplied by sqrt(B) and Adam's betas raised to the power B")
    fast: bool = _flag(False, help="not the reference: render smaller views while the model is coarse "
                                   "(a resolution schedule from the photos' spectra, full size from "
                                   "--densify_until_iter or half of --iterations on). Pays with the "
                                   "reference (CPU) backend; with CUDA it measured slower (README)")
    gpus: int | None = _flag(None, type=int_range(1), metavar="N",
                             help="train one model on N GPUs of this machine (starts N processes "
                                  "through torch.distributed.run; see the README for torchrun and "
                                  "several machines)")
    no_cuda_graphs: bool = _flag(False, help="launch each CUDA kernel of a training step from Python "
                                             "instead of replaying the step as a CUDA graph (the same "
                                             "results; for diagnosis)")


@dataclass
class TrainConfig:
    """All of ``splat-train``'s settings, by group."""

    model: ModelParams = field(default_factory=ModelParams)
    pipeline: PipelineParams = field(default_factory=PipelineParams)
    optimization: OptimizationParams = field(default_factory=OptimizationParams)
    script: ScriptParams = field(default_factory=ScriptParams)

    def cfg_args_values(self) -> dict[str, Any]:
        """ModelParams in the reference's order, for ``cfg_args``."""
        return asdict(self.model)


_GROUPS = (("model", ModelParams, "Loading Parameters"),
           ("pipeline", PipelineParams, "Pipeline Parameters"),
           ("optimization", OptimizationParams, "Optimization Parameters"),
           ("script", ScriptParams, "Script and splatview Parameters"))


def _add_group(parser: argparse.ArgumentParser, cls: type, title: str, sentinel: bool = False) -> None:
    """One argument group from a parameter dataclass. With ``sentinel`` every default is None,
    so that a caller can tell flags given on the command line from flags left out (the
    reference's ``ParamGroup(parser, sentinel=True)``, used by render.py with cfg_args)."""
    group = parser.add_argument_group(title)
    for f in fields(cls):
        meta = f.metadata
        names = [f"--{f.name}"] + ([meta["short"]] if meta["short"] else [])
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        shown = None if sentinel else default
        if isinstance(default, bool):
            group.add_argument(*names, action="store_true", default=shown, help=meta["help"])
            continue
        kind = meta["type"] or type(default)
        group.add_argument(*names, type=kind, default=shown, nargs=meta["nargs"],
                           choices=meta["choices"], metavar=meta["metavar"], help=meta["help"])


def add_model_params(parser: argparse.ArgumentParser, sentinel: bool = False) -> None:
    """The reference's "Loading Parameters" flags (``-s -m -i -r -w`` ...); see ``_add_group``."""
    _add_group(parser, ModelParams, "Loading Parameters", sentinel)


def model_param_defaults() -> dict[str, Any]:
    """``ModelParams`` field -> the reference's default."""
    return {f.name: f.default for f in fields(ModelParams)}


def build_parser(prog: str = "splat-train") -> argparse.ArgumentParser:
    """The argument parser with every group."""
    parser = argparse.ArgumentParser(prog=prog, description="Train 3D Gaussian Splatting "
                                     "(graphdeco-inria train.py compatible).")
    for _, cls, title in _GROUPS:
        _add_group(parser, cls, title)
    return parser


def default_model_path() -> str:
    """``./output/<first 10 chars of a uuid4>`` (or ``$OAR_JOB_ID``), as the reference."""
    unique = os.getenv("OAR_JOB_ID") or str(uuid.uuid4())
    return os.path.join("./output/", unique[0:10])


def parse_args(argv: Sequence[str] | None = None) -> TrainConfig:
    """Parse ``argv`` (default ``sys.argv[1:]``) into a :class:`TrainConfig`.

    As the reference: ``source_path`` is made absolute, an empty ``model_path`` gets
    :func:`default_model_path`, and ``--iterations`` is appended to ``--save_iterations``.
    With ``--eval`` it is also appended to ``--test_iterations`` (splatview: the summary at the
    end of a run reports the final model's test metrics).
    """
    parser = build_parser()
    namespace = vars(parser.parse_args(argv))
    check_combinations(parser, namespace)
    groups = {}
    for key, cls, _ in _GROUPS:
        groups[key] = cls(**{f.name: namespace[f.name] for f in fields(cls)})
    config = TrainConfig(**groups)
    if config.model.source_path:
        config.model.source_path = os.path.abspath(config.model.source_path)
    if not config.model.model_path:
        config.model.model_path = default_model_path()
    config.script.save_iterations = list(config.script.save_iterations) + [config.optimization.iterations]
    if config.model.eval and config.optimization.iterations not in config.script.test_iterations:
        # The end-of-run summary reports the test metrics of the final model.
        config.script.test_iterations = list(config.script.test_iterations) + [config.optimization.iterations]
    return config


def check_combinations(parser: argparse.ArgumentParser, values: dict[str, Any]) -> None:
    """Range rules that involve two flags (single flags are checked by their argparse type)."""
    initial, final = values["position_lr_init"], values["position_lr_final"]
    if (initial == 0.0) != (final == 0.0):
        parser.error(f"--position_lr_init {initial} and --position_lr_final {final}: the exponential "
                     "schedule needs both positive (or both 0 to freeze the positions)")
    if values["start_checkpoint"] is not None and values["overwrite"]:
        parser.error("--overwrite starts a new model; --start_checkpoint continues one: use one of them")


_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_bytes(text: str) -> int:
    """``"4G"``, ``"512M"``, ``"1.5GiB"``, ``"1000000"`` -> bytes (binary units)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b)?\s*", str(text), re.IGNORECASE)
    if not match:
        raise ValueError(f"not a byte count: {text!r} (use e.g. 4G, 512M or a number of bytes)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])
