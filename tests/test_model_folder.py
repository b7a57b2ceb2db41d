"""Model folder files: ``cfg_args``, ``cameras.json``, ``point_cloud/iteration_<N>`` and atomic writes.

Reference behaviour: graphdeco-spec.md sections 2, 2.2 and 2.3.
"""

from __future__ import annotations

import argparse
import builtins
import json
import os
import re

import numpy as np
import pytest
import torch

from rasterizer.camera import Camera, look_at
from rasterizer.files import FileFormatError, atomic_write, atomic_write_bytes, atomic_write_text
from rasterizer.model_folder import (camera_to_json, iteration_folders, latest_iteration,
                                     point_cloud_path, read_cameras_json, read_cfg_args,
                                     write_cameras_json, write_cfg_args)

REFERENCE_KEYS = ["id", "img_name", "width", "height", "position", "rotation", "fy", "fx"]

# The reference's example line (spec section 2.3), insertion order as Python >= 3.9 writes it.
REFERENCE_CFG_LINE = ("Namespace(sh_degree=3, source_path='/data/scenes/garden', "
                      "model_path='./output/0a1b2c3d-4', images='images', depths='', resolution=-1, "
                      "white_background=False, train_test_exp=False, data_device='cuda', eval=False)")
REFERENCE_CFG = {"sh_degree": 3, "source_path": "/data/scenes/garden",
                 "model_path": "./output/0a1b2c3d-4", "images": "images", "depths": "",
                 "resolution": -1, "white_background": False, "train_test_exp": False,
                 "data_device": "cuda", "eval": False}
# The reference's Python 3.7 environment wrote the keys alphabetically (2023 ModelParams).
ALPHABETICAL_CFG_LINE = ("Namespace(data_device='cuda', eval=True, images='images_4', "
                         "model_path='output/bicycle', resolution=2, sh_degree=3, "
                         "source_path='/home/user/360_v2/bicycle', white_background=True)")


@pytest.fixture
def no_eval(monkeypatch):
    """Any call to eval/exec during the test fails it."""
    def forbidden(*args, **kwargs):
        raise AssertionError("eval/exec must not be used to read cfg_args")
    monkeypatch.setattr(builtins, "eval", forbidden)
    monkeypatch.setattr(builtins, "exec", forbidden)


# ----- cfg_args -----------------------------------------------------------------------------
def test_write_cfg_args_is_namespace_str(tmp_path):
    write_cfg_args(tmp_path, REFERENCE_CFG)
    text = (tmp_path / "cfg_args").read_text(encoding="utf-8")
    assert text == str(argparse.Namespace(**REFERENCE_CFG))
    assert text == REFERENCE_CFG_LINE
    assert "\n" not in text and "\r" not in text


def test_write_cfg_args_creates_folder_and_utf8(tmp_path):
    values = dict(REFERENCE_CFG, source_path="/données/scène ß", model_path="out/ü")
    model = tmp_path / "new" / "model"
    write_cfg_args(model, values)
    raw = (model / "cfg_args").read_bytes()
    assert raw == str(argparse.Namespace(**values)).encode("utf-8")
    assert read_cfg_args(model) == values


@pytest.mark.usefixtures("no_eval")
def test_read_reference_line(tmp_path):
    (tmp_path / "cfg_args").write_text(REFERENCE_CFG_LINE)
    values = read_cfg_args(tmp_path / "cfg_args")
    assert values == REFERENCE_CFG
    assert list(values) == list(REFERENCE_CFG)  # file order kept
    assert type(values["sh_degree"]) is int and type(values["white_background"]) is bool
    assert read_cfg_args(tmp_path) == REFERENCE_CFG  # a model folder works too


@pytest.mark.usefixtures("no_eval")
def test_read_alphabetical_line(tmp_path):
    (tmp_path / "cfg_args").write_text(ALPHABETICAL_CFG_LINE + "\n")  # trailing newline tolerated
    values = read_cfg_args(tmp_path)
    assert values == {"data_device": "cuda", "eval": True, "images": "images_4",
                      "model_path": "output/bicycle", "resolution": 2, "sh_degree": 3,
                      "source_path": "/home/user/360_v2/bicycle", "white_background": True}


@pytest.mark.usefixtures("no_eval")
def test_cfg_args_round_trip_odd_values(tmp_path):
    values = {"sh_degree": 0, "source_path": "C:\\data\\it's \"quoted\", (odd)", "resolution": 1600,
              "scale": 0.5, "none": None, "neg": -2.5e-3, "items": [1, 2], "white_background": True}
    write_cfg_args(tmp_path, values)
    assert read_cfg_args(tmp_path) == values


def sibr_value(line: str, key: str) -> str:
    """SIBR's substring parse: text between '=' after the key and the next ',' or ')', unquoted."""
    start = line.index(key + "=") + len(key) + 1
    end = min(i for i in (line.find(",", start), line.find(")", start)) if i >= 0)
    return line[start:end].strip("'\"")


def test_written_cfg_args_parses_in_sibr_style(tmp_path):
    write_cfg_args(tmp_path, REFERENCE_CFG)
    line = (tmp_path / "cfg_args").read_text().splitlines()[0]
    assert sibr_value(line, "source_path") == "/data/scenes/garden"
    assert sibr_value(line, "sh_degree") == "3"
    assert sibr_value(line, "white_background") == "False"


@pytest.mark.usefixtures("no_eval")
@pytest.mark.parametrize("text", [
    "",
    "garbage",
    "Namespace(",
    "Namespace(1, 2)",
    "Namespace(sh_degree=3, 'x')",
    "Foo(sh_degree=3)",
    "os.Namespace(sh_degree=3)",
    "[1, 2, 3]",
    "Namespace(sh_degree=three)",
    "Namespace(sh_degree=3) + 1",
    "Namespace(x=__import__('os').system('echo hi'))",
    "Namespace(x=open('MARKER', 'w'))",
    "__import__('os').system('touch MARKER')",
    "Namespace(x=(lambda: 1)())",
], ids=lambda text: re.sub(r"\W+", "_", text)[:30] or "empty")
def test_malformed_cfg_args(tmp_path, monkeypatch, text):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "cfg_args"
    path.write_text(text)
    with pytest.raises(FileFormatError) as excinfo:
        read_cfg_args(path)
    assert str(path) in str(excinfo.value)
    assert not (tmp_path / "MARKER").exists()


def test_cfg_args_injection_does_not_run(tmp_path, capfd):
    marker = tmp_path / "ran"
    path = tmp_path / "cfg_args"
    path.write_text(f"Namespace(x=__import__('os').system('echo hi > {marker}'), "
                    f"y=__import__('os').system('echo hi'))")
    with pytest.raises(FileFormatError):
        read_cfg_args(path)
    assert not marker.exists()
    assert "hi" not in capfd.readouterr().out


def test_cfg_args_not_utf8(tmp_path):
    path = tmp_path / "cfg_args"
    path.write_bytes(b"Namespace(source_path='\xff\xfe\x80')")
    with pytest.raises(FileFormatError) as excinfo:
        read_cfg_args(path)
    assert str(path) in str(excinfo.value)


def test_cfg_args_missing(tmp_path):
    with pytest.raises(FileNotFoundError) as excinfo:
        read_cfg_args(tmp_path)
    assert str(tmp_path / "cfg_args") in str(excinfo.value)
    with pytest.raises(FileNotFoundError):
        read_cfg_args(tmp_path / "elsewhere" / "cfg_args")


# ----- cameras.json -------------------------------------------------------------------------
def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def random_camera(rng: np.random.Generator, name: str) -> Camera:
    width, height = int(rng.integers(64, 4000)), int(rng.integers(64, 3000))
    world_to_camera = np.eye(4)
    world_to_camera[:3, :3] = random_rotation(rng)
    world_to_camera[:3, 3] = rng.uniform(-20, 20, size=3)
    fx, fy = rng.uniform(0.3, 3.0, size=2) * width
    cx = width / 2 + rng.uniform(-0.2, 0.2) * width   # off-centre principal point
    cy = height / 2 + rng.uniform(-0.2, 0.2) * height
    return Camera(width, height, fx, fy, cx, cy, world_to_camera, image_name=name)


def test_camera_entry_of_hand_built_camera():
    # World-to-camera: rotate 90 degrees about z, then translate.
    rotation = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    translation = np.array([1.0, 2.0, 3.0])
    world_to_camera = np.eye(4)
    world_to_camera[:3, :3] = rotation
    world_to_camera[:3, 3] = translation
    camera = Camera(1920, 1080, 1500.0, 1400.0, 960.0, 540.0, world_to_camera, image_name="DSC_0001.JPG")

    entry = camera_to_json(4, camera)
    assert list(entry)[:8] == REFERENCE_KEYS
    assert set(entry) - set(REFERENCE_KEYS) <= {"cx", "cy"}
    assert entry["id"] == 4 and type(entry["id"]) is int
    assert entry["img_name"] == "DSC_0001.JPG"
    assert entry["width"] == 1920 and type(entry["width"]) is int
    assert entry["height"] == 1080 and type(entry["height"]) is int
    assert entry["fx"] == 1500.0 and type(entry["fx"]) is float
    assert entry["fy"] == 1400.0 and type(entry["fy"]) is float
    # rotation = camera-to-world = R^T (rows), position = centre = -R^T t.
    assert entry["rotation"] == [[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    assert entry["position"] == [-2.0, 1.0, -3.0]
    assert all(type(v) is float for v in entry["position"])
    assert all(type(v) is float for row in entry["rotation"] for v in row)

    # The reference's camera_to_JSON computation (R stored transposed, T = t).
    R, T = rotation.T, translation
    Rt = np.zeros((4, 4))
    Rt[:3, :3] = R.transpose()
    Rt[:3, 3] = T
    Rt[3, 3] = 1.0
    W2C = np.linalg.inv(Rt)
    np.testing.assert_allclose(entry["position"], W2C[:3, 3], atol=1e-12)
    np.testing.assert_allclose(entry["rotation"], W2C[:3, :3], atol=1e-12)
    json.dumps(entry)  # JSON-serialisable as is


def test_camera_entry_axes_follow_opencv():
    """Rotation columns are the camera's x (right), y (down), z (forward) axes in world space."""
    eye, target = np.array([3.0, -2.0, 5.0]), np.array([0.5, 0.25, -1.0])
    camera = Camera(640, 480, 500.0, 500.0, 320.0, 240.0, look_at(eye, target, up=(0, 0, 1)))
    entry = camera_to_json(0, camera)
    rotation = np.array(entry["rotation"])
    forward = (target - eye) / np.linalg.norm(target - eye)
    np.testing.assert_allclose(rotation[:, 2], forward, atol=1e-12)
    assert rotation[:, 1] @ np.array([0, 0, 1.0]) < 0          # image y points down
    np.testing.assert_allclose(entry["position"], eye, atol=1e-12)


def test_cameras_json_round_trip_and_order(tmp_path):
    rng = np.random.default_rng(21)
    test = [random_camera(rng, f"test_{i:02d}.png") for i in range(3)]
    train = [random_camera(rng, f"train_{i:02d}.png") for i in range(5)]
    write_cameras_json(tmp_path, test, train)
    text = (tmp_path / "cameras.json").read_text()
    assert "\n" not in text                            # one line, no indentation
    entries = json.loads(text)
    assert [e["id"] for e in entries] == list(range(8))
    assert [e["img_name"] for e in entries] == [c.image_name for c in test + train]
    for entry in entries:
        assert list(entry)[:8] == REFERENCE_KEYS

    cameras = read_cameras_json(tmp_path)
    assert read_cameras_json(tmp_path / "cameras.json")[0].image_name == "test_00.png"
    assert len(cameras) == 8
    for original, back in zip(test + train, cameras):
        assert back.image_name == original.image_name
        assert (back.width, back.height) == (original.width, original.height)
        # Floats go through JSON's shortest repr: exact.
        assert (back.fx, back.fy, back.cx, back.cy) == (original.fx, original.fy, original.cx, original.cy)
        assert back.world_to_camera.dtype == torch.float64
        torch.testing.assert_close(back.world_to_camera, original.world_to_camera, rtol=0, atol=1e-12)
        torch.testing.assert_close(back.center, original.center, rtol=0, atol=1e-12)


def test_cameras_json_written_twice_is_stable(tmp_path):
    rng = np.random.default_rng(22)
    cameras = [random_camera(rng, f"{i}.jpg") for i in range(4)]
    write_cameras_json(tmp_path / "a", cameras[:1], cameras[1:])
    back = read_cameras_json(tmp_path / "a")
    write_cameras_json(tmp_path / "b", back[:1], back[1:])
    a = json.loads((tmp_path / "a" / "cameras.json").read_text())
    b = json.loads((tmp_path / "b" / "cameras.json").read_text())
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        np.testing.assert_allclose(x["rotation"], y["rotation"], atol=1e-12)
        np.testing.assert_allclose(x["position"], y["position"], atol=1e-12)
        assert (x["fx"], x["fy"], x["cx"], x["cy"]) == (y["fx"], y["fy"], y["cx"], y["cy"])


def test_read_reference_cameras_json_without_principal_point(tmp_path):
    """A file as the reference writes it: no cx/cy, so the principal point is centred."""
    entry = {"id": 0, "img_name": "r_0", "width": 800, "height": 600,
             "position": [1.0, 2.0, 3.0],
             "rotation": [[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]],
             "fy": 1111.0, "fx": 1111.5}
    (tmp_path / "cameras.json").write_text(json.dumps([entry]))
    (camera,) = read_cameras_json(tmp_path)
    assert (camera.width, camera.height, camera.fx, camera.fy) == (800, 600, 1111.5, 1111.0)
    assert (camera.cx, camera.cy) == (400.0, 300.0)
    assert camera.image_name == "r_0"
    torch.testing.assert_close(camera.center, torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    torch.testing.assert_close(camera.camera_to_world[:3, :3],
                               torch.tensor(entry["rotation"], dtype=torch.float64))
    # And written back, the reference fields are unchanged.
    back = camera_to_json(0, camera)
    for key in REFERENCE_KEYS:
        if key in ("position", "rotation"):
            np.testing.assert_allclose(back[key], entry[key], atol=1e-15)
        else:
            assert back[key] == entry[key]


@pytest.mark.parametrize("content", [
    "not json",
    '{"id": 0}',
    '[{"id": 0}]',
    '[{"id": 0, "img_name": "a", "width": 10, "height": 10, "position": [0, 0], '
    '"rotation": [[1, 0, 0], [0, 1, 0], [0, 0, 1]], "fx": 1, "fy": 1}]',
    '[{"id": 0, "img_name": "a", "width": 10, "height": 10, "position": [0, 0, 0], '
    '"rotation": [[0, 0, 0], [0, 0, 0], [0, 0, 0]], "fx": 1, "fy": 1}]',
    '[{"id": 0, "img_name": "a", "width": 10, "height": 10, "position": [0, 0, 0], '
    '"rotation": [[1, 0, 0], [0, 1, 0], [0, 0, 1]], "fx": -1, "fy": 1}]',
    '[{"id": 0, "img_name": "a", "width": "wide", "height": 10, "position": [0, 0, 0], '
    '"rotation": [[1, 0, 0], [0, 1, 0], [0, 0, 1]], "fx": 1, "fy": 1}]',
    "[1, 2]",
], ids=["not-json", "not-list", "missing-keys", "short-position", "singular", "negative-f",
        "bad-width", "not-objects"])
def test_malformed_cameras_json(tmp_path, content):
    path = tmp_path / "cameras.json"
    path.write_text(content)
    with pytest.raises(FileFormatError) as excinfo:
        read_cameras_json(path)
    assert str(path) in str(excinfo.value)


def test_cameras_json_binary_garbage_and_missing(tmp_path):
    path = tmp_path / "cameras.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(FileFormatError) as excinfo:
        read_cameras_json(path)
    assert str(path) in str(excinfo.value)
    with pytest.raises(FileNotFoundError) as excinfo:
        read_cameras_json(tmp_path / "model")
    assert "cameras.json" in str(excinfo.value)


# ----- point_cloud/iteration_<N> ------------------------------------------------------------
def test_iterations(tmp_path):
    assert point_cloud_path(tmp_path, 7000) == tmp_path / "point_cloud" / "iteration_7000" / "point_cloud.ply"
    with pytest.raises(FileNotFoundError):
        latest_iteration(tmp_path)
    for n in (7000, 30000, 999):
        path = point_cloud_path(tmp_path, n)
        path.parent.mkdir(parents=True)
        path.write_bytes(b"ply\n")
    (tmp_path / "point_cloud" / "iteration_40000").mkdir()            # no point_cloud.ply
    (tmp_path / "point_cloud" / "iteration_abc").mkdir()
    (tmp_path / "point_cloud" / "iteration_50000_old").mkdir()
    (tmp_path / "point_cloud" / "iteration_50000_old" / "point_cloud.ply").write_bytes(b"")
    assert latest_iteration(tmp_path) == 30000                          # numeric, not lexical
    assert iteration_folders(tmp_path) == {n: tmp_path / "point_cloud" / f"iteration_{n}"
                                           for n in (999, 7000, 30000)}


# ----- atomic writes ------------------------------------------------------------------------
def test_atomic_write_success(tmp_path):
    path = tmp_path / "sub" / "file.bin"
    with atomic_write(path) as stream:
        stream.write(b"abc")
        assert not path.exists()            # nothing visible until the block ends
    assert path.read_bytes() == b"abc"
    atomic_write_bytes(path, b"xyz")
    assert path.read_bytes() == b"xyz"
    atomic_write_text(path, "é\n")
    assert path.read_bytes() == "é\n".encode("utf-8")
    assert os.listdir(path.parent) == ["file.bin"]


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_atomic_write_failure_keeps_previous_file(tmp_path, error):
    path = tmp_path / "file.bin"
    path.write_bytes(b"previous")
    with pytest.raises(type(error)):
        with atomic_write(path) as stream:
            stream.write(b"partial new content" * 1000)
            stream.flush()
            raise error
    assert path.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["file.bin"]
    # A failure when there was no previous file leaves nothing.
    with pytest.raises(RuntimeError):
        with atomic_write(tmp_path / "new.bin") as stream:
            stream.write(b"x")
            raise RuntimeError
    assert os.listdir(tmp_path) == ["file.bin"]


def test_model_writers_failure_keeps_previous_files(tmp_path, monkeypatch):
    """A failure after the data was written (here: fsync) must not replace the old files."""
    import rasterizer.files as files_module

    rng = np.random.default_rng(23)
    cameras = [random_camera(rng, f"{i}.png") for i in range(3)]
    write_cfg_args(tmp_path, REFERENCE_CFG)
    write_cameras_json(tmp_path, cameras[:1], cameras[1:])
    before = {name: (tmp_path / name).read_bytes() for name in ("cfg_args", "cameras.json")}

    def failing_fsync(fd):
        raise OSError("I/O error (simulated)")

    monkeypatch.setattr(files_module.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="simulated"):
        write_cfg_args(tmp_path, dict(REFERENCE_CFG, sh_degree=1))
    with pytest.raises(OSError, match="simulated"):
        write_cameras_json(tmp_path, [], cameras)
    monkeypatch.undo()
    assert {name: (tmp_path / name).read_bytes() for name in before} == before
    assert sorted(os.listdir(tmp_path)) == ["cameras.json", "cfg_args"]
    assert read_cfg_args(tmp_path)["sh_degree"] == 3
