"""The training loop of one rank of a multi-process run: :class:`trainer.train.Trainer` with the
Gaussians partitioned (``partition.py``), each step's views rendered through the exchange of
projected Gaussians (``exchange.py``), and the run's decisions and files made once.

What changes against one process, and what does not:

* every rank loads the scene, seeds the same generators and draws the same views and random
  backgrounds (so they agree without talking), and renders its share of each batch;
* the loss statistics of every view are summed across ranks, so the progress values, and the
  checkpoint's, are one process's;
* evaluation renders each view on one rank and sums the per-view values in view order;
* files: rank 0 writes ``cfg_args``, ``input.ply``, ``cameras.json``, the PLYs and the
  checkpoints, from the whole model gathered in single-process order; a checkpoint of any
  number of ranks resumes on any number (each takes an even share of the keys);
* stopping: a stop request (Ctrl-C, which torchrun passes to every rank, or the network viewer)
  is agreed on at every iteration boundary, so all ranks stop at the same one and save
  together; a rank that fails (out of memory included) ends its process with a one-line error,
  and torchrun stops the others: the files saved last are untouched (writes are atomic);
* the network viewer is served by rank 0: while a client is connected, the whole model is
  gathered to rank 0 at each step for it (:class:`RankZeroHooks`).
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Sequence

import torch

from rasterizer.gaussians import Gaussians
from trainer.batching import ScreenStatistics, Step, put_views
from trainer.config import TrainConfig
from trainer.losses import photometric_loss
from trainer.metrics import l1_loss, psnr
from trainer.model import GaussianModel
from trainer.scene import View, view_image_float
from trainer.train import Trainer, TrainingHook, TrainResult, _Stop, is_out_of_memory

from .comm import Communicator, DistributedFailure
from .exchange import CudaExchange, ReferenceExchange, owner_of_views
from .partition import PartitionedGaussianModel

__all__ = ["DistributedTrainer", "RankZeroHooks", "train_distributed"]


class DistributedTrainer(Trainer):
    """One rank's trainer (see the module docstring); ``comm`` is this process's place in the run."""

    def __init__(self, config: TrainConfig, comm: Communicator, hooks: Sequence[TrainingHook] = (),
                 log: Callable[[str], None] | None = None):
        super().__init__(config, (), log)
        self.comm = comm
        self.quiet = self.quiet or comm.rank != 0
        #: ``hooks`` (the network viewer) run on rank 0 with the whole model; ``self.hooks``
        #: holds this rank's own hooks, called every step without a collective.
        self.rank_zero = RankZeroHooks(comm, list(hooks))
        self.model: PartitionedGaussianModel | None = None
        self.exchange = None
        self._agreed_control: list[int] | None = None   # [stop, wants model], see _before_step

    def error(self, message: str) -> None:  # type: ignore[override]
        if self.comm.rank == 0:
            print(message, file=sys.stderr, flush=True)

    # ----- set-up -----------------------------------------------------------------------------
    def setup(self) -> None:
        super().setup()
        kind = CudaExchange if self.backend == "cuda" and self.fused_kernels else ReferenceExchange
        self.exchange = kind(self.comm, self.config.pipeline.antialiasing)
        batch = self.config.script.batch_size
        self.log(f"Training on {self.comm.world} processes ({self.comm.backend}): the Gaussians are split "
                 f"across them, {batch} view{'s' if batch != 1 else ''} per step")
        if batch < self.comm.world:
            self.log(f"Note: --batch_size {batch} is below the {self.comm.world} processes: some render no view "
                     "in a step (they still hold their share of the Gaussians); a multiple of the number of "
                     "processes keeps them all busy")

    def _devices(self) -> tuple[torch.device, str]:
        """The communicator's device (its GPU with NCCL; the CPU with gloo, also on a machine
        with GPUs: gloo moves CPU tensors only)."""
        data_device = self.config.model.data_device
        if self.comm.device.type == "cpu" and data_device.startswith("cuda"):
            data_device = "cpu"
        return self.comm.device, data_device

    def _write_cfg_args(self) -> None:
        if self.comm.rank == 0:
            super()._write_cfg_args()

    def _write_scene_files(self) -> None:
        if self.comm.rank == 0:
            super()._write_scene_files()

    def _new_model(self, gaussians: Gaussians) -> GaussianModel:
        """This rank's part of the initial model (every rank builds the whole and keeps its part)."""
        whole = GaussianModel.from_gaussians(gaussians, "cpu")
        return PartitionedGaussianModel.part_of(whole, self.comm, self.device)

    def _checkpoint_device(self) -> torch.device:
        return torch.device("cpu")  # the whole model; each rank keeps its share on its device

    def _model_from_state(self, state: dict[str, Any]) -> GaussianModel:
        return PartitionedGaussianModel.part_of_state(state, self.config.optimization, self.device,
                                                      self.config.script.batch_size, self.comm)

    def gaussian_count(self) -> int:
        return self.model.total

    # ----- the step -----------------------------------------------------------------------------
    def _check_stop(self) -> None:
        """Every rank stops at the same boundary: a request on any of them counts for all."""
        if self.comm.any(self._stop_requested):
            self._stop_requested = True
            raise _Stop()

    def _control(self) -> list[int]:
        """What the ranks agree on before a step: [this rank was asked to stop, rank 0's hooks
        want the model]."""
        wanted = self.comm.rank == 0 and self.rank_zero.wants_model(self)
        return [int(self._stop_requested), int(wanted)]

    def _before_step(self, it: int) -> None:
        """Whether any rank was asked to stop and whether rank 0's hooks want the model: agreed
        by the previous step's :meth:`_render_overflowed` (the CUDA exchange carries it in its
        agreement), else by a small collective here. Only then are the hooks called (gathering
        the model is a collective), and a stop they ask for is agreed on before the step."""
        agreed, self._agreed_control = self._agreed_control, None
        stop, wanted = agreed if agreed is not None else self.comm.max_ints(self._control())
        if stop:
            self._stop_requested = True
            raise _Stop()
        if wanted:
            self.rank_zero(self, it)
            self._check_stop()
        for hook in self.hooks:
            hook(self, it)

    def _finish(self) -> None:
        try:
            self.rank_zero.on_finish(self)
        except KeyboardInterrupt:
            pass
        super()._finish()

    def _iteration(self, step: Step) -> None:
        try:
            super()._iteration(step)
        except Exception as error:  # noqa: BLE001 - memory errors become this rank's failure
            if not is_out_of_memory(error):
                raise
            text = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise DistributedFailure(
                f"rank {self.comm.rank}: out of memory at view {step.first} with {len(self.model)} of "
                f"{self.model.total} Gaussians on this rank ({text}); every rank stops, the last saved model "
                "is kept. To fit, use more GPUs, cap the model with --max_gaussians N, or raise "
                "--densify_grad_threshold") from None

    def _ground_truths(self, views: Sequence[View]) -> list[torch.Tensor | None]:
        """The ground truths of the views this rank renders (None for the others)."""
        owners = owner_of_views(len(views), self.comm.world)
        return [self.scene.images.get(view.index) if owner == self.comm.rank else None
                for view, owner in zip(views, owners)]

    def _fused_step(self, step: Step, views: Sequence[View], gts: Sequence[torch.Tensor | None],
                    background: torch.Tensor) -> tuple[list[ScreenStatistics], torch.Tensor]:
        """The CUDA step through the exchange, with explicit backwards (as one GPU's fused step):
        this rank's views are one render on a canvas, and their losses one launch set."""
        from trainer.cuda import fused_photometric_loss_on_canvas  # noqa: PLC0415 - optional

        opt, model = self.config.optimization, self.model
        cameras = [view.camera for view in views]
        stats = torch.zeros(len(views), 4, device=self.device)
        with self.phase("render"):
            rendered = self.exchange.render(model.gaussians(), cameras, background, model.active_sh_degree,
                                            largest_part=model.largest_part(), pair_budget=self.pair_budget,
                                            control=self._control())
        mine, grad_canvas = list(rendered.images), None  # in canvas order
        if mine:
            with self.phase("loss"):
                truths = [gts[b].to(self.device, non_blocking=True) for b in mine]
                loss, rows, grad_canvas = fused_photometric_loss_on_canvas(rendered.canvas, truths, background,
                                                                           opt.lambda_dssim)
                self._check_finite(step.first, loss)
                put_views(stats, mine, rows)
        with self.phase("backward"):
            model.add_gradients(rendered.backward(grad_canvas))
        self.comm.all_reduce(stats)  # each view's row comes from the rank that rendered it
        return rendered.statistics(cameras), stats

    def _autograd_step(self, step: Step, views: Sequence[View], gts: Sequence[torch.Tensor | None],
                       background: torch.Tensor) -> tuple[list[ScreenStatistics], torch.Tensor]:
        """The step through the reference exchange, differentiated by autograd."""
        opt, model = self.config.optimization, self.model
        cameras = [view.camera for view in views]
        stats = torch.zeros(len(views), 4, device=self.device)
        with self.phase("render"):
            rendered = self.exchange.render(model.gaussians(), cameras, background, model.active_sh_degree)
        total = None
        with self.phase("loss"):
            for b, image in rendered.images.items():
                loss, row = photometric_loss(image, gts[b], background, opt.lambda_dssim, fused=self.fused_kernels)
                stats[b] = row[0]
                total = loss if total is None else total + loss
        if total is not None:
            self._check_finite(step.first, total)
        with self.phase("backward"):
            rendered.backward(total)
        for param in model.params.values():  # a part no view saw still takes its Adam step
            if param.grad is None:
                param.grad = torch.zeros_like(param)
        self.comm.all_reduce(stats)
        return rendered.statistics(cameras), stats

    def _render_overflowed(self) -> bool:
        """Whether a render outgrew its budget on any rank: every rank then does the step again.
        The CUDA exchange's agreement also carries the control values given to its render (see
        :meth:`_before_step`); a stop asked for after that render is agreed a step later, on
        every rank alike."""
        overflowed, self._agreed_control = self.exchange.settle(super()._render_overflowed())
        return overflowed

    # ----- evaluation --------------------------------------------------------------------------------
    @torch.no_grad()
    def _evaluate(self, views: Sequence[View]) -> dict[str, float]:
        """Mean L1 and PSNR as :func:`trainer.train.evaluate_views`: each view rendered by one rank
        (as many at once as there are ranks), the per-view values summed in view order."""
        values = torch.zeros(len(views), 2, dtype=torch.float64)
        model, world = self.model, self.comm.world
        for start in range(0, len(views), world):
            chunk = views[start:start + world]
            rendered = self.exchange.render(model.gaussians(), [view.camera for view in chunk], self.background,
                                            model.active_sh_degree, differentiable=False,
                                            largest_part=model.largest_part())
            for b, image in rendered.images.items():
                image = image.clamp(0.0, 1.0)
                gt = view_image_float(self.scene.images.get(chunk[b].index).to(image.device), self.background)
                values[start + b, 0] = float(l1_loss(image, gt).double())
                values[start + b, 1] = float(psnr(image, gt).double())
        values = self.comm.sum_cpu(values)
        sums = {"l1": 0.0, "psnr": 0.0}
        for l1, peak in values.tolist():
            sums["l1"] += l1
            sums["psnr"] += peak
        return {key: value / max(len(views), 1) for key, value in sums.items()}

    # ----- saving (collective; rank 0 writes) ------------------------------------------------------
    def _gaussians_to_save(self) -> Gaussians | None:
        """Every part gathered to rank 0, in single-process order (collective)."""
        params = self.model.gathered_params()
        if params is None:
            return None
        return Gaussians(params["xyz"], params["f_dc"], params["f_rest"], params["opacity"], params["scaling"],
                         params["rotation"])

    def _model_state_to_save(self) -> dict[str, Any] | None:
        """The whole model's state gathered to rank 0 (collective); None on the other ranks."""
        return self.model.gathered_state()


class _WholeModelView:
    """The trainer as rank 0's hooks see it: the same object, with ``model`` the whole model."""

    def __init__(self, trainer: DistributedTrainer, model: GaussianModel):
        self._trainer = trainer
        self.model = model

    def __getattr__(self, name: str):
        return getattr(self._trainer, name)


class RankZeroHooks:
    """Rank 0's training hooks (the network viewer) in a multi-process run.

    Each step rank 0 asks :meth:`wants_model` (``hook.wants_model(trainer)``, True for a hook
    without that method) and the trainer tells every rank the answer; when it is yes, every
    rank calls this object, which sends its part to rank 0, where the hooks are called with the
    whole model. A hook that raises KeyboardInterrupt (stop with a save) becomes a stop request,
    which every rank honours before the step.
    """

    def __init__(self, comm: Communicator, hooks: list[TrainingHook]):
        self.comm = comm
        self.hooks = hooks if comm.rank == 0 else []

    def wants_model(self, trainer: DistributedTrainer) -> bool:
        """Rank 0's hooks want the model now (only rank 0 knows; False elsewhere)."""
        return any(getattr(hook, "wants_model", lambda _t: True)(trainer) for hook in self.hooks)

    def _whole_model(self, trainer: DistributedTrainer) -> GaussianModel | None:
        """The whole model, on rank 0 (a collective; None on the other ranks)."""
        params = trainer.model.gathered_params()
        if params is None:
            return None
        return GaussianModel({name: value.to(trainer.device) for name, value in params.items()},
                             trainer.model.max_sh_degree, trainer.model.active_sh_degree)

    def __call__(self, trainer: DistributedTrainer, iteration: int) -> None:
        """On every rank, when the hooks want the model (the trainer agreed on it)."""
        model = self._whole_model(trainer)
        if model is None:
            return
        view = _WholeModelView(trainer, model)
        for hook in self.hooks:
            try:
                hook(view, iteration)
            except KeyboardInterrupt:
                trainer.request_stop()

    def on_finish(self, trainer: DistributedTrainer) -> None:
        """On every rank at the end of training (a collective when rank 0's hooks want the model)."""
        if not self.comm.broadcast_flag(self.comm.rank == 0 and self.wants_model(trainer)):
            return
        model = self._whole_model(trainer)
        if model is None:
            return
        view = _WholeModelView(trainer, model)
        for hook in self.hooks:
            if hasattr(hook, "on_finish"):
                hook.on_finish(view)


def train_distributed(config: TrainConfig, comm: Communicator, hooks: Sequence[TrainingHook] = (),
                      log: Callable[[str], None] | None = None) -> TrainResult:
    """:func:`trainer.train.train` for one rank of a multi-process run."""
    trainer = DistributedTrainer(config, comm, hooks, log)
    try:
        return trainer.run()
    finally:
        if trainer.scene is not None:
            trainer.scene.close()
