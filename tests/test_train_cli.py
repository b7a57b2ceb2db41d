"""``splat-train``'s command line: every flag of graphdeco's train.py with its default, short
forms, splatview's additions, exit codes and messages."""

from __future__ import annotations

import os
import re

import pytest
import torch

from test_train_support import write_tiny_scene
from trainer.cli import train as cli
from trainer.config import build_parser, parse_args, parse_bytes

# graphdeco-inria/gaussian-splatting HEAD 54c035f: flag -> default.
REFERENCE_DEFAULTS = {
    # ModelParams
    "sh_degree": 3, "source_path": "", "model_path": "", "images": "images", "depths": "",
    "resolution": -1, "white_background": False, "train_test_exp": False, "data_device": "cuda",
    "eval": False,
    # PipelineParams
    "convert_SHs_python": False, "compute_cov3D_python": False, "debug": False, "antialiasing": False,
    # OptimizationParams
    "iterations": 30_000, "position_lr_init": 0.00016, "position_lr_final": 0.0000016,
    "position_lr_delay_mult": 0.01, "position_lr_max_steps": 30_000, "feature_lr": 0.0025,
    "opacity_lr": 0.025, "scaling_lr": 0.005, "rotation_lr": 0.001, "exposure_lr_init": 0.01,
    "exposure_lr_final": 0.001, "exposure_lr_delay_steps": 0, "exposure_lr_delay_mult": 0.0,
    "percent_dense": 0.01, "lambda_dssim": 0.2, "densification_interval": 100,
    "opacity_reset_interval": 3000, "densify_from_iter": 500, "densify_until_iter": 15_000,
    "densify_grad_threshold": 0.0002, "depth_l1_weight_init": 1.0, "depth_l1_weight_final": 0.01,
    "random_background": False, "optimizer_type": "default",
    # train.py
    "ip": "127.0.0.1", "port": 6009, "debug_from": -1, "detect_anomaly": False,
    "test_iterations": [7000, 30000], "save_iterations": [7000, 30000], "quiet": False,
    "disable_viewer": False, "checkpoint_iterations": [], "start_checkpoint": None,
}
SHORT_FORMS = {"-s": "source_path", "-m": "model_path", "-i": "images", "-d": "depths",
               "-r": "resolution", "-w": "white_background"}


def test_every_reference_flag_with_its_default():
    namespace = vars(build_parser().parse_args([]))
    for name, default in REFERENCE_DEFAULTS.items():
        assert name in namespace, name
        assert namespace[name] == default, name
        assert type(namespace[name]) is type(default), name
    assert namespace["backend"] == "auto" and namespace["max_gaussians"] is None
    assert namespace["cache_budget"] is None and namespace["seed"] == 0
    assert namespace["random_init_points"] == 100_000 and namespace["fix_densification_quirks"] is False


def test_short_forms_and_value_types():
    args = ["-s", "scene", "-m", "out", "-i", "images_4", "-d", "", "-r", "2", "-w",
            "--test_iterations", "10", "20", "--checkpoint_iterations", "5", "--cache_budget", "1.5G",
            "--start_checkpoint", "c.pth", "--backend", "reference", "--max_gaussians", "1000"]
    config = parse_args(args)
    assert config.model.source_path == os.path.abspath("scene") and config.model.model_path == "out"
    assert (config.model.images, config.model.resolution, config.model.white_background) == ("images_4", 2, True)
    assert config.script.test_iterations == [10, 20] and config.script.checkpoint_iterations == [5]
    assert config.script.cache_budget == int(1.5 * (1 << 30))
    assert (config.script.start_checkpoint, config.script.backend, config.script.max_gaussians) == \
        ("c.pth", "reference", 1000)
    for short, name in SHORT_FORMS.items():
        option = build_parser()._option_string_actions[short]
        assert option.dest == name


def test_reference_post_processing():
    config = parse_args(["-s", "x", "--iterations", "500"])
    assert config.script.save_iterations == [7000, 30000, 500]  # --iterations appended
    assert re.fullmatch(r"\./output/[0-9a-f-]{10}", config.model.model_path)
    assert list(config.cfg_args_values()) == ["sh_degree", "source_path", "model_path", "images", "depths",
                                              "resolution", "white_background", "train_test_exp",
                                              "data_device", "eval"]
    with pytest.raises(SystemExit):
        parse_args(["--optimizer_type", "adamw"])
    with pytest.raises(SystemExit):
        parse_args(["--cache_budget", "lots"])


def test_parse_bytes():
    assert parse_bytes("1000") == 1000 and parse_bytes("4G") == 4 << 30 and parse_bytes("512MiB") == 512 << 20
    with pytest.raises(ValueError):
        parse_bytes("-3")


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return write_tiny_scene(tmp_path_factory.mktemp("cli") / "scene", train=4, test=1, points=60)


def test_main_trains_and_prints_the_reference_messages(scene, tmp_path, capsys):
    code = cli.main(["-s", str(scene), "-m", str(tmp_path / "m"), "--iterations", "12", "--eval",
                     "--test_iterations", "12", "--save_iterations", "6", "--checkpoint_iterations", "12",
                     "--data_device", "cuda", "--disable_viewer", "--port", "6010"])
    assert code == 0
    captured = capsys.readouterr()
    out = captured.out + captured.err
    assert f"Optimizing {tmp_path / 'm'}" in out
    assert "[ITER 12] Evaluating test: L1 " in out and " PSNR " in out
    assert "[ITER 6] Saving Gaussians" in out and "[ITER 12] Saving Checkpoint" in out
    assert "Training complete." in out
    if not torch.cuda.is_available():
        assert "CUDA is not available" in out  # the data_device fallback notice
    for iteration in (6, 12):
        assert (tmp_path / "m" / "point_cloud" / f"iteration_{iteration}" / "point_cloud.ply").is_file()


def test_main_quiet_prints_nothing(scene, tmp_path, capsys):
    assert cli.main(["-s", str(scene), "-m", str(tmp_path / "m"), "--iterations", "3", "--quiet", "--port", "0",
                     "--test_iterations", "3"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_main_errors_are_one_line(scene, tmp_path, capsys):
    assert cli.main(["-s", str(scene), "-m", str(tmp_path / "m"), "-d", "depth", "--quiet"]) == 2
    assert cli.main(["-s", str(tmp_path / "nowhere"), "-m", str(tmp_path / "m"), "--quiet"]) == 1
    assert cli.main(["-m", str(tmp_path / "m"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("splat-train: error: ") for line in err)
    assert "-d/--depths" in err[0] and "nowhere" in err[1] and "--source_path" in err[2]


def test_main_out_of_memory_exit_code(scene, tmp_path, capsys, monkeypatch):
    def exhaust(trainer, iteration):
        raise RuntimeError("CUDA error: out of memory")

    monkeypatch.setattr(cli, "viewer_hooks", lambda config: [exhaust])
    assert cli.main(["-s", str(scene), "-m", str(tmp_path / "m"), "--iterations", "5", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "Out of memory at iteration 1" in err and "Traceback" not in err


def test_main_ctrl_c_exit_code(scene, tmp_path, monkeypatch, capsys):
    def interrupt(trainer, iteration):
        if iteration == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(cli, "viewer_hooks", lambda config: [interrupt])
    assert cli.main(["-s", str(scene), "-m", str(tmp_path / "m"), "--iterations", "5", "--quiet"]) == 130
    assert "Interrupted at iteration 2" in capsys.readouterr().err
    assert (tmp_path / "m" / "chkpnt1.pth").is_file()
