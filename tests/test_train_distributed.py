"""Training one model with several processes: torchrun (gloo on the CPU, reference backend).

The proof the issue asks for: two processes train a ``shared/data`` scene and produce the
same Gaussians as one process with the same ``--batch_size``; here they are the same bit for
bit (PLY bytes and checkpoint tensors), as are the evaluation lines. Then: checkpoints move
between process counts, Ctrl-C stops every rank at one boundary with a save, a dead rank ends
the run with one clear line, and the ``--gpus`` errors.

Every process runs one thread (torchrun's default for several processes), the single process
too: the CPU kernels split work between threads, which changes float rounding.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from trainer.cli.train import main
from trainer.run_state import load_checkpoint

REPO = Path(__file__).resolve().parent.parent
ITERATIONS, HALF = 120, 60
FLAGS = ["-r", "8", "-w", "--eval", "--data_device", "cpu", "--backend", "reference", "--disable_viewer",
         "--iterations", str(ITERATIONS), "--batch_size", "2", "--random_init_points", "500",
         "--densify_from_iter", "20", "--densification_interval", "20", "--opacity_reset_interval", "60",
         "--densify_until_iter", "100", "--test_iterations", str(HALF), str(ITERATIONS), "--save_iterations", str(HALF),
         "--checkpoint_iterations", str(HALF), str(ITERATIONS)]
# The single-process run also checkpoints every step from here to HALF, for the Ctrl-C test.
STOP_AFTER = 20
TIMEOUT = 600

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")


def environment() -> dict:
    env = {key: value for key, value in os.environ.items()
           if key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")}
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    return env


def train_command(processes: int) -> list[str]:
    if processes == 1:
        return [sys.executable, "-m", "trainer.cli.train"]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
            "-m", "trainer.cli.train"]


def launcher_command(processes: int, model: Path) -> list[str]:
    """``splat-train --gpus N``'s launcher (run_torchrun), here for CPU processes."""
    script = ("import sys; from trainer.distributed import run_torchrun; "
              f"sys.exit(run_torchrun({processes}, sys.argv[1:], {str(model)!r}))")
    return [sys.executable, "-c", script]


def start(processes: int, source: Path, model: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([*train_command(processes), "-s", str(source), "-m", str(model), *FLAGS, *extra],
                            cwd=REPO, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> subprocess.CompletedProcess:
    stdout, stderr = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 0, f"{' '.join(map(str, process.args))} exited with {process.returncode}:\n" \
                                    f"{stdout[-1500:]}\n{stderr[-3000:]}"
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def train(processes: int, source: Path, model: Path, *extra: str) -> subprocess.CompletedProcess:
    return finish(start(processes, source, model, *extra))


def evaluation_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (result.stdout + result.stderr).splitlines() if "Evaluating" in line]


@pytest.fixture(scope="module")
def shapes(shared_data) -> Path:
    return shared_data("shapes")


@pytest.fixture(scope="module")
def shared_data():  # module scope (the conftest fixture is per test)
    from conftest import shared_scene

    return shared_scene


@pytest.fixture(scope="module")
def runs(shapes, tmp_path_factory) -> dict:
    """One process and two processes, trained side by side (the machine has two cores)."""
    models = {name: tmp_path_factory.mktemp(name) / "model" for name in ("one", "two")}
    every_step = [str(view) for view in range(STOP_AFTER, HALF + 1, 2)]
    started = {"one": start(1, shapes, models["one"], "--checkpoint_iterations", *every_step, str(ITERATIONS)),
               "two": start(2, shapes, models["two"])}
    return {name: (models[name], finish(process)) for name, process in started.items()}


@pytest.fixture(scope="module")
def one(runs):
    return runs["one"]


@pytest.fixture(scope="module")
def two(runs):
    return runs["two"]


def assert_same_checkpoint(a: Path, b: Path) -> None:
    first, second = load_checkpoint(a, torch.device("cpu")), load_checkpoint(b, torch.device("cpu"))
    assert first["iteration"] == second["iteration"]
    for name, tensor in first["model"]["params"].items():
        assert torch.equal(tensor, second["model"]["params"][name]), name
    for key in ("grad_accum", "denom", "max_radii"):
        assert torch.equal(first["model"][key], second["model"][key]), key
    for index, state in first["model"]["optimizer"]["state"].items():
        for key, value in state.items():
            assert torch.equal(value, second["model"]["optimizer"]["state"][index][key]), (index, key)
    assert first["model"]["optimizer"]["param_groups"] == second["model"]["optimizer"]["param_groups"]
    assert first["sampler"] == second["sampler"] and first["progress"] == second["progress"]
    assert torch.equal(first["rng"]["torch"], second["rng"]["torch"])


def test_two_processes_train_what_one_process_trains(one, two):
    (model_1, run_1), (model_2, run_2) = one, two
    for iteration in (HALF, ITERATIONS):
        ply = Path("point_cloud", f"iteration_{iteration}", "point_cloud.ply")
        assert (model_1 / ply).read_bytes() == (model_2 / ply).read_bytes(), iteration
    for name in (f"chkpnt{HALF}.pth", f"chkpnt{ITERATIONS}.pth"):
        assert_same_checkpoint(model_1 / name, model_2 / name)
    count = load_checkpoint(model_1 / f"chkpnt{ITERATIONS}.pth", torch.device("cpu"))["model"]["params"]["xyz"].shape[0]
    assert count > 500  # densification ran
    lines = evaluation_lines(run_1)
    assert len(lines) == 4 and lines == evaluation_lines(run_2)
    for name in ("input.ply", "cameras.json", "exposure.json"):
        assert (model_1 / name).read_bytes() == (model_2 / name).read_bytes(), name
    assert (model_2 / "cfg_args").read_text() == (model_1 / "cfg_args").read_text().replace(str(model_1), str(model_2))
    assert sorted(p.name for p in model_1.iterdir() if not p.name.startswith("chkpnt")) == \
        sorted(p.name for p in model_2.iterdir() if not p.name.startswith("chkpnt"))
    assert "Training on 2 processes (gloo)" in run_2.stdout and "Training on" not in run_1.stdout


def test_checkpoints_move_between_process_counts(shapes, one, two, tmp_path):
    """The checkpoint written by two processes resumes on one, and one process's on two, each
    ending where the uninterrupted single-process run ends."""
    (model_1, _), (model_2, _) = one, two
    resumed = {processes: start(processes, shapes, tmp_path / f"resumed{processes}", "--start_checkpoint",
                                str(checkpoint))
               for processes, checkpoint in ((1, model_2 / f"chkpnt{HALF}.pth"), (2, model_1 / f"chkpnt{HALF}.pth"))}
    for processes, process in resumed.items():
        finish(process)
        assert_same_checkpoint(tmp_path / f"resumed{processes}" / f"chkpnt{ITERATIONS}.pth",
                               model_1 / f"chkpnt{ITERATIONS}.pth")


def worker_pids(parent: int) -> list[int]:
    """The training processes started under ``parent`` (torchrun's workers)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        ppid = next((line.split()[1] for line in status.splitlines() if line.startswith("PPid:")), "")
        if ppid == str(parent) and "trainer.cli.train" in command:
            pids.append(int(entry.name))
    return sorted(pids)


def wait_for(path: Path, process: subprocess.Popen, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        if process.poll() is not None:
            pytest.fail(f"training ended early: {process.communicate()[1][-2000:]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"{path} did not appear")
        time.sleep(0.2)


def start_launcher(shapes: Path, model: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([*launcher_command(2, model), "-s", str(shapes), "-m", str(model), *FLAGS, *extra],
                            cwd=REPO, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_ctrl_c_stops_every_rank_at_one_boundary_and_saves(shapes, one, tmp_path):
    """Ctrl-C reaches the launcher (splat-train --gpus's), which passes it to the processes:
    they stop at the same boundary, rank 0 writes the PLY and the checkpoint, the exit status
    is 130, and the checkpoint is the uninterrupted run's at that iteration."""
    model_1, _ = one
    model = tmp_path / "stopped"
    process = start_launcher(shapes, model, "--quiet", "--save_iterations", str(STOP_AFTER))
    wait_for(model / "point_cloud" / f"iteration_{STOP_AFTER}" / "point_cloud.ply", process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 130, stderr[-3000:]
    checkpoints = list(model.glob("chkpnt*.pth"))
    assert len(checkpoints) == 1, stderr[-3000:]
    stopped_at = int(checkpoints[0].stem[len("chkpnt"):])
    assert STOP_AFTER <= stopped_at < ITERATIONS and stopped_at % 2 == 0
    assert (model / "point_cloud" / f"iteration_{stopped_at + 1}" / "point_cloud.ply").is_file()
    assert "Interrupted at iteration" in stderr and "stopped" in stderr
    if stopped_at <= HALF:
        assert_same_checkpoint(checkpoints[0], model_1 / checkpoints[0].name)
    else:  # a slow machine: the one-process run has no checkpoint there; resume to its end
        resumed = tmp_path / "resumed"
        train(1, shapes, resumed, "--start_checkpoint", str(checkpoints[0]), "--quiet")
        assert_same_checkpoint(resumed / f"chkpnt{ITERATIONS}.pth", model_1 / f"chkpnt{ITERATIONS}.pth")


def test_a_dead_rank_stops_the_run_with_one_line(shapes, tmp_path):
    model = tmp_path / "killed"
    process = start_launcher(shapes, model, "--quiet", "--save_iterations", "10")
    saved = model / "point_cloud" / "iteration_10" / "point_cloud.ply"
    wait_for(saved, process)
    workers = worker_pids(process.pid)
    assert len(workers) == 2
    os.kill(workers[-1], signal.SIGKILL)
    _, stderr = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 1
    assert "was killed by SIGKILL; the other processes were stopped" in stderr, stderr[-3000:]
    assert "Traceback" not in stderr
    from rasterizer import read_ply

    assert len(read_ply(saved)) > 0  # what was saved before is intact


def test_a_rank_out_of_memory_stops_every_rank_with_one_line(shapes, tmp_path):
    """Rank 1 runs out of memory in a step (injected by a ``sitecustomize`` on the workers'
    path) while rank 0 waits for it inside the step: rank 1 must end with its one-line error
    (it must not try the save on stop, a collective that rank 0 never joins) and the launcher
    must stop rank 0; what was saved before is intact."""
    from trainer.distributed import DistributedFailure
    from trainer.train import is_out_of_memory

    assert not is_out_of_memory(DistributedFailure("rank 1: out of memory at view 12 with 9 of 17 Gaussians"))
    injection = tmp_path / "inject"
    injection.mkdir()
    (injection / "sitecustomize.py").write_text(
        "import os\n"
        "if os.environ.get('RANK') == '1':\n"
        "    import torch\n"
        "    from trainer.train import Trainer\n"
        "    _step = Trainer._iteration\n"
        "    def _iteration(self, step):\n"
        "        if step.first > 12:\n"
        "            raise torch.OutOfMemoryError('CUDA out of memory. Tried to allocate 2.00 GiB (injected)')\n"
        "        return _step(self, step)\n"
        "    Trainer._iteration = _iteration\n")
    model = tmp_path / "oom"
    env = environment()
    env["PYTHONPATH"] = os.pathsep.join([str(injection), str(REPO), env.get("PYTHONPATH", "")])
    process = subprocess.Popen([*launcher_command(2, model), "-s", str(shapes), "-m", str(model), *FLAGS, "--quiet",
                                "--save_iterations", "10"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        _, stderr = process.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        for pid in worker_pids(process.pid):  # not left behind to load the machine
            os.kill(pid, signal.SIGKILL)
        process.kill()
        pytest.fail("the run hung after rank 1 ran out of memory")
    assert process.returncode == 1, stderr[-3000:]
    assert "rank 1: out of memory at view 13" in stderr, stderr[-3000:]
    assert "Traceback" not in stderr
    assert not (model / "point_cloud" / "iteration_13").exists()  # no save on stop: it is a collective
    from rasterizer import read_ply

    assert len(read_ply(model / "point_cloud" / "iteration_10" / "point_cloud.ply")) > 0


def test_gpus_flag_errors(tmp_path, capsys, monkeypatch):
    args = ["-s", str(tmp_path), "-m", str(tmp_path / "m"), "--quiet"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main([*args, "--gpus", "2"]) == 2
    assert "--gpus 2: this machine has no CUDA GPU" in capsys.readouterr().err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert main([*args, "--gpus", "2"]) == 2
    assert "--gpus 2: this machine has only 1 CUDA GPU" in capsys.readouterr().err
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.distributed, "is_nccl_available", lambda: False)
    assert main([*args, "--gpus", "2"]) == 2
    error = capsys.readouterr().err
    assert "needs NCCL" in error and len(error.strip().splitlines()) == 1
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main([*args, "--gpus", "1"]) == 2  # one GPU is checked too
    assert "--gpus 1: this machine has no CUDA GPU" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--gpus", "0"])
    assert exit_info.value.code == 2


def test_gpus_must_match_the_processes_torchrun_started(shapes, tmp_path):
    result = subprocess.run([*train_command(2), "-s", str(shapes), "-m", str(tmp_path / "m"), *FLAGS, "--gpus", "3"],
                            cwd=REPO, env=environment(), capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode != 0
    assert "splat-train: error: --gpus 3, but torchrun started 2 processes" in result.stderr


# ----- on two GPUs (NCCL, CUDA backend): skipped without them ----------------------------------------
two_gpus = pytest.mark.skipif(torch.cuda.device_count() < 2 or not torch.distributed.is_nccl_available(),
                              reason="needs two NVIDIA GPUs and NCCL")
GPU_FLAGS = ["-r", "4", "-w", "--eval", "--backend", "cuda", "--disable_viewer", "--iterations", "3000",
             "--batch_size", "2", "--random_init_points", "20000", "--test_iterations", "3000",
             "--checkpoint_iterations", "1500", "3000"]


def gpu_train(command: list[str], source: Path, model: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in environment().items() if k != "CUDA_VISIBLE_DEVICES"}
    result = subprocess.run([*command, "-s", str(source), "-m", str(model), *GPU_FLAGS, *extra], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@two_gpus
def test_two_gpus_train_what_one_gpu_trains(shapes, tmp_path):
    """splat-train --gpus 2 against one GPU with the same batch: the same files, the same
    number of Gaussians and test PSNR up to the GPU's float atomics (which make two runs on one
    GPU differ too), and its checkpoint resumes on one GPU."""
    one = gpu_train([sys.executable, "-m", "trainer.cli.train"], shapes, tmp_path / "one")
    two = gpu_train([sys.executable, "-m", "trainer.cli.train", "--gpus", "2"], shapes, tmp_path / "two")
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == sorted(p.name for p in (tmp_path / "two").iterdir())
    psnr = [float(line.split("PSNR")[1]) for run in (one, two) for line in evaluation_lines(run) if "test" in line]
    assert len(psnr) == 2 and abs(psnr[0] - psnr[1]) < 0.2, psnr
    counts = [load_checkpoint(tmp_path / name / "chkpnt3000.pth", torch.device("cpu"))["model"]["params"]["xyz"].shape[0]
              for name in ("one", "two")]
    assert abs(counts[0] - counts[1]) <= 0.03 * counts[0], counts
    gpu_train([sys.executable, "-m", "trainer.cli.train"], shapes, tmp_path / "resumed",
              "--start_checkpoint", str(tmp_path / "two" / "chkpnt1500.pth"))
