"""Model editing (trainer/edit) and ``splat-edit``: the crop box, each floater rule, apply/undo,
saving without overwriting, and the command's counts and errors."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rasterizer import Camera, Gaussians, look_at, read_gaussians, write_ply
from rasterizer.files import FileFormatError
from rasterizer.model_folder import point_cloud_path, write_cameras_json, write_cfg_args
from trainer.cli import edit as edit_cli
from trainer.edit import CropBox, EditSession, FloaterAnalysis, open_model, save_edited
from trainer.edit.crop import euler_to_matrix, matrix_to_euler

REPO = Path(__file__).resolve().parent.parent


def plane_model(extra: list[dict] = ()) -> Gaussians:
    """A dense patch: 40 x 50 Gaussians 0.05 apart on z = 0 (opacity 0.8, sigma 0.03), followed
    by the ``extra`` Gaussians (keys: position, opacity, sigma)."""
    xs, ys = torch.meshgrid(torch.arange(40) * 0.05 - 1.0, torch.arange(50) * 0.05 - 1.25, indexing="ij")
    positions = [torch.stack([xs.flatten(), ys.flatten(), torch.zeros(2000)], dim=1)]
    opacity = [torch.full((2000,), 0.8)]
    sigma = [torch.full((2000,), 0.03)]
    for item in extra:
        positions.append(torch.tensor([item["position"]], dtype=torch.float32))
        opacity.append(torch.tensor([item.get("opacity", 0.8)]))
        sigma.append(torch.tensor([item.get("sigma", 0.03)]))
    means, opacity, sigma = torch.cat(positions), torch.cat(opacity), torch.cat(sigma)
    n = len(means)
    quaternions = torch.zeros(n, 4)
    quaternions[:, 0] = 1
    return Gaussians(means, torch.full((n, 1, 3), 0.5), torch.zeros(n, 15, 3), torch.logit(opacity),
                     torch.log(sigma)[:, None].repeat(1, 3), quaternions)


def cameras_above() -> list[Camera]:
    """Four 64x64 cameras 3 units above the patch, looking down at it."""
    return [Camera.from_fov(64, 64, math.radians(70), None,
                            look_at([x, y, 3.0], [0.0, 0.0, 0.0], up=(0.0, 1.0, 0.0)))
            for x, y in ((0.3, 0.0), (-0.3, 0.0), (0.0, 0.3), (0.0, -0.3))]


PLANTED = {
    "opacity": {"position": [0.0, 0.0, 0.01], "opacity": 0.01},
    "oversize": {"position": [0.1, 0.1, 0.0], "sigma": 1.5},
    "isolated": {"position": [0.2, -0.3, 0.8]},
    "unseen": {"position": [0.0, 0.0, 5.0]},     # above (behind) the cameras
}


# ----- crop box ---------------------------------------------------------------------------------
def test_crop_box_keeps_inside_removes_outside():
    box = CropBox(center=(1.0, 2.0, 3.0), size=(2.0, 4.0, 6.0))
    points = torch.tensor([[1.0, 2.0, 3.0], [1.99, 3.99, 5.99], [2.01, 2.0, 3.0], [1.0, 2.0, -0.01]])
    assert box.contains(points).tolist() == [True, True, False, False]


def test_rotated_crop_box():
    box = CropBox(center=(0.0, 0.0, 0.0), size=(4.0, 1.0, 1.0), rotation=(0.0, 0.0, 90.0))
    # turned 90 degrees about z: its long axis is now world y
    assert box.contains(torch.tensor([[0.0, 1.9, 0.0], [1.9, 0.0, 0.0]])).tolist() == [True, False]
    corners = box.corners()
    assert np.allclose(np.sort(np.abs(corners), axis=0)[-1], [0.5, 2.0, 0.5])
    assert np.allclose(euler_to_matrix(matrix_to_euler(euler_to_matrix((10, -40, 75)))), euler_to_matrix((10, -40, 75)))
    assert np.allclose(matrix_to_euler(euler_to_matrix((10, -40, 75))), (10, -40, 75))


def test_crop_box_json_round_trip_and_errors(tmp_path):
    box = CropBox((0.5, -1.0, 2.0), (1.0, 2.0, 3.0), (0.0, 30.0, 0.0))
    box.write(tmp_path / "box.json")
    assert CropBox.read(tmp_path / "box.json") == box
    (tmp_path / "plain.json").write_text('{"center": [0, 0, 0], "size": [1, 1, 1]}')
    assert CropBox.read(tmp_path / "plain.json").rotation == (0.0, 0.0, 0.0)
    for text, problem in (("{", "not valid JSON"), ("[1, 2]", "expected a JSON object"),
                          ('{"center": [0, 0, 0]}', "needs 'size'"),
                          ('{"center": [0, 0], "size": [1, 1, 1]}', "'center' must be a list of three"),
                          ('{"center": [0, 0, 0], "size": [1, -1, 1]}', "must be positive"),
                          ('{"center": [0, 0, 0], "size": [1, 1, 1], "angle": 3}', "unknown keys")):
        (tmp_path / "bad.json").write_text(text)
        with pytest.raises(FileFormatError, match=problem):
            CropBox.read(tmp_path / "bad.json")


def test_box_around_the_bulk_ignores_a_far_floater():
    box = CropBox.around(plane_model([{"position": [50.0, 0.0, 0.0]}]))
    assert box.size[0] < 3.0 and box.contains(torch.tensor([[0.0, 0.0, 0.0]])).item()


# ----- floater rules ----------------------------------------------------------------------------
@pytest.mark.parametrize("rule", list(PLANTED))
def test_each_rule_removes_its_planted_floater_and_keeps_the_patch(rule):
    model = plane_model([PLANTED[rule]])
    analysis = FloaterAnalysis(model, cameras_above())
    masks = analysis.masks(0.5)
    assert masks[rule][-1], f"{rule} kept its floater"
    assert not masks[rule][:2000].any(), f"{rule} removed part of the dense patch"


def test_strength_zero_removes_nothing_and_more_strength_removes_more():
    model = plane_model(list(PLANTED.values()))
    analysis = FloaterAnalysis(model, cameras_above())
    assert not analysis.removed(0.0).any()
    previous = analysis.removed(0.1)
    for strength in (0.3, 0.6, 1.0):
        current = analysis.removed(strength)
        assert (current | previous).equal(current)   # a superset
        previous = current
    assert previous[-4:].all() and not previous[:2000].any()   # even at full strength the patch stays


def test_unseen_rule_is_off_without_cameras():
    analysis = FloaterAnalysis(plane_model([PLANTED["unseen"]]), cameras=[])
    assert not analysis.masks(1.0)["unseen"].any()
    assert analysis.thresholds(1.0).describe()["unseen"].startswith("off")


# ----- session ----------------------------------------------------------------------------------
def test_session_preview_apply_undo():
    model = plane_model(list(PLANTED.values()))
    session = EditSession(model, cameras_above())
    session.set_crop(CropBox((0.0, 0.0, 0.0), (1.0, 1.0, 4.0)))       # x, y in [-0.5, 0.5]
    session.set_strength(0.5)
    preview = session.preview()
    inside = int(((model.means[:, 0].abs() <= 0.5) & (model.means[:, 1].abs() <= 0.5)
                  & (model.means[:, 2].abs() <= 2.0)).sum())
    assert int(preview.outside.sum()) == len(model) - inside
    assert preview.rule_counts["opacity"] == 1 and preview.rule_counts["oversize"] == 1
    assert preview.kept == inside - int(preview.floaters.sum())
    removed = session.apply()
    assert removed == len(model) - preview.kept
    assert session.crop is None and session.strength == 0.0 and len(session.result()) == preview.kept
    assert session.undo() and session.crop is not None and session.strength == 0.5
    assert len(session.result()) == preview.kept and session.preview().kept == preview.kept
    assert not session.undo()          # one edit, undone: nothing left to undo
    assert session.crop is not None    # and the failed undo changed nothing
    with pytest.raises(ValueError):
        session.set_strength(1.5)


# ----- saving -----------------------------------------------------------------------------------
@pytest.fixture
def model_folder(tmp_path) -> Path:
    folder = tmp_path / "model"
    write_ply(point_cloud_path(folder, 700), plane_model(list(PLANTED.values())))
    write_cfg_args(folder, {"sh_degree": 3, "source_path": "/nowhere", "white_background": False})
    write_cameras_json(folder, [], cameras_above())
    (folder / "input.ply").write_bytes((folder / "point_cloud/iteration_700/point_cloud.ply").read_bytes())
    return folder


def test_save_as_a_new_model_folder(model_folder, tmp_path):
    source = open_model(model_folder)
    assert source.iteration == 700 and len(source.cameras) == 4
    out = save_edited(source.gaussians.index(torch.arange(10)), tmp_path / "edited", None, source)
    assert sorted(p.name for p in out.iterdir()) == ["cameras.json", "cfg_args", "input.ply", "point_cloud"]
    assert len(read_gaussians(point_cloud_path(out, 700))) == 10
    assert (out / "cfg_args").read_bytes() == (model_folder / "cfg_args").read_bytes()
    with pytest.raises(ValueError, match="already exists"):
        save_edited(source.gaussians, tmp_path / "edited", None, source)


def test_save_never_writes_over_the_model(model_folder):
    original = point_cloud_path(model_folder, 700)
    before = original.read_bytes()
    source = open_model(original)
    with pytest.raises(ValueError, match="the model being edited"):
        save_edited(source.gaussians.index(torch.arange(3)), original, None, source)
    with pytest.raises(ValueError, match="is a file, not a model folder"):
        save_edited(source.gaussians, model_folder.parent / "folder-out", None, source)
    assert original.read_bytes() == before


def test_a_failed_folder_save_leaves_nothing(model_folder, tmp_path, monkeypatch):
    import trainer.edit.output as output

    def broken(path, gaussians, format_name="ply"):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(output, "write_gaussians", broken)
    with pytest.raises(KeyboardInterrupt):
        save_edited(open_model(model_folder).gaussians, tmp_path / "out", None, open_model(model_folder))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


# ----- splat-edit -------------------------------------------------------------------------------
def test_splat_edit_crops_cleans_and_prints_counts(model_folder, tmp_path, capsys):
    CropBox((0.0, 0.0, 0.0), (1.0, 1.0, 4.0)).write(tmp_path / "box.json")
    out = tmp_path / "clean.spz"
    assert edit_cli.main([str(model_folder), "--crop", str(tmp_path / "box.json"),
                          "--remove-floaters", "0.5", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "4 input cameras" in text and "crop box:" in text and "removed by any rule" in text
    written = read_gaussians(out)
    assert f"wrote {out} (spz): {len(written):,} Gaussians" in text
    assert (written.means[:, :2].abs() <= 0.5 + 1e-3).all()
    assert not (written.opacities < 0.05).any() and not (written.scales > 0.5).any()


def test_splat_edit_converts_formats(model_folder, tmp_path):
    for name, expected in (("a.splat", "splat"), ("b.ply", "compressed-ply"), ("c.compressed.ply", "compressed-ply")):
        args = [str(model_folder), "-o", str(tmp_path / name), "--quiet"]
        if name == "b.ply":
            args += ["--export", "compressed-ply"]
        assert edit_cli.main(args) == 0
        from rasterizer.formats import detect_format

        assert detect_format(tmp_path / name) == expected


def test_splat_edit_to_a_model_folder(model_folder, tmp_path):
    assert edit_cli.main([str(model_folder), "--remove-floaters", "1", "-o", str(tmp_path / "out"), "--quiet"]) == 0
    assert len(read_gaussians(point_cloud_path(tmp_path / "out", 700))) == 2000


@pytest.mark.parametrize("args, message", [
    (["--remove-floaters", "1.5"], "must be a number between 0.0 and 1.0, got 1.5"),
    (["--remove-floaters", "lots"], "must be a number between 0.0 and 1.0, got 'lots'"),
    (["--export", "ksplat"], "invalid choice"),
    (["--iteration", "-5"], "must be an integer >= -1, got -5"),
])
def test_splat_edit_bad_flags_exit_2(model_folder, tmp_path, args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        edit_cli.main([str(model_folder), "-o", str(tmp_path / "x.ply"), *args])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_splat_edit_needs_an_output(model_folder, capsys):
    with pytest.raises(SystemExit) as exit_info:
        edit_cli.main([str(model_folder)])
    assert exit_info.value.code == 2 and "-o/--output" in capsys.readouterr().err


@pytest.mark.parametrize("case, message", [
    ("missing model", "no such model folder or model file"),
    ("bad box", "not valid JSON"),
    ("export clash", "the name asks for spz but --export is ply"),
    ("empty result", "nothing left"),
    ("not a model", "not a Gaussian model"),
])
def test_splat_edit_file_problems_are_one_line_exit_1(model_folder, tmp_path, case, message, capsys):
    (tmp_path / "bad.json").write_text("{")
    (tmp_path / "far.json").write_text('{"center": [100, 100, 100], "size": [1, 1, 1]}')
    (tmp_path / "notes.txt").write_text("hello")
    args = {
        "missing model": [str(tmp_path / "nope"), "-o", str(tmp_path / "o.ply")],
        "bad box": [str(model_folder), "--crop", str(tmp_path / "bad.json"), "-o", str(tmp_path / "o.ply")],
        "export clash": [str(model_folder), "--export", "ply", "-o", str(tmp_path / "o.spz")],
        "empty result": [str(model_folder), "--crop", str(tmp_path / "far.json"), "-o", str(tmp_path / "o.ply")],
        "not a model": [str(tmp_path / "notes.txt"), "-o", str(tmp_path / "o.ply")],
    }[case]
    assert edit_cli.main(args) == 1
    error = capsys.readouterr().err
    assert error.startswith("splat-edit: error:") and message in error and error.count("\n") == 1
    assert not (tmp_path / "o.ply").exists()


def test_splat_edit_is_a_console_script():
    # (tomllib is Python 3.11+; the project supports 3.10)
    assert 'splat-edit = "trainer.cli.edit:main"' in (REPO / "pyproject.toml").read_text().splitlines()
    result = subprocess.run([sys.executable, "-m", "trainer.cli.edit", "--help"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "--remove-floaters" in result.stdout
