"""Nothing a user does wrong loses their work: splat-train checks everything before it writes,
refuses to overwrite a trained model, survives failed saves (kept in memory, retried, rescued
elsewhere), stops and saves on SIGTERM as on Ctrl-C, and says what a run did at its end."""

from __future__ import annotations

import errno
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rasterizer import read_ply
from test_train_support import tiny_config, write_tiny_scene
from trainer import output_guard
from trainer import train as train_module
from trainer.cli import train as cli
from trainer.run_state import load_checkpoint
from trainer.train import train

REPO = Path(__file__).resolve().parent.parent
QUIET = ["--quiet", "--disable_viewer", "--data_device", "cpu", "--backend", "reference"]


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    return write_tiny_scene(tmp_path_factory.mktemp("safety") / "scene", train=4, test=1, points=60)


@pytest.fixture(scope="module")
def trained(scene, tmp_path_factory) -> Path:
    """A model folder trained for 4 iterations with a checkpoint (read-only use in tests:
    copy it before changing it)."""
    model = tmp_path_factory.mktemp("trained") / "m"
    assert cli.main(["-s", str(scene), "-m", str(model), "--iterations", "4", "--checkpoint_iterations", "4",
                     *QUIET]) == 0
    return model


def snapshot(folder: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every file below ``folder``."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def copy_model(source: Path, target: Path) -> Path:
    for relative, data in snapshot(source).items():
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        (target / relative).write_bytes(data)
    return target


def stderr_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


# ----- nothing is written before the inputs are known to be good ---------------------------------------
def test_a_typo_in_the_source_leaves_a_trained_folder_untouched(scene, trained, tmp_path, capsys):
    model = copy_model(trained, tmp_path / "m")
    before = snapshot(model)
    for argv in (["-s", str(tmp_path / "sceen")], ["-s", str(scene), "--start_checkpoint", str(tmp_path / "x.pth")],
                 ["-s", str(scene), "-d", "depths"]):
        assert cli.main([*argv, "-m", str(model), "--iterations", "2", *QUIET]) in (1, 2)
    assert snapshot(model) == before
    errors = stderr_lines(capsys)
    assert len(errors) == 3 and all(line.startswith("splat-train: error: ") for line in errors)


def test_a_bad_checkpoint_writes_nothing(scene, tmp_path, capsys):
    bad = tmp_path / "chkpnt9.pth"
    bad.write_bytes(b"not a checkpoint")
    model = tmp_path / "new"
    assert cli.main(["-s", str(scene), "-m", str(model), "--start_checkpoint", str(bad), *QUIET]) == 1
    assert not model.exists()
    assert str(bad) in capsys.readouterr().err


# ----- a trained model is never overwritten by accident --------------------------------------------
def test_a_second_run_into_a_trained_folder_is_refused(scene, trained, tmp_path, capsys):
    model = copy_model(trained, tmp_path / "m")
    before = snapshot(model)
    assert cli.main(["-s", str(scene), "-m", str(model), "--iterations", "2", *QUIET]) == 1
    (error,) = stderr_lines(capsys)
    assert error.startswith(f"splat-train: error: {model}: already holds a trained model")
    assert "--start_checkpoint" in error and "--overwrite" in error
    assert snapshot(model) == before


def test_overwrite_moves_the_previous_run_aside_and_deletes_nothing(scene, trained, tmp_path):
    model = copy_model(trained, tmp_path / "m")
    (model / "notes.txt").write_text("the user's own file")
    before = snapshot(model)
    assert cli.main(["-s", str(scene), "-m", str(model), "--iterations", "2", "--overwrite", *QUIET]) == 0
    (previous,) = model.glob("previous_*")
    moved = snapshot(previous)
    assert {k: v for k, v in before.items() if k != "notes.txt"} == moved   # every old file, byte for byte
    assert (model / "notes.txt").read_text() == "the user's own file"      # not the run's: left alone
    assert sorted(p.name for p in (model / "point_cloud").iterdir()) == ["iteration_2"]  # latest is the new run
    assert not (model / "chkpnt4.pth").exists()


def test_resuming_into_the_same_folder_is_allowed(scene, trained, tmp_path):
    model = copy_model(trained, tmp_path / "m")
    code = cli.main(["-s", str(scene), "-m", str(model), "--iterations", "6",
                     "--start_checkpoint", str(model / "chkpnt4.pth"), *QUIET])
    assert code == 0 and (model / "point_cloud" / "iteration_6" / "point_cloud.ply").is_file()


# ----- the output must take the first save before training starts -------------------------------------
def test_an_unwritable_output_is_reported_before_training(scene, tmp_path, monkeypatch, capsys):
    model = tmp_path / "m"
    (model / "point_cloud").mkdir(parents=True)
    real_mkstemp = output_guard.tempfile.mkstemp

    def read_only_point_cloud(*args, dir=None, **kwargs):
        if Path(dir).name == "point_cloud":
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(output_guard.tempfile, "mkstemp", read_only_point_cloud)
    started = []
    monkeypatch.setattr(cli, "viewer_hooks", lambda config: [lambda trainer, it: started.append(it)])
    assert cli.main(["-s", str(scene), "-m", str(model), "--iterations", "3", *QUIET]) == 1
    (error,) = stderr_lines(capsys)
    assert error == (f"splat-train: error: {model / 'point_cloud'}: cannot write there (Permission denied); "
                     "pick another -m or fix its permissions")
    assert started == [] and not (model / "cfg_args").exists()


def test_a_disk_without_room_for_the_first_save_is_reported_before_training(scene, tmp_path, monkeypatch, capsys):
    usage = output_guard.shutil.disk_usage(tmp_path)
    monkeypatch.setattr(output_guard.shutil, "disk_usage", lambda path: usage._replace(free=1_000_000))
    assert cli.main(["-s", str(scene), "-m", str(tmp_path / "m"), "--iterations", "3", *QUIET]) == 1
    (error,) = stderr_lines(capsys)
    assert "only 1.0 MB free on its disk" in error and "the first save needs about" in error
    assert not (tmp_path / "m" / "cfg_args").exists()


def test_save_size_estimate_covers_a_ply_and_a_checkpoint(tmp_path):
    from rasterizer.gaussians import Gaussians

    gaussians = Gaussians.from_points(torch.rand(1000, 3).numpy(), torch.rand(1000, 3).numpy(), 3)
    from rasterizer.ply import write_ply

    write_ply(tmp_path / "p.ply", gaussians)
    estimate = output_guard.save_size_estimate(1000, 3) - output_guard.SAVE_MARGIN_BYTES
    assert estimate > (tmp_path / "p.ply").stat().st_size * 3


# ----- a save that fails later does not lose the run ---------------------------------------------------
def _failing_writes(monkeypatch, fail):
    """Make write_ply and torch.save raise ENOSPC whenever ``fail(path)`` says so."""
    real_write_ply, real_write_checkpoint = train_module.write_ply, train_module.write_checkpoint

    def write_ply(path, gaussians):
        if fail(Path(path)):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write_ply(path, gaussians)

    def write_checkpoint(path, payload):
        if fail(Path(path)):
            raise RuntimeError("[enforce fail at inline_container.cc:783] . PytorchStreamWriter failed writing "
                               "file data/0: file write failed")   # what torch.save says on a full disk
        real_write_checkpoint(path, payload)

    monkeypatch.setattr(train_module, "write_ply", write_ply)
    monkeypatch.setattr(train_module, "write_checkpoint", write_checkpoint)


def test_a_failed_save_is_kept_in_memory_and_retried(scene, tmp_path, monkeypatch, capsys):
    model = tmp_path / "m"
    attempts: dict[Path, int] = {}

    def first_attempt_fails(path):   # the saves of iteration 3 fail once
        attempts[path] = attempts.get(path, 0) + 1
        return attempts[path] == 1 and (path.name == "chkpnt3.pth" or path.parent.name == "iteration_3")

    _failing_writes(monkeypatch, first_attempt_fails)
    result = train(tiny_config(scene, model, "--iterations", "8", "--save_iterations", "3",
                               "--checkpoint_iterations", "3", "--test_iterations", "-1"))
    assert result.status == "completed" and result.rescued_to is None and result.lost_saves == []
    errors = stderr_lines(capsys)
    assert len(errors) == 2 and "No space left on device" in errors[0] and "file write failed" in errors[1]
    assert "training goes on with the model kept in memory" in errors[0]
    # Both were written by the retry at the next save, with the state of iteration 3.
    assert load_checkpoint(model / "chkpnt3.pth", torch.device("cpu"))["iteration"] == 3
    assert len(read_ply(model / "point_cloud" / "iteration_3" / "point_cloud.ply")) == 60
    assert (model / "point_cloud" / "iteration_8" / "point_cloud.ply").is_file()


def test_a_newer_save_supersedes_one_that_never_worked(scene, tmp_path, monkeypatch):
    model = tmp_path / "m"
    _failing_writes(monkeypatch, lambda path: path.parent.name == "iteration_3")
    result = train(tiny_config(scene, model, "--iterations", "8", "--save_iterations", "3", "--test_iterations", "-1"))
    assert result.status == "completed" and result.lost_saves == ["point_cloud/iteration_3/point_cloud.ply"]
    assert cli.exit_code(result) == 1


def test_a_folder_that_keeps_failing_is_rescued_elsewhere(scene, tmp_path, monkeypatch, capsys):
    model = tmp_path / "m"
    rescue_root = tmp_path / "rescue"
    monkeypatch.setenv(output_guard.RESCUE_ENV, str(rescue_root))
    _failing_writes(monkeypatch, lambda path: model in path.parents)
    monkeypatch.setattr(cli, "viewer_hooks", lambda config: [])
    code = cli.main(["-s", str(scene), "-m", str(model), "--iterations", "5", "--checkpoint_iterations", "5",
                     "--test_iterations", "-1", "--quiet", "--data_device", "cpu", "--backend", "reference"])
    assert code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (rescued,) = rescue_root.iterdir()
    assert f"saved point_cloud/iteration_5/point_cloud.ply, chkpnt5.pth in {rescued} instead" in err
    # A complete model folder: splat-render and --start_checkpoint work from it.
    assert len(read_ply(rescued / "point_cloud" / "iteration_5" / "point_cloud.ply")) > 0
    assert load_checkpoint(rescued / "chkpnt5.pth", torch.device("cpu"))["iteration"] == 5
    assert (rescued / "cfg_args").is_file() and (rescued / "cameras.json").is_file()


def test_ctrl_c_with_a_full_disk_rescues_the_stop_save(scene, tmp_path, monkeypatch, capsys):
    model = tmp_path / "m"
    monkeypatch.setenv(output_guard.RESCUE_ENV, str(tmp_path / "rescue"))
    _failing_writes(monkeypatch, lambda path: model in path.parents)

    def interrupt(trainer, iteration):
        if iteration == 3:
            raise KeyboardInterrupt

    result = train(tiny_config(scene, model, "--iterations", "9"), hooks=[interrupt])
    assert result.status == "interrupted" and result.rescued_to is not None
    assert result.checkpoint == result.rescued_to / "chkpnt2.pth" and result.checkpoint.is_file()
    assert (result.rescued_to / "point_cloud" / "iteration_3" / "point_cloud.ply").is_file()


def _limited_file_size(limit: int):
    def apply() -> None:  # in the child: writes past `limit` bytes fail with EFBIG, as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_real_write_failures_never_give_a_traceback(scene, tmp_path):
    """The operating system refuses every file over 8 KB (RLIMIT_FSIZE): input files fit, the
    PLY and checkpoint do not, anywhere. splat-train says so in a few lines, exit status 1."""
    env = {**os.environ, "PYTHONPATH": str(REPO), output_guard.RESCUE_ENV: str(tmp_path / "rescue"),
           "HOME": str(tmp_path / "home"), "TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "tmp").mkdir()
    process = subprocess.run([sys.executable, "-B", "-m", "trainer.cli.train", "-s", str(scene), "-m",
                              str(tmp_path / "m"), "--iterations", "3", "--checkpoint_iterations", "3", *QUIET],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
                             preexec_fn=_limited_file_size(8192))
    assert process.returncode == 1, process.stderr
    assert "Traceback" not in process.stderr
    assert "File too large" in process.stderr and "Could not save" in process.stderr
    assert (tmp_path / "m" / "cfg_args").is_file()


# ----- SIGTERM is Ctrl-C --------------------------------------------------------------------------------
def test_sigterm_stops_at_the_iteration_boundary_and_saves(scene, tmp_path, capsys):
    def terminate(trainer, iteration):
        if iteration == 3:
            signal.raise_signal(signal.SIGTERM)

    previous = signal.getsignal(signal.SIGTERM)
    result = train(tiny_config(scene, tmp_path / "m", "--iterations", "20"), hooks=[terminate])
    assert result.status == "interrupted" and result.iteration == 2 and result.stop_signal == signal.SIGTERM
    assert cli.exit_code(result) == 143
    assert (tmp_path / "m" / "chkpnt2.pth").is_file()
    assert "SIGTERM: stopping after this iteration and saving" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is previous


def test_sigterm_to_the_process_saves_and_resumes(scene, tmp_path):
    model = tmp_path / "m"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-m", "trainer.cli.train", "-s", str(scene), "-m", str(model),
                                "--iterations", "100000", "--disable_viewer", "--data_device", "cpu",
                                "--test_iterations", "-1", "--backend", "reference"],
                               cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in process.stderr:   # the progress bar is on stderr: the loop has started
        if "Training progress" in line:
            break
    time.sleep(1.0)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    assert "SIGTERM: stopping after this iteration and saving" in err and "Traceback" not in err
    (checkpoint,) = model.glob("chkpnt*.pth")
    iteration = load_checkpoint(checkpoint, torch.device("cpu"))["iteration"]
    assert (model / "point_cloud" / f"iteration_{iteration + 1}" / "point_cloud.ply").is_file()
    target = iteration + 3
    resumed = train(tiny_config(read_cfg_source(model), model, "--iterations", str(target),
                                "--start_checkpoint", str(checkpoint), "--test_iterations", "-1"))
    assert resumed.status == "completed" and resumed.iteration == target


def read_cfg_source(model: Path) -> Path:
    from rasterizer.model_folder import read_cfg_args

    return Path(read_cfg_args(model)["source_path"])


# ----- what a run did -----------------------------------------------------------------------------------
def test_zero_iterations_says_what_it_did(scene, tmp_path, capsys):
    model = tmp_path / "m"
    assert cli.main(["-s", str(scene), "-m", str(model), "--iterations", "0", "--disable_viewer"]) == 0
    out = capsys.readouterr().out
    assert "--iterations 0: no training step ran" in out and "no point_cloud/" in out
    assert (model / "cfg_args").is_file() and not (model / "point_cloud").exists()


def test_the_summary_reports_time_rate_count_metrics_and_files(scene, tmp_path, capsys):
    model = tmp_path / "m"
    assert cli.main(["-s", str(scene), "-m", str(model), "--iterations", "5", "--eval", "--test_iterations", "2",
                     "--disable_viewer", "--data_device", "cpu"]) == 0
    out = capsys.readouterr().out
    summary = out[out.index("Training complete."):].splitlines()
    assert summary[0].startswith("Training complete. 5 steps in ") and " steps/s); " in summary[0]
    assert summary[0].endswith(" Gaussians.")
    # --eval: the last iteration is evaluated although --test_iterations does not list it.
    assert summary[1].startswith("Test views at iteration 5: L1 ") and " PSNR " in summary[1]
    assert summary[2] == f"Saved in {model}: point_cloud/iteration_5/point_cloud.ply"
    assert "[ITER 5] Evaluating test" in out


def test_nothing_to_train_after_a_finished_checkpoint(scene, trained, tmp_path, capsys):
    model = copy_model(trained, tmp_path / "m")
    assert cli.main(["-s", str(scene), "-m", str(model), "--iterations", "4", "--disable_viewer",
                     "--start_checkpoint", str(model / "chkpnt4.pth")]) == 0
    assert "Nothing to train: the checkpoint is at iteration 4 and --iterations is 4" in capsys.readouterr().out
