"""Every numeric flag of every command is range-checked while parsing: a value just outside its
range is argparse's one-line error with exit status 2, the boundary value itself is accepted."""

from __future__ import annotations

import pytest

from trainer.cli import convert as convert_cli
from trainer.cli import render as render_cli
from trainer.config import parse_args as parse_train_args

# flag -> (lowest accepted, highest accepted or None, rejected values)
TRAIN_FLAGS = {
    "--sh_degree": ("0", "3", ["-1", "4", "7", "x"]),
    "-r": ("1", None, ["0", "-3", "-2", "1.5"]),
    "--iterations": ("0", None, ["-1", "-5"]),
    "--position_lr_max_steps": ("1", None, ["0"]),
    "--feature_lr": ("0", None, ["-0.1", "nan", "inf"]),
    "--opacity_lr": ("0", None, ["-0.001"]),
    "--scaling_lr": ("0", None, ["-1"]),
    "--rotation_lr": ("0", None, ["-1"]),
    "--position_lr_delay_mult": ("0", None, ["-1"]),
    "--exposure_lr_init": ("0", None, ["-1"]),
    "--exposure_lr_final": ("0", None, ["-1"]),
    "--exposure_lr_delay_steps": ("0", None, ["-1"]),
    "--exposure_lr_delay_mult": ("0", None, ["-1"]),
    "--percent_dense": ("0", "1", ["-0.01", "1.01"]),
    "--lambda_dssim": ("0", "1", ["-0.1", "1.5", "nan"]),
    "--densification_interval": ("1", None, ["0", "-100"]),
    "--opacity_reset_interval": ("1", None, ["0"]),
    "--densify_from_iter": ("0", None, ["-1"]),
    "--densify_until_iter": ("0", None, ["-1"]),
    "--densify_grad_threshold": ("0", None, ["-0.0002", "inf"]),
    "--depth_l1_weight_init": ("0", None, ["-1"]),
    "--depth_l1_weight_final": ("0", None, ["-1"]),
    "--port": ("0", "65535", ["-1", "65536"]),
    "--debug_from": ("-1", None, ["-2"]),
    "--test_iterations": ("-1", None, ["-2"]),
    "--save_iterations": ("-1", None, ["-2"]),
    "--checkpoint_iterations": ("-1", None, ["-7"]),
    "--max_gaussians": ("1", None, ["0", "-5"]),
    "--seed": ("0", str(2 ** 32 - 1), ["-1", str(2 ** 32)]),
    "--random_init_points": ("1", None, ["0"]),
}


def _exit_2(capsys, parse, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as info:
        parse(argv)
    assert info.value.code == 2, argv
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "error: argument" in error or "error:" in error
    assert "Traceback" not in error
    return error


@pytest.mark.parametrize("flag", sorted(TRAIN_FLAGS))
def test_splat_train_numeric_flags(flag, capsys):
    low, high, rejected = TRAIN_FLAGS[flag]
    for value in [low] + ([high] if high else []):
        parse_train_args(["-s", "scene", flag, value])   # the boundary itself is fine
    for value in rejected:
        error = _exit_2(capsys, parse_train_args, ["-s", "scene", flag, value])
        assert flag.lstrip("-") in error and value in error, error


def test_resolution_minus_one_and_divisors_are_accepted():
    for value in ("-1", "1", "2", "4", "8", "1600"):
        assert parse_train_args(["-s", "x", "-r", value]).model.resolution == int(value)


def test_position_schedule_needs_both_rates_or_neither(capsys):
    parse_train_args(["-s", "x", "--position_lr_init", "0", "--position_lr_final", "0"])  # frozen positions
    error = _exit_2(capsys, parse_train_args, ["-s", "x", "--position_lr_init", "0"])
    assert "position_lr_init" in error and "both" in error


def test_overwrite_and_resume_exclude_each_other(capsys):
    error = _exit_2(capsys, parse_train_args, ["-s", "x", "--overwrite", "--start_checkpoint", "c.pth"])
    assert "--overwrite" in error


def test_the_range_is_stated_in_the_message(capsys):
    assert "must be an integer between 0 and 3, got 7" in _exit_2(capsys, parse_train_args, ["--sh_degree", "7"])
    assert "must be -1" in _exit_2(capsys, parse_train_args, ["-r", "0"])


@pytest.mark.parametrize("argv", [["-m", "m", "--iteration", "-2"], ["-m", "m", "-r", "0"],
                                  ["-m", "m", "--sh_degree", "4"], ["-m", "m", "-r", "-3"]])
def test_splat_render_numeric_flags(argv, capsys):
    _exit_2(capsys, render_cli.main, argv)


@pytest.mark.parametrize("argv", [["-s", "x", "--seed", "-2"], ["-s", "x", "--min_registered", "1.5"],
                                  ["-s", "x", "--min_registered", "nan"], ["-s", "x", "--seed", str(2 ** 31)]])
def test_splat_convert_numeric_flags(argv, capsys):
    _exit_2(capsys, convert_cli.parse_args, argv)


@pytest.mark.parametrize("argv", [["m", "--iteration", "-2"], ["m", "--rendering-size", "0", "100"],
                                  ["m", "--rendering-size", "100", "16385"], ["m", "--camera", "-1"],
                                  ["m", "--frames", "0"], ["m", "--device", "-1"]])
def test_splat_view_numeric_flags(argv, capsys):
    pytest.importorskip("glfw")
    from viewer.cli import build_parser

    _exit_2(capsys, build_parser().parse_args, argv)


def test_splat_view_train_numeric_flags(capsys):
    pytest.importorskip("glfw")
    from viewer.live.command import parse

    _exit_2(capsys, parse, ["-s", "x", "--train", "--max-fps", "-1"])
    _exit_2(capsys, parse, ["-s", "x", "--train", "--sh_degree", "9"])   # splat-train's flags too


def test_splat_view_accepts_the_boundaries():
    pytest.importorskip("glfw")
    from viewer.cli import build_parser

    args = build_parser().parse_args(["m", "--iteration", "-1", "--rendering-size", "1", "16384",
                                      "--camera", "0", "--frames", "1", "--device", "0"])
    assert args.rendering_size == [1, 16384] and args.frames == 1
