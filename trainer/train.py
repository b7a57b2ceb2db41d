"""The training loop of graphdeco-inria's ``train.py``, with its outputs, plus safe stopping.

One iteration ``it`` (1-based), in the reference's order (spec §1.5, §4):

1. hooks (the network viewer's seam: it may render, pause or stop here);
2. position learning rate for ``it``; SH degree + 1 when ``it % 1000 == 0``;
3. one training view, popped at random from a shuffled stack (refilled when empty);
4. render on the background (``rand(3)`` with ``--random_background``), clamp to [0, 1],
   loss ``(1 - λ) L1 + λ (1 - SSIM)``, backward;
5. progress bar; test/train evaluation at ``--test_iterations``; PLY at ``--save_iterations``
   (so ``iteration_N`` holds the Gaussians as they were at the start of iteration N);
6. while ``it < densify_until_iter``: statistics; densify and prune at
   ``it > densify_from_iter and it % densification_interval == 0``; opacity reset at
   ``it % opacity_reset_interval == 0`` (and at ``densify_from_iter`` with ``-w``);
7. optimiser step while ``it < iterations`` (the last iteration takes none, as the reference);
8. ``chkpnt<it>.pth`` at ``--checkpoint_iterations`` (the state after iteration ``it``).

With ``--batch_size B`` an iteration is a step of B views, with the same events at the same
view counts (``trainer/batching.py`` states the rules); B = 1 is the reference.

Stopping: Ctrl-C or SIGTERM (first one: at the next iteration boundary; second: at once) and
running out of memory save ``point_cloud/iteration_<k>/point_cloud.ply`` for the iteration
``k`` under way and ``chkpnt<k-1>.pth`` (the state after the last completed iteration, from
which ``--start_checkpoint`` continues exactly as an uninterrupted run would).

Saving safely (``trainer.output_guard``): nothing is written before every input is read and
checked; the model folder must not hold a trained model (unless resuming or ``--overwrite``),
must take a file and have room for the first save. A save that fails during the run is kept in
memory (the latest PLY and the latest checkpoint), retried at the next save and at the end, and
written to a rescue folder if the model folder still refuses it.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch

from rasterizer.camera import Camera, canvas_size
from rasterizer.files import atomic_write, atomic_write_text
from rasterizer.gaussians import Gaussians
from rasterizer.model_folder import point_cloud_path, write_cameras_json, write_cfg_args
from rasterizer.ply import write_ply, write_point_cloud
from rasterizer.render import available_backends, render, resolve_backend
from trainer.metrics import l1_loss, psnr, ssim
from trainer.scene import Scene, View, load_scene, random_point_cloud, view_image_float

from .batching import ScreenStatistics, Step, batch_steps, in_view_order, same_size_groups, screen_statistics
from .config import ConfigError, TrainConfig
from .losses import fused_loss_available, photometric_loss
from .model import MIN_OPACITY, GaussianModel
from .output_guard import (describe_os_error, is_write_failure, prepare_model_folder, refuse_trained_model,
                           rescue_folders, save_size_estimate)
from .progress import RunningStats
from .resolution_schedule import SAMPLED_PHOTOS, ResolutionSchedule, SmallViews
from .run_state import (CameraSampler, checkpoint_payload, cpu_copy, load_checkpoint, restore_rng, seed_everything,
                        write_checkpoint)
from .schedule import SH_DEGREE_INTERVAL

__all__ = ["train", "Trainer", "TrainResult", "TrainingHook", "at_report_points", "check_supported",
           "evaluate_views", "is_out_of_memory"]

POSTFIX_EVERY = 10          # progress-bar text refresh, iterations (the reference's cadence)
PREFETCH_VIEWS = 8
SIZE_THRESHOLD = 20         # screen radius (px) used after the first opacity reset
EVAL_TRAIN_INDICES = range(5, 30, 5)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)   # both stop at the next iteration and save

#: Called at the start of every iteration with the trainer and the iteration number. The
#: network viewer plugs in here (it may render ``trainer.model``, block to pause, or raise
#: KeyboardInterrupt to stop with a save). A hook object may also have an ``on_finish(trainer)``
#: method: it is called once after the last iteration and its saves when training completed
#: (not after a stop), where the network viewer keeps serving a kept-alive model; Ctrl-C there
#: only ends it (``trainer.stop_requested`` turns true).
TrainingHook = Callable[["Trainer", int], None]


def at_report_points(views: Iterable[int], action: Callable[["Trainer", int], None]) -> TrainingHook:
    """A hook that calls ``action(trainer, n)`` once for each view number ``n`` in ``views``, at
    the start of the step that holds view ``n`` (iteration ``n`` with one view per step).

    The model is then the one that the reference's test report (and ``--test_iterations n``,
    and the PLY of ``--save_iterations n``) sees: every earlier step's update and densification
    done, none of that step's. Looked at after the step, the model holds the Gaussians that the
    step's densification cloned and split before any update, and its test PSNR reads lower: on
    shapes (NeRF-synthetic, 400x400) 1.6 dB lower at 3500 views (``bench/RESULTS.md``). Views
    before the first step (a resumed run) are skipped. One difference: hooks run before the
    step raises the SH degree, so at n = 1000, 2000, 3000 (``SH_DEGREE_INTERVAL``) the action
    sees one band fewer than the reference's report, which renders after the raise (the
    trainer's own report does too)."""
    pending = sorted(set(views))

    def hook(trainer: "Trainer", first: int) -> None:
        last = first + trainer.config.script.batch_size - 1
        while pending and pending[0] <= last:
            view = pending.pop(0)
            if view >= first:
                action(trainer, view)

    return hook


# ----- checks, devices ------------------------------------------------------------------------
def check_supported(config: TrainConfig) -> None:
    """Raise :class:`ConfigError` for flags whose feature splatview does not have yet."""
    if config.model.depths:
        raise ConfigError("depth regularisation (-d/--depths) is not supported yet; "
                          "train without it")
    if config.model.train_test_exp:
        raise ConfigError("exposure compensation (--train_test_exp) is not supported yet; "
                          "train without it")
    if not config.model.source_path:
        raise ConfigError("no scene given: use -s/--source_path SOURCE")
    if config.script.max_gaussians is not None and config.script.max_gaussians <= 0:
        raise ConfigError("--max_gaussians must be positive")
    if config.script.random_init_points <= 0:
        raise ConfigError("--random_init_points must be positive")
    if config.script.backend == "cuda" and "cuda" not in available_backends():
        raise ConfigError("--backend cuda: the CUDA backend is not available here (no NVIDIA GPU, "
                          "or splatview[cuda] not installed); use --backend reference")


def resolve_devices(config: TrainConfig, log: Callable[[str], None]) -> tuple[torch.device, str]:
    """(training device, data device): CUDA when available, otherwise the CPU with a notice."""
    if torch.cuda.is_available():
        return torch.device("cuda"), config.model.data_device
    data_device = config.model.data_device
    if data_device.startswith("cuda"):
        data_device = "cpu"
    log("CUDA is not available: training on the CPU with the reference rasterizer "
        f"(data device {config.model.data_device} -> {data_device})")
    return torch.device("cpu"), data_device


def is_out_of_memory(error: BaseException) -> bool:
    """True for CUDA/CPU allocation failures."""
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


# ----- evaluation ---------------------------------------------------------------------------
@torch.no_grad()
def evaluate_views(model: GaussianModel, scene: Scene, views: Sequence[View], background: torch.Tensor,
                   backend: str = "auto", antialiasing: bool = False,
                   with_ssim: bool = False) -> dict[str, float]:
    """Mean L1 and PSNR (and SSIM) of clamped renders against the ground truth over ``views``,
    as the reference's ``training_report`` (float64 sums of per-view values)."""
    sums = {"l1": 0.0, "psnr": 0.0, **({"ssim": 0.0} if with_ssim else {})}
    gaussians = model.gaussians()
    for view in views:
        image = render(gaussians, view.camera, background, sh_degree=model.active_sh_degree,
                       antialiasing=antialiasing, backend=backend).image.clamp(0.0, 1.0)
        gt = view_image_float(scene.images.get(view.index).to(image.device), background)
        sums["l1"] += float(l1_loss(image, gt).double())
        sums["psnr"] += float(psnr(image, gt).double())
        if with_ssim:
            sums["ssim"] += float(ssim(image, gt).double())
    return {key: value / max(len(views), 1) for key, value in sums.items()}


# ----- results ---------------------------------------------------------------------------------
@dataclass
class TrainResult:
    """What a training run did.

    ``status`` is ``"completed"``, ``"interrupted"`` or ``"out_of_memory"``; ``iteration`` the
    last completed iteration; ``metrics`` maps each evaluated iteration to
    ``{"test"|"train": {"l1": .., "psnr": ..}}``; ``steps_per_second`` counts this run only.
    """

    status: str
    model_path: Path
    iteration: int
    num_gaussians: int
    steps: int
    elapsed_s: float
    metrics: dict[int, dict[str, dict[str, float]]] = field(default_factory=dict)
    saved: list[Path] = field(default_factory=list)
    checkpoint: Path | None = None
    message: str = ""
    stop_signal: int | None = None      # signal.SIGINT or SIGTERM for an "interrupted" run
    rescued_to: Path | None = None      # saves the model folder refused were written here
    lost_saves: list[str] = field(default_factory=list)   # saves that could not be written anywhere

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.elapsed_s if self.elapsed_s > 0 else 0.0


class _Stop(Exception):
    """Raised inside the loop when a Ctrl-C was requested at the previous boundary."""


@dataclass
class _Unsaved:
    """A save the model folder refused, kept in memory: ``write(payload, root)`` writes it to
    ``root / relative`` (``root``: the model folder, or a rescue folder)."""

    relative: Path
    payload: Any
    write: Callable[[Any, Path], Any]


# ----- the trainer --------------------------------------------------------------------------------
class Trainer:
    """Set-up and loop of one training run; see the module docstring for the order of events.

    Attributes worth reading from hooks: ``model`` (:class:`GaussianModel`), ``scene``,
    ``background`` (the training background, [3] tensor), ``config``, ``device``, ``backend``.
    """

    def __init__(self, config: TrainConfig, hooks: Sequence[TrainingHook] = (),
                 log: Callable[[str], None] | None = None):
        self.config = config
        self.hooks = list(hooks)
        self.quiet = config.script.quiet
        self._print = log or print
        self._bar = None
        self.model_path = Path(config.model.model_path)
        self.completed = 0          # last fully completed iteration
        self.first_iteration = 1
        self.mutating = False       # inside densification / optimiser step
        self._stop_requested = False
        self._cap_noted = False
        # The progress bar's running loss and PSNR, recorded without waiting for the GPU.
        self._stats = RunningStats(torch.device("cpu"), POSTFIX_EVERY)
        # Fast-path switches, set by setup() for the device (bench/profile_train.py turns them
        # off to measure the plain PyTorch path): the fused CUDA loss and densification
        # statistics, and a PairBudget that sizes the rasterizer's sort without a host wait.
        self.fused_kernels = False
        self.pair_budget = None
        # With the fused kernels, the higher SH coefficients take their Adam step in the
        # rasterizer's backward where it can (see _sh_rest_step): the same update, and their
        # gradient (the largest, 180 bytes a Gaussian) never stored at the step's memory peak.
        self.fuse_sh_rest_step = True
        # With the fused kernels and a pair budget, a one-view step is replayed from a CUDA graph
        # (trainer.graphed_step: the same launches, the fused SH step included, ~1 ms less host
        # time a step). Off with --no_cuda_graphs.
        self.cuda_graphs = False
        self._graph_step = None
        self._fused_param: torch.Tensor | None = None   # the parameter whose step this try took
        self._events: dict[str, set[int]] = {"test": set(), "save": set(), "checkpoint": set()}  # set by run()
        #: ``phase(name)`` wraps each part of a step (data, render, loss, backward, wait,
        #: densify, optimizer); a profiler may replace it with ``torch.profiler.record_function``.
        self.phase: Callable[[str], contextlib.AbstractContextManager] = _no_phase
        self.metrics: dict[int, dict[str, dict[str, float]]] = {}
        self.saved: list[Path] = []
        self.lost_saves: list[str] = []           # saves superseded before they could be written
        self._unsaved: dict[str, _Unsaved] = {}   # "ply"/"checkpoint" -> the latest failed save
        self.stop_signal: int | None = None       # the signal that asked for the stop, if any
        self.scene: Scene | None = None
        self.model: GaussianModel | None = None

    # ----- logging ----------------------------------------------------------------------------
    def log(self, message: str) -> None:
        """A progress line (silenced by --quiet), written around the progress bar."""
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.write(message)
        else:
            self._print(message)

    @staticmethod
    def error(message: str) -> None:
        """Always printed, on stderr."""
        print(message, file=sys.stderr, flush=True)

    # ----- set-up -------------------------------------------------------------------------------
    def _devices(self) -> tuple[torch.device, str]:
        """(training device, data device) of this run (see :func:`resolve_devices`)."""
        return resolve_devices(self.config, self.log)

    def setup(self) -> None:
        """Check flags, pick devices, load the scene, build the Gaussians and the optimiser (or
        restore a checkpoint); only then, with every input known to be good, check the model
        folder (``trainer.output_guard``) and write cfg_args, input.ply and cameras.json."""
        cfg = self.config
        check_supported(cfg)
        refuse_trained_model(self.model_path, bool(cfg.script.start_checkpoint), cfg.script.overwrite)  # early
        seed_everything(cfg.script.seed)
        self.device, data_device = self._devices()
        self.backend = resolve_backend(cfg.script.backend, self.device)
        described = {"cuda": "CUDA kernels", "reference": "PyTorch reference rasterizer"}[self.backend]
        self.log(f"Rasterizer: {self.backend} ({described} on {self.device})")
        if self.device.type == "cuda" and self.backend == "reference":
            self.log("The CUDA backend is unavailable (install it with: pip install 'splatview[cuda]'); "
                     "training on the GPU with the much slower reference rasterizer")
        self.log(f"Output folder: {self.model_path}")
        self.scene = load_scene(cfg.model.source_path, cfg.model.images, cfg.model.resolution,
                                cfg.model.white_background, cfg.model.eval, data_device,
                                cfg.script.cache_budget, quiet=self.quiet, log=self.log,
                                # a background that changes every step needs the alpha kept
                                keep_alpha=cfg.optimization.random_background)
        self._override_random_points()
        self.background = torch.tensor(self.scene.background, dtype=torch.float32, device=self.device)
        self._stats = RunningStats(self.device, POSTFIX_EVERY)
        self.fused_kernels = self.device.type == "cuda" and fused_loss_available()
        if self.backend == "cuda":
            from rasterizer.cuda import PairBudget  # noqa: PLC0415 - optional backend

            from trainer.graphed_step import GraphedTrainingStep  # noqa: PLC0415 - optional backend

            self.pair_budget = PairBudget()
            # Views of several sizes share one graph, each drawn on the largest (a canvas).
            cameras = [view.camera for view in self.scene.train_views]
            several = len({(camera.width, camera.height) for camera in cameras}) > 1
            self._graph_step = GraphedTrainingStep(canvas_size(cameras) if several else None)
            self.cuda_graphs = self.fused_kernels and not cfg.script.no_cuda_graphs
        self.sampler = CameraSampler(len(self.scene.train_views), len(self.scene.test_views), cfg.script.seed)
        self.resolution_schedule = self._resolution_schedule() if cfg.script.fast else None
        self._small_views = SmallViews()
        if cfg.script.start_checkpoint:
            self._restore(cfg.script.start_checkpoint)
        else:
            self._initialise()
        prepare_model_folder(self.model_path, resuming=bool(cfg.script.start_checkpoint),
                             overwrite=cfg.script.overwrite,
                             needed_bytes=save_size_estimate(len(self.model), self.model.max_sh_degree),
                             log=self.log)
        self._write_cfg_args()
        self._write_scene_files()

    def _resolution_schedule(self) -> ResolutionSchedule:
        """``--fast``'s schedule, from up to SAMPLED_PHOTOS training photos spread over the views."""
        views = self.scene.train_views
        picked = sorted({round(k * (len(views) - 1) / (SAMPLED_PHOTOS - 1)) for k in range(SAMPLED_PHOTOS)})
        photos = [self.scene.images.get(views[i].index) for i in picked]
        # Full size from --densify_until_iter (15000 of the reference's 30000, as DashGaussian),
        # or halfway through a shorter run, so that every run ends with full-size training.
        end = min(self.config.optimization.densify_until_iter, self.config.optimization.iterations // 2)
        schedule = ResolutionSchedule.from_photos(photos, end)
        self.log(f"--fast (not the reference): {schedule.describe()}")
        return schedule

    def _write_cfg_args(self) -> None:
        write_cfg_args(self.model_path, self.config.cfg_args_values())

    def _override_random_points(self) -> None:
        """``--random_init_points``: a scene without a point cloud gets that many random points
        (the reference's 100000 are slow on a CPU)."""
        scene, count = self.scene, self.config.script.random_init_points
        if scene.kind == "colmap" or scene.point_cloud_path is not None or len(scene.point_cloud) == count:
            return
        scene.point_cloud = random_point_cloud(count)

    def _write_scene_files(self) -> None:
        scene = self.scene
        target = self.model_path / "input.ply"
        if scene.point_cloud_path is not None:
            with atomic_write(target) as stream, open(scene.point_cloud_path, "rb") as source:
                shutil.copyfileobj(source, stream)
        else:
            write_point_cloud(target, scene.point_cloud)
        self._write_cameras(self.model_path)

    def _write_cameras(self, root: Path) -> None:
        scene = self.scene
        write_cameras_json(root, [v.original_camera for v in scene.test_views],
                           [v.original_camera for v in scene.train_views])

    def _initialise(self) -> None:
        cloud = self.scene.point_cloud
        if len(cloud) == 0:
            raise ConfigError("the initial point cloud is empty; nothing to train")
        self.log(f"Number of points at initialisation : {len(cloud)}")
        gaussians = Gaussians.from_points(cloud.xyz, cloud.rgb, self.config.model.sh_degree)
        self.model = self._new_model(gaussians)
        self.model.training_setup(self.config.optimization, self.scene.extent, self.config.script.batch_size)

    def _new_model(self, gaussians: Gaussians) -> GaussianModel:
        """The model trained, made from the initial Gaussians (on the training device)."""
        return GaussianModel.from_gaussians(gaussians, self.device)

    def _restore(self, path: str) -> None:
        payload = load_checkpoint(path, self._checkpoint_device())
        state = payload["model"]
        if state["max_sh_degree"] != self.config.model.sh_degree:
            raise ConfigError(f"{path}: the checkpoint has SH degree {state['max_sh_degree']} but "
                              f"--sh_degree is {self.config.model.sh_degree}")
        self.model = self._model_from_state(state)
        self.completed = payload["iteration"]
        self.first_iteration = self.completed + 1
        if "sampler" in payload:
            try:
                self.sampler.load_state_dict(payload["sampler"])
            except ValueError as error:
                raise ConfigError(f"{path}: {error}") from None
            restore_rng(payload["rng"], self.device)
            self._stats.load(payload.get("progress", {}))
        else:
            self.log(f"{path}: graphdeco checkpoint; camera order and random state start afresh")
        self.log(f"Resuming from {path} at iteration {self.first_iteration} "
                 f"({self.gaussian_count()} Gaussians)")

    def _checkpoint_device(self) -> torch.device:
        """Where a checkpoint's tensors are loaded."""
        return self.device

    def _model_from_state(self, state: dict[str, Any]) -> GaussianModel:
        return GaussianModel.from_state_dict(state, self.config.optimization, self.device, self.config.script.batch_size)

    def gaussian_count(self) -> int:
        """Number of Gaussians of the model being trained."""
        return len(self.model)

    # ----- loop ----------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        """Set up (unless done) and train; returns how it ended. Ctrl-C and out-of-memory
        errors are turned into a save and a result, never a traceback."""
        if self.model is None:
            self.setup()
        opt, script = self.config.optimization, self.config.script
        self._events = {"test": set(script.test_iterations), "save": set(script.save_iterations),
                        "checkpoint": set(script.checkpoint_iterations)}
        start = time.perf_counter()
        status, message = "completed", ""
        with self._sigint_guard(), _anomaly_mode(self.config.script.detect_anomaly), self._progress():
            try:
                for step in batch_steps(self.first_iteration, opt.iterations, self.config.script.batch_size):
                    self._iteration(step)
                    self.completed = step.last
            except (KeyboardInterrupt, _Stop):
                status = "interrupted"
            except Exception as error:  # noqa: BLE001 - only memory errors are handled
                if not is_out_of_memory(error):
                    raise
                status, message = "out_of_memory", str(error).splitlines()[0] if str(error) else ""
            elapsed = time.perf_counter() - start  # the time kept alive after training is not counted
            result = TrainResult(status, self.model_path, self.completed, self.gaussian_count(),
                                 self.completed - self.first_iteration + 1, elapsed, dict(self.metrics),
                                 list(self.saved), stop_signal=self.stop_signal if status == "interrupted" else None)
            if status == "completed":
                self._rescue_unsaved(result)   # before serving a kept-alive viewer: the work is safe
                self._finish()
        if status == "completed":
            for line in summary_lines(result, self.first_iteration, self.config):
                self.log(line)
        else:
            self._save_on_stop(result, message)
        return result

    def _finish(self) -> None:
        """The hooks' ``on_finish`` (see :data:`TrainingHook`); everything is saved already, so
        a second Ctrl-C there just ends it."""
        try:
            for hook in self.hooks:
                if hasattr(hook, "on_finish"):
                    hook.on_finish(self)
        except KeyboardInterrupt:
            pass

    def _iteration(self, step: Step) -> None:
        """One step: the views ``step.first .. step.last`` (one view, ``it``, with B = 1)."""
        cfg, opt, model = self.config, self.config.optimization, self.model
        it = step.first
        self._before_step(it)
        model.update_learning_rate(it)
        for _ in range(step.multiples(SH_DEGREE_INTERVAL)):
            model.oneup_sh_degree()
        # The reference reports and saves iteration N after its backward, before its densification
        # and update: the model as it is now, before the render (which changes nothing of it, except
        # a step the rasterizer's backward may take, see _sh_rest_step).
        with torch.no_grad():
            for view in step.hits(self._events["test"]):
                self._report(view)
            for view in step.hits(self._events["save"]):
                self.log(f"\n[ITER {view}] Saving Gaussians")
                self._save_ply(view)
        with self.phase("data"):
            views = [self.scene.train_views[self.sampler.next()] for _ in range(step.size)]
            upcoming = self.sampler.upcoming(max(PREFETCH_VIEWS, 2 * step.size))
            self.scene.images.prefetch(self.scene.train_views[i].index for i in upcoming)
            gts = self._ground_truths(views)
            if self.resolution_schedule is not None:
                views, gts = self._scheduled_size(it, views, gts)
        if step.holds(cfg.script.debug_from + 1):
            cfg.pipeline.debug = True
        background = torch.rand(3, device=self.device) if opt.random_background else self.background
        statistics, stats = self._forward_backward(step, views, gts, background)

        with torch.no_grad():
            for row in range(step.size):
                self._stats.record(stats[row, :2])  # (loss, MSE), read back later without a wait
            self._progress_update(step)
            self.mutating = True
            if it < opt.densify_until_iter:
                with self.phase("densify"):
                    self._densify(step, statistics)
            if step.last < opt.iterations:
                with self.phase("optimizer"):
                    visible = None
                    if model.optimizer_type == "sparse_adam":
                        visible = statistics[0].visible()
                        for more in statistics[1:]:
                            visible = visible | more.visible()
                    model.step(visible=visible)
            self.mutating = False
            if step.hits(self._events["checkpoint"]):
                self.log(f"\n[ITER {step.last}] Saving Checkpoint")
                self._save_checkpoint(step.last)

    def _scheduled_size(self, it: int, views: Sequence[View], gts: Sequence[torch.Tensor | None]
                        ) -> tuple[Sequence[View], Sequence[torch.Tensor | None]]:
        """The step's views and photos at ``--fast``'s size for iteration ``it``."""
        factor = self.resolution_schedule.factor(it)
        if factor != self._small_views.factor:
            size = f"1/{factor} of full resolution" if factor > 1 else "full resolution"
            self.log(f"\n[ITER {it}] --fast: training at {size}")
        return self._small_views.at(views, gts, factor)

    def _before_step(self, it: int) -> None:
        """Stop here if asked to (before or by the hooks), else call the hooks."""
        self._check_stop()
        for hook in self.hooks:
            hook(self, it)
        self._check_stop()

    def _ground_truths(self, views: Sequence[View]) -> list[torch.Tensor | None]:
        """The cached ground truth of each view (uint8 [H, W, C])."""
        return [self.scene.images.get(view.index) for view in views]

    def _forward_backward(self, step: Step, views: Sequence[View], gts: Sequence[torch.Tensor],
                          background: torch.Tensor) -> tuple[list[ScreenStatistics], torch.Tensor]:
        """Render, loss, backward of a step's views; returns what densification reads and the
        loss statistics ``[B, 4]`` (``trainer.losses``), one row per view. A render that outgrew
        the pair budget is done again (the first try's gradients are dropped), so every step is
        exact. With --debug, a failure saves a snapshot first."""
        try:
            while True:
                if self.fused_kernels and self.backend == "cuda":
                    result = self._fused_step(step, views, gts, background)
                else:
                    result = self._autograd_step(step, views, gts, background)
                with self.phase("wait"):
                    overflowed = self._render_overflowed()
                if not overflowed:
                    return result
                self.model.optimizer.zero_grad(set_to_none=True)
                if self._fused_param is not None:  # the kernel skipped the step: take its count back
                    self.model.optimizer.undo_fused_step(self._fused_param)
        except (KeyboardInterrupt, _Stop):
            raise
        except Exception as error:
            if self.config.pipeline.debug and not is_out_of_memory(error):
                self._debug_snapshot(step.first, views[0], background, error)
            raise

    def _render_overflowed(self) -> bool:
        """Whether a render of the step outgrew the pair budget (waits until the GPU has counted
        the pairs, not for the step to finish)."""
        return self.pair_budget is not None and self.pair_budget.overflowed()

    def _autograd_step(self, step: Step, views: Sequence[View], gts: Sequence[torch.Tensor],
                       background: torch.Tensor) -> tuple[list[ScreenStatistics], torch.Tensor]:
        """Forward and backward through autograd (any backend; the PyTorch or fused loss). The
        views of a batch are rendered together, one render per image size."""
        opt, model = self.config.optimization, self.model
        options = {"background": background, "sh_degree": model.active_sh_degree,
                   "antialiasing": self.config.pipeline.antialiasing, "backend": self.backend,
                   "pair_budget": self.pair_budget}
        if len(views) == 1:
            camera = views[0].camera
            with self.phase("render"):
                out = render(model.gaussians(), camera, **options)
            with self.phase("loss"):
                loss, stats = photometric_loss(out.image, gts[0], background, opt.lambda_dssim, fused=self.fused_kernels)
            self._check_finite(step.first, loss)
            with self.phase("backward"):
                loss.backward()
            return [ScreenStatistics(out.means2d.grad, out.radii, camera.width, camera.height)], stats
        groups = same_size_groups([view.camera for view in views])
        gaussians, outputs, losses, rows = model.gaussians(), [], [], []
        for positions in groups:
            with self.phase("render"):
                outputs.append(render(gaussians, [views[i].camera for i in positions], **options))
            with self.phase("loss"):
                loss, stats = photometric_loss(outputs[-1].image, torch.stack([gts[i] for i in positions]),
                                               background, opt.lambda_dssim, fused=self.fused_kernels)
            losses.append(loss)
            rows.append(stats)
        loss = losses[0] if len(losses) == 1 else torch.stack(losses).sum()
        self._check_finite(step.first, loss)
        with self.phase("backward"):
            loss.backward()
        statistics = [ScreenStatistics(out.means2d.grad, out.radii, views[group[0]].camera.width,
                                       views[group[0]].camera.height) for out, group in zip(outputs, groups)]
        return statistics, in_view_order(rows, groups)

    def _fused_step(self, step: Step, views: Sequence[View], gts: Sequence[torch.Tensor],
                    background: torch.Tensor) -> tuple[list[ScreenStatistics], torch.Tensor]:
        """The same step on the CUDA backend without autograd: the rasterizer's and the loss's
        kernels with their backward called directly (autograd's engine costs ~1 ms of host
        time a step, which the GPU would wait for). A batch of views of any sizes is one set of
        launches, on a canvas (see :func:`rasterizer.cuda.render_for_training`)."""
        from rasterizer.cuda import render_for_training  # noqa: PLC0415 - optional backend
        from trainer.cuda import fused_photometric_loss_and_gradient, fused_photometric_loss_on_canvas  # noqa: PLC0415

        opt, model = self.config.optimization, self.model
        cameras = [view.camera for view in views]
        truths = [gt.to(self.device, non_blocking=True) for gt in gts]
        needed = self._parameter_gradients_needed(step)
        if needed and self._graphable(views, background):
            result = self._graphed_step(cameras[0], truths[0], background)
            if result is not None:
                return result
        with self.phase("render"):
            rendered = render_for_training(model.gaussians(), cameras[0] if len(views) == 1 else cameras, background,
                                           model.active_sh_degree, self.config.pipeline.antialiasing, self.pair_budget)
        out = rendered.output
        with self.phase("loss"):
            if len(views) == 1:
                loss, stats, grad_image = fused_photometric_loss_and_gradient(out.image, truths[0], background,
                                                                              opt.lambda_dssim)
            else:
                loss, stats, grad_image = fused_photometric_loss_on_canvas(out.image, truths, background,
                                                                           opt.lambda_dssim)
            self._check_finite(step.first, loss)
        sh_rest_step = self._sh_rest_step() if needed else None
        self._fused_param = None if sh_rest_step is None else sh_rest_step.param
        with self.phase("backward"):
            if sh_rest_step is not None:
                self.mutating = True  # the model changes from here to the end of the step
            model.add_gradients(rendered.backward(grad_image, sh_rest_step, parameters=needed))
        if len(views) == 1:
            return [ScreenStatistics(out.means2d.grad, out.radii, cameras[0].width, cameras[0].height)], stats
        return screen_statistics(out.means2d.grad, out.radii, cameras), stats

    def _graphable(self, views: Sequence[View], background: torch.Tensor) -> bool:
        """Whether this step may be replayed from a CUDA graph: one view, a pair budget that
        has seen a count, the run's own background (a random one is a new tensor every step),
        no --debug (its checks read the loss on the host), no --fast (its smaller views would
        be drawn on a full-size canvas)."""
        return (self.cuda_graphs and len(views) == 1 and self.pair_budget is not None
                and self.pair_budget.capacity > 0 and background is self.background
                and not self.config.pipeline.debug and self.resolution_schedule is None)

    def _graphed_step(self, camera: Camera, truth: torch.Tensor, background: torch.Tensor
                      ) -> tuple[list[ScreenStatistics], torch.Tensor] | None:
        """:meth:`_fused_step` of one view through ``trainer.graphed_step`` (the backward takes
        the fused SH step as the eager step's does). None if the first capture fails: graphs are
        then off for the run, and the caller takes the eager step."""
        opt, model = self.config.optimization, self.model
        sh_rest_step = self._sh_rest_step()
        self._fused_param = None if sh_rest_step is None else sh_rest_step.param
        with self.phase("render"):
            try:
                if sh_rest_step is not None:
                    self.mutating = True  # the model changes from here to the end of the step
                result = self._graph_step.run(model.gaussians(), camera, truth, background, model.active_sh_degree,
                                              self.config.pipeline.antialiasing, opt.lambda_dssim,
                                              self.pair_budget, sh_rest_step)
            except (RuntimeError, TypeError) as error:  # TypeError: a torch without external events
                if self._graph_step.captures or is_out_of_memory(error):
                    raise
                if sh_rest_step is not None:  # not taken: the eager step asks for it again
                    model.optimizer.undo_fused_step(sh_rest_step.param)
                    self._fused_param = None
                self.mutating = False
                self.cuda_graphs = False
                self._graph_step.release()
                self.log(f"CUDA graphs are unavailable here ({str(error).splitlines()[0]}); "
                         "training launches each kernel itself")
                return None
        model.add_gradients(result.grads)
        return [ScreenStatistics(result.means2d_grad, result.radii, camera.width, camera.height)], result.stats

    def _parameter_gradients_needed(self, step: Step) -> bool:
        """Whether the step's update reads the parameters' gradients: not where densification
        replaces every parameter (they then take no step, as in the reference; only the
        screen-space gradients feed its statistics), nor at the last iteration (no step). The
        fast path then leaves out the projection's backward."""
        return step.last < self.config.optimization.iterations and not self._densify_views(step)

    def _sh_rest_step(self):
        """The Adam step of the higher SH coefficients for the rasterizer's backward to take
        (``CudaAdam.fused_step``), in a step whose update reads the gradients; None with another
        optimiser (or ``fuse_sh_rest_step`` off), where the optimiser takes it."""
        from trainer.cuda import CudaAdam  # noqa: PLC0415 - optional (cuda-bindings)

        param = self.model.params["f_rest"]
        optimizer = self.model.optimizer
        if not self.fuse_sh_rest_step or not isinstance(optimizer, CudaAdam) or param.numel() == 0:
            return None
        return optimizer.fused_step(param)

    def _check_finite(self, it: int, loss: torch.Tensor) -> None:
        if self.config.pipeline.debug and not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {loss.item()} at iteration {it}")

    def _densify(self, step: Step, statistics: Sequence[ScreenStatistics]) -> None:
        """Statistics of every view of the step; densify-and-prune and opacity reset when one of
        their views (before ``densify_until_iter``) is in the step, once each."""
        opt, model, script = self.config.optimization, self.model, self.config.script
        for screen in statistics:
            if screen.means2d_grad is not None:  # None when nothing reached the image
                model.add_render_statistics(screen.means2d_grad, screen.radii, screen.width, screen.height,
                                            fused=self.fused_kernels)
        views = [v for v in step.views() if v < opt.densify_until_iter]
        densify_at = self._densify_views(step)
        resets = any(v % opt.opacity_reset_interval == 0 or (self.config.model.white_background
                                                              and v == opt.densify_from_iter) for v in views)
        if (densify_at or resets) and self._graph_step is not None:
            self._graph_step.release()  # its buffers go before the new tensors come
        if densify_at:
            size_threshold = SIZE_THRESHOLD if densify_at[-1] > opt.opacity_reset_interval else None
            report = model.densify_and_prune(opt.densify_grad_threshold, MIN_OPACITY, self.scene.extent,
                                             size_threshold, script.max_gaussians,
                                             script.fix_densification_quirks)
            if report.capped and not self._cap_noted:
                self._cap_noted = True
                self.log(f"\n[ITER {densify_at[-1]}] --max_gaussians {script.max_gaussians} reached: only the "
                         "candidates with the largest gradients are densified from now on")
        if resets:
            model.reset_opacity()

    def _densify_views(self, step: Step) -> list[int]:
        """The views of the step at which the reference densifies and prunes."""
        opt = self.config.optimization
        return [v for v in step.views() if opt.densify_from_iter < v < opt.densify_until_iter
                and v % opt.densification_interval == 0]

    # ----- progress, evaluation -----------------------------------------------------------------------
    @contextlib.contextmanager
    def _progress(self) -> Iterator[None]:
        from tqdm import tqdm

        iterations = self.config.optimization.iterations
        self._bar = None if self.quiet else tqdm(
            total=iterations, initial=min(self.first_iteration - 1, iterations),
            desc="Training progress", unit="step" if self.config.script.batch_size == 1 else "view",
            dynamic_ncols=True)
        try:
            yield
        finally:
            if self._bar is not None:
                self._bar.close()
                self._bar = None

    @property
    def ema(self) -> dict[str, float]:
        """The progress bar's running loss and PSNR (EMA weight 0.4, as the reference), up to the
        last completed iteration (reading it waits for the GPU to get there)."""
        return self._stats.current()

    def _progress_update(self, step: Step) -> None:
        if self._bar is None:
            return
        if step.multiples(POSTFIX_EVERY):
            ema = self._stats.lagged()  # a few steps old: reading it never waits for the GPU
            self._bar.set_postfix({"Loss": f"{ema['loss']:.7f}", "PSNR": f"{ema['psnr']:.2f}",
                                   "N": self.gaussian_count()}, refresh=False)
        self._bar.update(step.size)

    def _report(self, it: int) -> None:
        """``[ITER N] Evaluating test|train: L1 x PSNR y`` over the test views and the train
        views at indices 5, 10, 15, 20, 25 (mod N) of the shuffled train list."""
        scene, sampler = self.scene, self.sampler
        train = [scene.train_views[sampler.train_order[i % len(sampler.train_order)]] for i in EVAL_TRAIN_INDICES]
        test = [scene.test_views[i] for i in sampler.test_order]
        for name, views in (("test", test), ("train", train)):
            if not views:
                continue
            values = self._evaluate(views)
            self.metrics.setdefault(it, {})[name] = values
            self.log(f"\n[ITER {it}] Evaluating {name}: L1 {values['l1']} PSNR {values['psnr']}")
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _evaluate(self, views: Sequence[View]) -> dict[str, float]:
        return evaluate_views(self.model, self.scene, views, self.background, self.backend,
                              self.config.pipeline.antialiasing)

    # ----- saving ------------------------------------------------------------------------------------
    def save_ply(self, it: int) -> Path:
        """Write ``point_cloud/iteration_<it>/point_cloud.ply`` of the current model (atomically).
        Call it only at an iteration boundary (from a hook) or when the loop is not running.
        Raises when the file cannot be written (the loop's own saves use :meth:`_save_ply`)."""
        path = point_cloud_path(self.model_path, it)
        gaussians = self._gaussians_to_save()
        if gaussians is not None:
            self._write_ply(gaussians, it, self.model_path)
        self.saved.append(path)
        return path

    def _gaussians_to_save(self) -> Gaussians | None:
        """The whole model for a PLY; None in a process that does not write (a multi-process
        run gathers it to rank 0)."""
        return self.model.gaussians()

    def _model_state_to_save(self) -> dict[str, Any] | None:
        """The whole model's ``state_dict`` for a checkpoint; None in a process that does not write."""
        return self.model.state_dict()

    def _write_ply(self, gaussians: Gaussians, it: int, root: Path) -> None:
        write_ply(point_cloud_path(root, it), gaussians)
        self._write_exposure(root)

    def _write_exposure(self, root: Path) -> None:
        """``exposure.json`` as HEAD writes at every save: identity 3x4 per training image
        (exposure compensation is off)."""
        identity = [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]]
        names = {view.image_name: identity for view in self.scene.train_views}
        atomic_write_text(root / "exposure.json", json.dumps(names, indent=2))

    def _save_ply(self, it: int) -> Path | None:
        """:meth:`save_ply`, except that a failed write keeps a copy in memory (see
        :meth:`_keep_unsaved`) and returns None: training goes on."""
        self._retry_unsaved()
        path = point_cloud_path(self.model_path, it)
        gaussians = self._gaussians_to_save()
        if gaussians is None:
            self.saved.append(path)
            return path

        def save() -> Path:
            self._write_ply(gaussians, it, self.model_path)
            self.saved.append(path)
            return path

        return self._save_or_keep("ply", path.relative_to(self.model_path), it, save,
                                  lambda: gaussians.detach().to("cpu").clone(),
                                  lambda copy, root: self._write_ply(copy, it, root))

    def _save_checkpoint(self, it: int) -> Path | None:
        """``chkpnt<it>.pth``; a failed write is kept in memory as in :meth:`_save_ply`."""
        self._retry_unsaved()
        name = f"chkpnt{it}.pth"
        path = self.model_path / name
        state = self._model_state_to_save()
        if state is None:
            self.saved.append(path)
            return path
        payload = checkpoint_payload(it, state, self.sampler, self.ema, self.device)

        def save() -> Path:
            write_checkpoint(path, payload)
            self.saved.append(path)
            return path

        return self._save_or_keep("checkpoint", Path(name), it, save, lambda: cpu_copy(payload),
                                  lambda copy, root: write_checkpoint(root / name, copy))

    def _save_or_keep(self, kind: str, relative: Path, it: int, save: Callable[[], Path],
                      copy: Callable[[], Any], write: Callable[[Any, Path], Any]) -> Path | None:
        try:
            path = save()
        except Exception as error:  # noqa: BLE001 - only write failures are handled
            if not is_write_failure(error):
                raise
            self._keep_unsaved(kind, _Unsaved(relative, copy(), write), error)
            return None
        superseded = self._unsaved.pop(kind, None)
        if superseded is not None:
            self.lost_saves.append(str(superseded.relative))
        return path

    def _keep_unsaved(self, kind: str, unsaved: "_Unsaved", error: BaseException) -> None:
        """Keep a save that failed in memory (only the latest of each kind: a newer PLY or
        checkpoint supersedes the older one), and say so in one line."""
        superseded = self._unsaved.get(kind)
        if superseded is not None:
            self.lost_saves.append(str(superseded.relative))
        self._unsaved[kind] = unsaved
        self.error(f"\nCould not save {self.model_path / unsaved.relative} ({describe_os_error(error)}); "
                   "training goes on with the model kept in memory; the save is retried at the next save "
                   "and at the end, then written elsewhere if need be")

    def _retry_unsaved(self) -> None:
        """Write the saves kept in memory into the model folder, if it takes them now."""
        for kind, unsaved in list(self._unsaved.items()):
            try:
                unsaved.write(unsaved.payload, self.model_path)
            except Exception as error:  # noqa: BLE001
                if not is_write_failure(error):
                    raise
                continue
            del self._unsaved[kind]
            self.saved.append(self.model_path / unsaved.relative)
            self.log(f"\nSaved {self.model_path / unsaved.relative} (it failed before)")

    def _rescue_unsaved(self, result: TrainResult) -> None:
        """At the end of a run: the saves still kept in memory go to the model folder if it
        takes them now, else into the first of :func:`rescue_folders` that does."""
        self._retry_unsaved()
        result.lost_saves = list(self.lost_saves)
        if not self._unsaved:
            result.saved = list(self.saved)
            return
        reasons = []
        for folder in rescue_folders(self.model_path):
            try:
                for unsaved in self._unsaved.values():
                    unsaved.write(unsaved.payload, folder)
                write_cfg_args(folder, self.config.cfg_args_values())
                self._write_cameras(folder)
            except Exception as error:  # noqa: BLE001
                if not is_write_failure(error):
                    raise
                reasons.append(f"{folder}: {describe_os_error(error)}")
                continue
            names = ", ".join(str(u.relative) for u in self._unsaved.values())
            result.rescued_to = folder
            if "checkpoint" in self._unsaved:
                result.checkpoint = folder / self._unsaved["checkpoint"].relative
            self.error(f"\nThe model folder {self.model_path} would not take the final save; saved {names} "
                       f"in {folder} instead (a complete model folder: splat-render -m {folder} works)")
            self._unsaved.clear()
            result.saved = list(self.saved)
            return
        names = ", ".join(str(u.relative) for u in self._unsaved.values())
        result.lost_saves += [str(u.relative) for u in self._unsaved.values()]
        self.error(f"\nCould not save {names} anywhere ({'; '.join(reasons)})")
        result.saved = list(self.saved)

    def _save_on_stop(self, result: TrainResult, reason: str) -> None:
        """Save the PLY of the iteration under way and, when the state is consistent, the
        checkpoint of the last completed iteration; then say what happened."""
        current = self.completed + 1
        notes = []
        if result.status == "out_of_memory":
            # Gradients are not part of the saved state; dropping them frees room for the save.
            self.model.optimizer.zero_grad(set_to_none=True)
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        try:
            ply = self._save_ply(current)
            notes.append(str(ply) if ply is not None else f"(point_cloud/iteration_{current}: see below)")
        except Exception as error:  # noqa: BLE001 - report, keep going
            notes.append(f"(the PLY could not be saved: {error})")
        if self.mutating:
            notes.append("(no checkpoint: stopped in the middle of an update)")
        else:
            try:
                checkpoint = self._save_checkpoint(self.completed)
                if checkpoint is not None:
                    result.checkpoint = checkpoint
                    notes.append(f"{checkpoint} (resume with --start_checkpoint {checkpoint})")
                else:
                    notes.append(f"(chkpnt{self.completed}.pth: see below)")
            except Exception as error:  # noqa: BLE001
                notes.append(f"(the checkpoint could not be saved: {error})")
        saved = "; saved " + ", ".join(notes)
        if result.status == "interrupted":
            by = "" if self.stop_signal in (None, signal.SIGINT) else f" by {signal.Signals(self.stop_signal).name}"
            result.message = f"Interrupted{by} at iteration {current}{saved}"
        else:
            result.message = (f"Out of memory at iteration {current} with {self.gaussian_count()} Gaussians"
                              f"{' (' + reason + ')' if reason else ''}{saved}. To fit, cap the model "
                              "with --max_gaussians N, raise --densify_grad_threshold (e.g. 0.0004), "
                              "or keep images on the CPU with --data_device cpu.")
        self.error(result.message)
        self._rescue_unsaved(result)

    def _debug_snapshot(self, it: int, view: View, background: torch.Tensor, error: Exception) -> None:
        path = self.model_path / "snapshot_fw.pth"
        try:
            snapshot = {"iteration": it, "error": repr(error), "image_name": view.image_name,
                        "gaussians": {k: v.detach().cpu() for k, v in self.model.gaussians().tensors().items()},
                        "active_sh_degree": self.model.active_sh_degree,
                        "camera": {"width": view.camera.width, "height": view.camera.height,
                                   "fx": view.camera.fx, "fy": view.camera.fy, "cx": view.camera.cx,
                                   "cy": view.camera.cy, "world_to_camera": view.camera.world_to_camera},
                        "background": background.detach().cpu()}
            with atomic_write(path) as stream:
                torch.save(snapshot, stream)
            self.error(f"[ITER {it}] error in the render or loss; debug snapshot saved to {path}")
        except Exception as save_error:  # noqa: BLE001
            self.error(f"[ITER {it}] could not save a debug snapshot: {save_error}")

    # ----- Ctrl-C ------------------------------------------------------------------------------------
    def _check_stop(self) -> None:
        if self._stop_requested:
            raise _Stop()

    @property
    def stop_requested(self) -> bool:
        """True once a stop was asked for (Ctrl-C or :meth:`request_stop`); hooks that block
        (a paused network viewer) return when it turns true."""
        return self._stop_requested

    def request_stop(self) -> None:
        """Stop (with a save) at the next iteration boundary; thread-safe."""
        self._stop_requested = True

    @contextlib.contextmanager
    def _sigint_guard(self) -> Iterator[None]:
        """First Ctrl-C (or SIGTERM, which batch schedulers and ``timeout`` send): stop at the
        next iteration boundary (consistent state, exact resume) and save. A second one:
        KeyboardInterrupt at once."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if self._stop_requested:
                raise KeyboardInterrupt
            self._stop_requested = True
            self.stop_signal = signum
            name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
            self.error(f"\n{name}: stopping after this iteration and saving (press Ctrl-C again to stop at once)")

        previous = {number: signal.signal(number, handler) for number in STOP_SIGNALS}
        try:
            yield
        finally:
            for number, handler_before in previous.items():
                signal.signal(number, handler_before)


def _no_phase(_name: str) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext()


@contextlib.contextmanager
def _anomaly_mode(enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    with torch.autograd.detect_anomaly():
        yield


def summary_lines(result: TrainResult, first_iteration: int, config: TrainConfig) -> list[str]:
    """What a completed run did, for the end of ``splat-train``'s output: steps, wall time,
    steps/s and Gaussians; the test metrics of the last iteration (with --eval); where the files
    are (and what could not be saved there)."""
    model_path = result.model_path
    iterations = config.optimization.iterations
    if result.steps > 0:
        lines = [f"\nTraining complete. {result.steps} steps in {result.elapsed_s:.1f} s "
                 f"({result.steps_per_second:.2f} steps/s); {result.num_gaussians:,} Gaussians."]
    elif first_iteration > 1:
        lines = [f"\nTraining complete. Nothing to train: the checkpoint is at iteration {first_iteration - 1} "
                 f"and --iterations is {iterations}; {result.num_gaussians:,} Gaussians."]
    else:
        lines = [f"\nTraining complete. --iterations 0: no training step ran; {model_path} holds cfg_args, "
                 "cameras.json and input.ply, and no point_cloud/ (nothing was trained)."]
    test = result.metrics.get(result.iteration, {}).get("test")
    if test:
        lines.append(f"Test views at iteration {result.iteration}: L1 {test['l1']:.5f} PSNR {test['psnr']:.2f}")
    names = list(dict.fromkeys(_relative(path, model_path) for path in result.saved))
    if names:
        lines.append(f"Saved in {model_path}: {', '.join(names)}")
    if result.rescued_to is not None:
        lines.append(f"Saved in {result.rescued_to} because {model_path} refused the final save")
    if result.lost_saves:
        lines.append(f"Not saved (the disk refused them): {', '.join(result.lost_saves)}")
    return lines


def _relative(path: Path, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


def train(config: TrainConfig, hooks: Sequence[TrainingHook] = (),
          log: Callable[[str], None] | None = None) -> TrainResult:
    """Train with ``config`` (see :class:`Trainer`); the scene's read-ahead threads are stopped
    at the end."""
    trainer = Trainer(config, hooks, log)
    try:
        return trainer.run()
    finally:
        if trainer.scene is not None:
            trainer.scene.close()
