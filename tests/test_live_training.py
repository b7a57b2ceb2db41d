"""In-viewer training (viewer/live/session.py) without a window: the background thread reaches
splat-train's result; pause, single step, save now, stop and errors behave as documented."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from rasterizer import read_ply
from test_train_run import assert_same_model, final_state
from test_train_support import write_tiny_scene
from trainer.cli.train import main as splat_train
from viewer.live.session import TrainingSession

ITERATIONS = 40
# Densification (which changes the number of Gaussians) and an opacity reset inside 40 steps.
QUICK = ["--densify_from_iter", "10", "--densification_interval", "10", "--opacity_reset_interval", "30",
         "--densify_until_iter", "35", "--position_lr_max_steps", "200"]


@pytest.fixture(scope="module")
def tiny_scene(tmp_path_factory) -> Path:
    return write_tiny_scene(tmp_path_factory.mktemp("live") / "scene")


def flags(scene: Path, model: Path, *extra: str) -> list[str]:
    return ["-s", str(scene), "-m", str(model), "--quiet", "--data_device", "cpu", "--backend", "reference",
            "--disable_viewer", "--seed", "3", *QUICK, *extra]


@pytest.fixture
def paused_session(tiny_scene, tmp_path):
    """A long run started paused before iteration 1 (stopped at the end of the test)."""
    session = TrainingSession.from_args(flags(tiny_scene, tmp_path / "m", "--iterations", "10000"),
                                        start_paused=True)
    session.start()
    assert session.wait_idle()
    yield session
    session.stop()


def wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def model_equals(gaussians, trainer) -> bool:
    live = trainer.model.gaussians().to("cpu").tensors()   # the trainer may run on a GPU
    return all(torch.equal(tensor, live[name]) for name, tensor in gaussians.tensors().items())


def test_background_training_reaches_splat_trains_gaussians(tiny_scene, tmp_path, cpu_only):
    common = ["--iterations", str(ITERATIONS), "--random_background", "--checkpoint_iterations", str(ITERATIONS)]
    assert splat_train(flags(tiny_scene, tmp_path / "cli", *common)) == 0
    # Publishing a snapshot at every boundary must not change the result.
    session = TrainingSession.from_args(flags(tiny_scene, tmp_path / "live", *common),
                                        snapshot_interval_s=0.0, stats_interval_s=0.0)
    session.start()
    session._thread.join(600)  # returns when training ends; a loaded machine is slow
    assert session.result.status == "completed" and session.error is None
    ply_cli, state_cli = final_state(tmp_path / "cli", ITERATIONS)
    ply_live, state_live = final_state(tmp_path / "live", ITERATIONS)
    assert ply_live == ply_cli
    assert_same_model(state_live, state_cli)
    assert sorted(p.name for p in (tmp_path / "live").iterdir()) == sorted(p.name for p in (tmp_path / "cli").iterdir())
    for name in ("input.ply", "cameras.json", "exposure.json"):
        assert (tmp_path / "live" / name).read_bytes() == (tmp_path / "cli" / name).read_bytes(), name
    stats = session.stats()
    assert (stats.status, stats.iteration, stats.total) == ("completed", ITERATIONS, ITERATIONS)
    assert stats.gaussians == len(read_ply(tmp_path / "live" / "point_cloud" / f"iteration_{ITERATIONS}" /
                                           "point_cloud.ply")) != 200  # densified
    assert session.snapshot().iteration == ITERATIONS and model_equals(session.snapshot().gaussians, session.trainer)


def test_no_iteration_runs_while_paused(paused_session):
    session = paused_session
    assert session.trainer.completed == 0 and session.stats().status == "paused"
    time.sleep(0.3)
    assert session.trainer.completed == 0
    session.resume()
    wait_for(lambda: session.trainer.completed >= 3)
    session.pause()
    assert session.wait_idle()
    stopped_at = session.trainer.completed
    time.sleep(0.3)
    assert session.trainer.completed == stopped_at
    stats = session.stats()
    assert (stats.status, stats.iteration, stats.total) == ("paused", stopped_at, 10000)
    assert stats.loss > 0 and stats.psnr > 0 and stats.steps_per_second > 0
    # While paused the snapshot is exactly the model at the boundary.
    assert session.snapshot().iteration == stopped_at
    assert model_equals(session.snapshot().gaussians, session.trainer)


def test_single_step_runs_exactly_one_iteration(paused_session):
    session = paused_session
    ran = []   # a hook after the session's: it sees the iterations the session let through
    session.trainer.hooks.append(lambda trainer, iteration: ran.append(iteration))
    session.step()
    assert session.wait_idle()
    assert session.trainer.completed == 1 and ran == [1]
    time.sleep(0.2)
    session.step(3)
    assert session.wait_idle()
    assert session.trainer.completed == 4 and ran == [1, 2, 3, 4]
    assert session.stats().iteration == 4 and session.stats().status == "paused"


def test_snapshots_are_copies_taken_at_boundaries(paused_session):
    """The render thread keeps a snapshot while densification changes the model: it must stay
    exactly as published (a view of the live tensors would change or tear)."""
    session = paused_session
    session.step(17)
    assert session.wait_idle()
    held = session.snapshot()
    kept = {name: tensor.clone() for name, tensor in held.gaussians.tensors().items()}
    assert held.iteration == 17 and model_equals(held.gaussians, session.trainer)
    # In-place optimiser steps in 18-21, densification at the end of 20 (before its step).
    session.step(4)
    assert session.wait_idle()
    latest = session.snapshot()
    assert latest.version > held.version and latest.iteration == 21
    assert len(latest.gaussians) != len(held.gaussians)
    assert all(torch.equal(held.gaussians.tensors()[name], tensor) for name, tensor in kept.items())
    assert model_equals(latest.gaussians, session.trainer)


def test_save_now_writes_the_current_state_atomically(paused_session):
    session = paused_session
    session.step(5)
    assert session.wait_idle()
    path = session.save_now().result(timeout=30)
    # Paused before iteration 6: the state after 5 iterations is splat-train's iteration_6.
    assert path == session.model_path / "point_cloud" / "iteration_6" / "point_cloud.ply"
    assert model_equals(read_ply(path), session.trainer)
    assert [p.name for p in path.parent.iterdir()] == ["point_cloud.ply"]   # no temporary left behind
    assert session.trainer.completed == 5 and str(path) in session.stats().message
    # While running: saved at the next boundary, training goes on.
    session.resume()
    running = session.save_now().result(timeout=30)
    assert running.is_file() and len(read_ply(running)) > 0
    wait_for(lambda: session.trainer.completed > int(running.parent.name.split("_")[1]))


def test_stop_saves_like_ctrl_c(paused_session):
    session = paused_session
    session.resume()
    wait_for(lambda: session.trainer.completed >= 4)
    result = session.stop()
    assert not session.is_alive()
    done = result.iteration
    assert result.status == "interrupted" and session.stats().status == "interrupted"
    model = session.model_path
    assert (model / "point_cloud" / f"iteration_{done + 1}" / "point_cloud.ply").is_file()
    assert result.checkpoint == model / f"chkpnt{done}.pth" and result.checkpoint.is_file()
    # After the end "save now" writes at once (the thread is gone).
    assert session.save_now().result(timeout=5).parent.name == f"iteration_{done + 1}"


def test_stop_while_paused_wakes_the_thread(paused_session):
    session = paused_session
    session.step(2)
    assert session.wait_idle()
    result = session.stop(timeout=30)
    assert result.status == "interrupted" and result.iteration == 2
    assert (session.model_path / "chkpnt2.pth").is_file()


def test_an_error_in_the_training_thread_is_one_line(tiny_scene, tmp_path, monkeypatch, capsys):
    import trainer.train as train_module

    real_render = train_module.render
    calls = []

    def failing_render(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("rasterizer exploded\nwith details")
        return real_render(*args, **kwargs)

    monkeypatch.setattr(train_module, "render", failing_render)
    session = TrainingSession.from_args(flags(tiny_scene, tmp_path / "m", "--iterations", "10"))
    session.start()
    session._thread.join(600)  # returns when training ends; a loaded machine is slow
    assert session.error == "RuntimeError: rasterizer exploded"
    stats = session.stats()
    assert stats.status == "error" and stats.message == session.error and stats.iteration == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["splat-view: training error: RuntimeError: rasterizer exploded"]
