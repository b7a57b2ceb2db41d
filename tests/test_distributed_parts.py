"""The parts of multi-process training, each run in a few gloo processes on the CPU and compared
with one process: the partitioned model's densification and rebalancing, the exchange of
projected Gaussians (images, gradients, screen-space statistics), and rank 0's hooks.

(The end-to-end runs are in test_train_distributed.py.)
"""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from rasterizer import Camera, Gaussians, look_at, render
from trainer.batching import view_shares
from trainer.config import OptimizationParams
from trainer.model import PARAM_NAMES, GaussianModel

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def spawn(function, world: int, *args, backend: str = "gloo") -> None:
    """Run ``function(comm, *args)`` in ``world`` processes joined by gloo on the CPU (one
    thread each), or by NCCL with one GPU each."""
    mp.spawn(_entry, args=(world, free_port(), backend, function, args), nprocs=world, join=True)


def _entry(rank: int, world: int, port: int, backend: str, function, args) -> None:
    from trainer.distributed.comm import Communicator

    torch.set_num_threads(1)
    device = torch.device("cpu")
    if backend == "nccl":
        torch.cuda.set_device(rank)
        device = torch.device("cuda", rank)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    control = dist.new_group(backend="gloo") if backend == "nccl" else dist.group.WORLD
    try:
        function(Communicator(rank, world, rank, device, backend, control), *args)
    finally:
        dist.destroy_process_group()


def random_gaussians(n: int, seed: int, degree: int = 1) -> Gaussians:
    generator = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.randn(*shape, generator=generator)  # noqa: E731
    return Gaussians(means=rand(n, 3) * 0.8, sh_dc=rand(n, 1, 3) * 0.5, sh_rest=rand(n, (degree + 1) ** 2 - 1, 3) * 0.2,
                     opacity_logits=rand(n) * 1.5, log_scales=rand(n, 3) * 0.5 - 2.5, quaternions=rand(n, 4))


def trained_model(n: int, seed: int) -> tuple[GaussianModel, dict]:
    """A model after one Adam step with densification statistics, and the inputs to rebuild it."""
    generator = torch.Generator().manual_seed(seed + 1)
    tensors = random_gaussians(n, seed).tensors()
    tensors["log_scales"] = torch.randn(n, 3, generator=generator) - 3.5        # some below the split size
    tensors["opacity_logits"][::7] = -7.0                                         # some to prune
    model = GaussianModel.from_gaussians(Gaussians(**tensors))
    model.training_setup(OptimizationParams(), spatial_lr_scale=2.0, batch_size=2)
    grads = {name: torch.randn(p.shape, generator=generator) * 1e-3 for name, p in model.params.items()}
    statistics = {"grad_accum": torch.rand(n, generator=generator) * 8e-4,
                  "denom": torch.randint(0, 4, (n,), generator=generator).float(),
                  "max_radii": torch.rand(n, generator=generator) * 40}
    return model, {"grads": grads, "statistics": statistics}


def step_and_fill(model: GaussianModel, inputs: dict, rows: slice) -> None:
    for name, param in model.params.items():
        param.grad = inputs["grads"][name][rows].clone()
    model.step()
    for key, value in inputs["statistics"].items():
        setattr(model, key, value[rows].clone())


def _densify_matches_one_process(comm, n: int, cap: int | None) -> None:
    from trainer.distributed.partition import PartitionedGaussianModel, part_range

    one, inputs = trained_model(n, seed=3)
    step_and_fill(one, inputs, slice(None))
    whole, _ = trained_model(n, seed=3)
    part = PartitionedGaussianModel.part_of(whole, comm, torch.device("cpu"))
    part.training_setup(OptimizationParams(), spatial_lr_scale=2.0, batch_size=2)
    start, stop = part_range(n, comm.world, comm.rank)
    assert start % 64 == 0 and len(part) == stop - start
    step_and_fill(part, inputs, slice(start, stop))
    reports = []
    for model in (one, part):
        torch.manual_seed(11)
        reports.append(model.densify_and_prune(2e-4, 0.005, 2.0, 20, cap, fix_quirks=True))
        model.reset_opacity()
    assert part.total == len(one) != n
    assert reports[0].cloned > 0 and reports[0].split > 0 and reports[0].pruned > 0
    assert reports[1].capped == reports[0].capped == (cap is not None)
    assert torch.equal(part.keys, torch.arange(*part_range(part.total, comm.world, comm.rank)))
    state = part.gathered_state()
    if comm.rank == 0:
        expected = one.state_dict()
        for name in PARAM_NAMES:
            assert torch.equal(state["params"][name], expected["params"][name]), name
        for key in ("grad_accum", "denom", "max_radii"):
            assert torch.equal(state[key], expected[key]), key
        for index, entry in expected["optimizer"]["state"].items():
            for key, value in entry.items():
                assert torch.equal(state["optimizer"]["state"][index][key], value), (index, key)
    # The random generator advanced as in one process (every rank drew the whole model's children).
    assert torch.equal(torch.get_rng_state(), _rng_after_one_process(n, cap))


def _rng_after_one_process(n: int, cap: int | None) -> torch.Tensor:
    one, inputs = trained_model(n, seed=3)
    step_and_fill(one, inputs, slice(None))
    torch.manual_seed(11)
    one.densify_and_prune(2e-4, 0.005, 2.0, 20, cap, fix_quirks=True)
    return torch.get_rng_state()


@pytest.mark.parametrize("world, cap", [(3, None), (2, 820)])
def test_partitioned_densification_is_one_process_densification(world, cap):
    """Clone, split (random children), prune, the --max_gaussians cap and the opacity reset on
    parts of a model give, gathered, the state one process has: parameters, Adam moments and
    statistics bit for bit, in the same order."""
    spawn(_densify_matches_one_process, world, 700, cap)


def _exchange_matches_one_process(comm, count: int) -> None:
    from trainer.distributed.exchange import ReferenceExchange
    from trainer.distributed.partition import PartitionedGaussianModel, part_range

    gaussians = random_gaussians(600, seed=5, degree=2)
    cameras = [Camera(48, 40, 45, 45, 24, 20, look_at([0.2 * v - 0.3, 0.4, -3.0], [0, 0, 0])) for v in range(count - 1)]
    cameras.append(Camera(40, 32, 38, 38, 20, 16, look_at([0.5, -0.4, -2.6], [0, 0, 0])))  # another size
    background = torch.tensor([0.1, 0.3, 0.6])
    weights = [torch.linspace(0.5 + b, 1.5 + b, 3 * c.height * c.width).reshape(3, c.height, c.width)
               for b, c in enumerate(cameras)]
    # One process: each view rendered, the weighted sum of every image, one backward.
    leaves = {name: t.clone().requires_grad_(True) for name, t in gaussians.tensors().items()}
    outputs = [render(Gaussians(**leaves), camera, background, sh_degree=2, backend="reference") for camera in cameras]
    sum((out.image * w).sum() for out, w in zip(outputs, weights)).backward()
    # The ranks: each its part, each view rendered by one of them.
    model = PartitionedGaussianModel.part_of(GaussianModel.from_gaussians(gaussians), comm, torch.device("cpu"))
    start, stop = part_range(600, comm.world, comm.rank)
    rendered = ReferenceExchange(comm, antialiasing=False).render(model.gaussians(), cameras, background, 2)
    mine = list(view_shares(len(cameras), comm.world)[comm.rank])
    assert sorted(rendered.images) == mine
    for b, image in rendered.images.items():
        assert torch.equal(image.detach(), outputs[b].image.detach()), b
    losses = [(image * weights[b]).sum() for b, image in rendered.images.items()]
    rendered.backward(sum(losses) if losses else None)
    for name, leaf in zip(("xyz", "scaling", "rotation", "opacity", "f_dc", "f_rest"),
                          ("means", "log_scales", "quaternions", "opacity_logits", "sh_dc", "sh_rest")):
        expected = leaves[leaf].grad[start:stop]
        got = model.params[name].grad
        assert torch.allclose(got, expected, rtol=1e-5, atol=1e-9), name
    statistics = rendered.statistics(cameras)
    groups = (list(range(count - 1)), [count - 1])
    assert [s.means2d_grad.shape[0] for s in statistics] == [len(group) for group in groups]
    for s, views in zip(statistics, groups):
        for row, b in enumerate(views):
            assert torch.equal(s.radii[row], outputs[b].radii[start:stop])
            assert torch.allclose(s.means2d_grad[row], outputs[b].means2d.grad[start:stop], rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("world, views", [(2, 4), (3, 2)])
def test_exchange_renders_and_differentiates_as_one_process(world, views):
    """Views of two image sizes rendered from Gaussians spread over the ranks: every image is
    one process's image bit for bit, and every rank gets its Gaussians' parameter and
    screen-space gradients (summed over the views; with three ranks and two views, one rank
    renders nothing and still takes part in both exchanges)."""
    spawn(_exchange_matches_one_process, world, views)


def _rank_zero_hooks(comm, source: str, root: str) -> None:
    from pathlib import Path

    from test_train_support import tiny_config
    from trainer.distributed.trainer import DistributedTrainer

    seen = []

    class Hook:
        def __init__(self):
            self.calls = 0

        def wants_model(self, trainer):
            return self.calls < 3

        def __call__(self, trainer, iteration):
            self.calls += 1
            seen.append((iteration, len(trainer.model), trainer.gaussian_count()))
            if self.calls == 3:
                raise KeyboardInterrupt  # the network viewer's way to stop with a save

    config = tiny_config(Path(source), Path(root) / "m", "--iterations", "40", "--batch_size", "2",
                         "--test_iterations", "-1", "--disable_viewer")
    trainer = DistributedTrainer(config, comm, hooks=[Hook()] if comm.rank == 0 else [])
    result = trainer.run()
    trainer.scene.close()
    assert result.status == "interrupted"
    assert result.iteration == 4  # stopped before the third step, on every rank
    if comm.rank == 0:
        assert [iteration for iteration, _, _ in seen] == [1, 3, 5]
        assert all(count == total == result.num_gaussians for _, count, total in seen)
        assert (Path(root) / "m" / "chkpnt4.pth").is_file()


def test_rank_zero_hooks_see_the_whole_model_and_stop_every_rank(tmp_path):
    from test_train_support import write_tiny_scene

    source = write_tiny_scene(tmp_path / "scene")
    spawn(_rank_zero_hooks, 2, str(source), str(tmp_path))


# ----- the CUDA exchange's tensor code, on the CPU ---------------------------------------------------
def test_packed_parameter_rows_unpack_to_the_same_tensors():
    """A parameter group's rows travel as one [rows, columns] tensor; taken apart they are the
    tensors they were, shapes and bits, with rows or without."""
    from trainer.distributed.partition import pack_rows, unpack_rows

    for rows in (5, 0):
        tensors = [torch.randn(rows, 15, 3), torch.randn(rows, 1, 3), torch.randn(rows), torch.randn(rows, 4)]
        packed = pack_rows(tensors)
        assert packed.shape == (rows, 45 + 3 + 1 + 4)
        for got, want in zip(unpack_rows(packed, tensors), tensors):
            assert got.shape == want.shape and torch.equal(got, want)
    like = [torch.zeros(0, 15, 3), torch.zeros(0)]  # the shapes of a part that sent nothing
    arrived = unpack_rows(torch.arange(2 * 46.0).reshape(2, 46), like)
    assert arrived[0].shape == (2, 15, 3) and arrived[1].tolist() == [45.0, 91.0]


def test_compaction_slots_put_each_views_sent_rows_first_in_order():
    from trainer.distributed.exchange import compaction_slots

    generator = torch.Generator().manual_seed(3)
    sent = torch.rand(3, 50, generator=generator) < 0.4
    sent[2] = False  # a view nothing reaches
    for room in (50, 12, 1):
        slots = compaction_slots(sent, room)
        for b in range(3):
            rows = torch.nonzero(sent[b])[:, 0].tolist()
            expected = [3 * room] * 50
            for rank_in_view, row in enumerate(rows[:room]):
                expected[row] = b * room + rank_in_view
            assert slots[b].tolist() == expected, (room, b)


def test_row_budget_room_starts_at_the_largest_part_and_only_grows():
    from trainer.distributed.exchange import RowBudget

    budget = RowBudget(headroom=1.25, minimum=8)
    assert budget.room(500) == 500                 # nothing counted yet: every Gaussian fits
    budget.grow(100)
    assert (budget.largest, budget.room(500), budget.room(60)) == (100, 125, 60)
    budget.grow(40)                                # a smaller count never shrinks the room
    assert budget.room(500) == 125
    budget = RowBudget(headroom=1.25, minimum=8)
    budget.grow(2)
    assert budget.room(500) == 8                   # the minimum
    with pytest.raises(ValueError, match="RowBudget headroom"):
        RowBudget(headroom=0.5)


def test_packed_rows_keep_every_bit_of_the_integer_columns():
    """The exchange moves tile rectangles and counts as float bits: a copy must not change them,
    also where the bits read as a NaN or a denormal float."""
    from trainer.distributed.exchange import PACKED_COLUMNS, _packed_rows, _unpacked

    views, n = 2, 7
    floats = [torch.randn(views, n, width) for width in (2, 4, 3)] + [torch.randn(views, n) for _ in range(2)]
    rects = torch.tensor([0x7FC00001, -1, 1, 0, 2**31 - 1, -(2**31), 0x00000003], dtype=torch.int32)
    rects = rects.repeat(views, 4).reshape(views, n, 4)
    touched = torch.arange(views * n, dtype=torch.int32).reshape(views, n) - 3
    packed = _packed_rows((*floats, torch.zeros(views, n, dtype=torch.int32), rects, touched))
    assert packed.shape == (views, n, PACKED_COLUMNS)
    # through the exchange's copies: compaction into a buffer and back
    buffer = packed.new_zeros(views * n + 1, PACKED_COLUMNS)
    buffer.index_copy_(0, torch.arange(views * n), packed.reshape(-1, PACKED_COLUMNS))
    unpacked = _unpacked(buffer[:-1].reshape(views, n, PACKED_COLUMNS))
    for got, want in zip(unpacked, (*floats, rects, touched)):
        assert got.dtype == want.dtype and torch.equal(got, want)


# ----- on GPUs (NCCL): skipped without them ----------------------------------------------------------
def _cuda_exchange_matches_one_gpu(comm) -> None:
    from rasterizer.cuda import render_for_training
    from trainer.distributed.exchange import CudaExchange
    from trainer.distributed.partition import PartitionedGaussianModel, part_range

    gaussians = random_gaussians(20_000, seed=8, degree=3).to("cuda")
    cameras = [Camera(160, 120, 150, 150, 80, 60, look_at([0.3 * v - 0.4, 0.3, -3.0], [0, 0, 0])) for v in range(3)]
    cameras.append(Camera(128, 96, 120, 120, 64, 48, look_at([0.6, -0.4, -2.6], [0, 0, 0])))
    background = torch.tensor([0.1, 0.3, 0.6], device="cuda")
    grads_in = [torch.linspace(-1.0 + b, 1.0 + b, 3 * c.height * c.width, device="cuda").reshape(3, c.height, c.width)
                for b, c in enumerate(cameras)]
    expected_images, expected, expected_means2d = [], None, []
    for camera, grad in zip(cameras, grads_in):
        single = render_for_training(gaussians, camera, background, 3)
        grads = single.backward(grad)
        expected_images.append(single.output.image)
        expected_means2d.append(single.output.means2d.grad)
        expected = grads if expected is None else [a + b for a, b in zip(expected, grads)]
    model = PartitionedGaussianModel.part_of(GaussianModel.from_gaussians(gaussians.to("cpu")), comm, comm.device)
    start, stop = part_range(len(gaussians), comm.world, comm.rank)
    exchange = CudaExchange(comm, antialiasing=False)
    rendered = exchange.render(model.gaussians(), cameras, background, 3, control=[comm.rank, 7])  # room: every row
    assert exchange.settle(False) == (False, [comm.world - 1, 7])
    assert 0 < exchange.budget.largest <= model.largest_part()
    # A room too small for the visible Gaussians: every rank learns it, and the room grows.
    exchange.budget.capacity = 10
    exchange.render(model.gaussians(), cameras, background, 3, largest_part=model.largest_part())
    assert exchange.settle(False)[0]
    assert exchange.budget.capacity > exchange.budget.largest
    rendered = exchange.render(model.gaussians(), cameras, background, 3, largest_part=model.largest_part())
    assert not exchange.settle(False)[0]
    # This rank's views on one canvas (rank 1's: 160 x 120 and 128 x 96), each in its corner.
    grad_canvas = torch.zeros_like(rendered.canvas) if rendered.images else None
    for j, (b, image) in enumerate(rendered.images.items()):
        assert torch.equal(image, expected_images[b]), b
        assert torch.equal(rendered.canvas[j, :, :cameras[b].height, :cameras[b].width], image), b
        grad_canvas[j, :, :cameras[b].height, :cameras[b].width] = grads_in[b]
    grads = rendered.backward(grad_canvas)
    relative = lambda a, b: ((a - b).norm() / b.norm().clamp_min(1e-20)).item()  # noqa: E731
    for index, (grad, whole) in enumerate(zip(grads, expected)):
        assert relative(grad, whole[start:stop]) <= 1e-5, index
    means2d = rendered.means2d_grads()
    for b in range(len(cameras)):
        assert relative(means2d[b], expected_means2d[b][start:stop]) <= 1e-5, b


@pytest.mark.skipif(not torch.cuda.is_available() or not dist.is_nccl_available(), reason="needs an NVIDIA GPU and NCCL")
def test_cuda_exchange_renders_and_differentiates_as_one_gpu():
    """The CUDA exchange (explicit backward, no autograd) on every GPU of the machine (up to two):
    images as one GPU renders them, parameter and screen-space gradients as the sum of
    single-camera backwards (up to the order of float atomics)."""
    spawn(_cuda_exchange_matches_one_gpu, min(2, torch.cuda.device_count()), backend="nccl")


class _Log:
    @staticmethod
    def log(_message: str) -> None:
        pass


def _accept_client(server) -> None:
    """Wait until the test's client has connected (so that training starts with it)."""
    import time

    deadline = time.monotonic() + 60
    while not server.wants_model(_Log()):
        assert time.monotonic() < deadline, "the client did not connect"
        time.sleep(0.01)


def _viewer_on_rank_zero(comm, source: str, model: str, port: int) -> None:
    import itertools
    from pathlib import Path

    from test_train_support import tiny_config
    from trainer.distributed.trainer import DistributedTrainer
    from trainer.network.server import NetworkViewer

    hooks = []
    if comm.rank == 0:
        # a clock a second ahead at every reading: the statistics (and the iteration they
        # name) are never a cached reading of an earlier step
        ticks = itertools.count()
        hooks = [NetworkViewer("127.0.0.1", port, idle_timeout=30, clock=lambda: float(next(ticks))).listen()]
        _accept_client(hooks[0])
    config = tiny_config(Path(source), Path(model), *VIEWER_RUN)
    trainer = DistributedTrainer(config, comm, hooks=hooks)
    assert trainer.run().status == "completed"
    trainer.scene.close()
    for hook in hooks:
        hook.close()


VIEWER_RUN = ("--iterations", "12", "--batch_size", "2", "--test_iterations", "-1")


STATS = {"splatview": {"version": 1, "want": ["stats"]}}


def _client(port: int, replies: list, requests: int = 3) -> None:
    """Ask for ``requests`` images (with the extension's statistics, which name the iteration
    each image shows); ``replies`` gets (iteration, image bytes)."""
    import time

    from test_network_server import reply, request_bytes
    from trainer.network.protocol import read_extension

    deadline = time.monotonic() + 60
    while True:
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            break
        except OSError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    with sock:
        for _ in range(requests):
            sock.sendall(request_bytes(train=1, **STATS))
            image, _ = reply(sock)
            header, _ = read_extension(sock)
            replies.append((header["stats"]["iteration"], image))


class _RenderEveryIteration:
    """A hook rendering what the network viewer would send for the test client's request, at
    every iteration of one process's run (keyed by views trained, as the statistics are)."""

    def __init__(self):
        from test_network_server import request_bytes
        from trainer.network.protocol import decode_request
        from trainer.network.server import NetworkViewer

        self.viewer = NetworkViewer("127.0.0.1", 0)
        self.request = decode_request(request_bytes(train=1)[4:])
        self.images: dict[int, bytes] = {}

    def __call__(self, trainer, iteration: int) -> None:
        self.images[trainer.completed] = self.viewer._render(trainer, self.request)


def test_network_viewer_is_served_by_rank_zero_with_the_whole_model(tmp_path, cpu_only):
    """A network viewer client connected to rank 0 of two processes receives the images one
    process's viewer would send at the same iteration (the whole model is gathered to rank 0)."""
    import threading

    from test_train_support import tiny_config, write_tiny_scene
    from trainer.train import Trainer

    source = write_tiny_scene(tmp_path / "scene")
    recorder = _RenderEveryIteration()
    # as the two processes train: on the CPU, one thread each (threads round sums differently)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trainer = Trainer(tiny_config(source, tmp_path / "one", *VIEWER_RUN, "--disable_viewer"), hooks=[recorder])
        assert trainer.run().status == "completed"
        recorder(trainer, trainer.completed)   # a request arriving after the last step sees this
    finally:
        torch.set_num_threads(threads)
    trainer.scene.close()

    port = free_port()
    replies = []
    client = threading.Thread(target=_client, args=(port, replies))
    client.start()
    spawn(_viewer_on_rank_zero, 2, str(source), str(tmp_path / "two"), port)
    client.join(60)
    assert len(replies) == 3
    for iteration, image in replies:
        assert image == recorder.images[iteration], f"image at iteration {iteration}"
    assert len(set(recorder.images.values())) > 1  # the model changes between iterations
