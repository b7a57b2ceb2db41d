"""Model file formats (rasterizer/formats): content detection, round trips within each format's
documented precision, and files written by gsplat 1.5.3's exporter (tests/data/gsplat-1.5.3)."""

from __future__ import annotations

import gzip
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from rasterizer import Camera, Gaussians, look_at, read_ply, render
from rasterizer.files import FileFormatError
from rasterizer.formats import (FORMATS, SUFFIXES, detect_format, format_from_suffix, read_gaussians,
                                write_gaussians)
from rasterizer.formats.compressed_ply import ply_header
from rasterizer.formats.spz import fractional_bits_for

GSPLAT = Path(__file__).parent / "data" / "gsplat-1.5.3"


@pytest.fixture(scope="module")
def source() -> Gaussians:
    """The fixture's Gaussians: gsplat's lossless PLY (300 Gaussians, SH degree 3)."""
    return read_ply(GSPLAT / "model.ply")


def views(gaussians: Gaussians, count: int = 3, size: int = 96) -> list[Camera]:
    centre = gaussians.means.median(dim=0).values.double()
    cameras = []
    for i in range(count):
        angle = 2 * math.pi * i / count
        eye = centre + 9.0 * torch.tensor([math.cos(angle), 0.3, math.sin(angle)], dtype=torch.float64)
        cameras.append(Camera.from_fov(size, size, math.radians(60), None, look_at(eye.tolist(), centre.tolist())))
    return cameras


def render_psnr(before: Gaussians, after: Gaussians) -> float:
    """Mean PSNR (dB) of ``after`` against ``before``, both rendered by the reference rasterizer."""
    values = []
    for camera in views(before):
        with torch.no_grad():
            a = render(before, camera, backend="reference").image.clamp(0, 1)
            b = render(after, camera, backend="reference", sh_degree=min(3, after.sh_degree)).image.clamp(0, 1)
        mse = float(((a - b) ** 2).mean())
        values.append(math.inf if mse == 0 else -10 * math.log10(mse))
    return sum(values) / len(values)


def matched(decoded: Gaussians, source: Gaussians, tolerance: float) -> Gaussians:
    """``source`` reordered (and thinned) to line up with ``decoded``, matched by nearest position."""
    distance, index = cKDTree(source.means.numpy()).query(decoded.means.numpy())
    assert distance.max() <= tolerance, distance.max()
    assert len(set(index.tolist())) == len(index)   # one-to-one
    return source.index(torch.from_numpy(index))


def quaternion_gap(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest component difference of unit quaternions, up to sign."""
    a = torch.nn.functional.normalize(a, dim=1)
    b = torch.nn.functional.normalize(b, dim=1)
    b = b * torch.sign((a * b).sum(dim=1, keepdim=True))
    return float((a - b).abs().max())


def visible_count(g: Gaussians) -> int:
    """How many Gaussians gsplat's compressed writer keeps (opacity above 1/255): 295 of 300."""
    return int((g.opacities > 1 / 255).sum())


def half_steps(path: Path, count: int) -> dict[str, torch.Tensor]:
    """Per Gaussian (file order), half a quantisation step of its chunk's position, log-scale and
    colour boxes: 11-10-11 bits for position and scale, 8 bits per colour channel."""
    header, offset = ply_header(path)
    chunks = int(next(line for line in header if line.startswith("element chunk")).split()[2])
    with open(path, "rb") as stream:
        stream.seek(offset)
        table = torch.from_numpy(np.fromfile(stream, dtype="<f4", count=chunks * 18).reshape(chunks, 18).copy())
    of_gaussian = table[torch.arange(count) // 256]
    bits = torch.tensor([2047.0, 1023.0, 2047.0])
    return {"position": (of_gaussian[:, 3:6] - of_gaussian[:, 0:3]) / bits / 2 + 1e-6,
            "scale": (of_gaussian[:, 9:12] - of_gaussian[:, 6:9]) / bits / 2 + 1e-5,
            "rgb": (of_gaussian[:, 15:18] - of_gaussian[:, 12:15]) / 255 / 2 + 1e-6}


def rgb(g: Gaussians) -> torch.Tensor:
    return g.sh_dc[:, 0] * 0.28209479177387814 + 0.5


# ----- detection --------------------------------------------------------------------------------
@pytest.mark.parametrize("name, expected", [("model.ply", "ply"), ("model.compressed.ply", "compressed-ply"),
                                            ("model.splat", "splat")])
def test_gsplat_files_are_detected_by_content(tmp_path, name, expected):
    assert detect_format(GSPLAT / name) == expected
    disguised = tmp_path / "model.bin"      # the name says nothing
    shutil.copy(GSPLAT / name, disguised)
    assert detect_format(disguised) == expected


def test_misnamed_files_are_read_by_content(tmp_path, source):
    write_gaussians(tmp_path / "really-spz.ply", source, "spz")
    shutil.copy(GSPLAT / "model.compressed.ply", tmp_path / "really-compressed.splat")
    assert detect_format(tmp_path / "really-spz.ply") == "spz"
    assert detect_format(tmp_path / "really-compressed.splat") == "compressed-ply"
    assert len(read_gaussians(tmp_path / "really-compressed.splat")) == visible_count(source)


def test_suffixes_name_formats():
    assert {format_from_suffix(f"a{SUFFIXES[f]}") for f in FORMATS} == set(FORMATS)
    assert format_from_suffix("A.COMPRESSED.PLY") == "compressed-ply"
    assert format_from_suffix("model.npz") is None


@pytest.mark.parametrize("content, problem", [
    (b"", "empty"),
    (b"hello world, not a model", "not a Gaussian model"),
    (b"\x1f\x8b" + b"\x00" * 30, "not a Gaussian model"),
    (b"ply\nformat binary_little_endian 1.0\nelement vertex 3\n", "without end_header"),
])
def test_unknown_content_is_a_clear_error(tmp_path, content, problem):
    path = tmp_path / "thing.dat"
    path.write_bytes(content)
    with pytest.raises(FileFormatError, match=problem) as error:
        read_gaussians(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_gzip_that_is_not_spz_is_refused(tmp_path):
    path = tmp_path / "x.spz"
    path.write_bytes(gzip.compress(b"just some text" * 10))
    with pytest.raises(FileFormatError, match="not a Gaussian model"):
        read_gaussians(path)


def test_bad_splat_records_are_named(tmp_path, source):
    path = tmp_path / "model.splat"
    write_gaussians(path, source, "splat")
    data = bytearray(path.read_bytes())
    data[32 * 5 + 12: 32 * 5 + 16] = np.float32(-1.0).tobytes()   # record 5: a negative scale
    path.write_bytes(bytes(data))
    with pytest.raises(FileFormatError, match="record 5"):
        read_gaussians(path)
    path.write_bytes(bytes(data[:-3]))
    with pytest.raises(FileFormatError, match="not a multiple of 32"):
        read_gaussians(path)


def test_truncated_and_damaged_compressed_files_are_named(tmp_path):
    data = (GSPLAT / "model.compressed.ply").read_bytes()
    path = tmp_path / "cut.ply"
    path.write_bytes(data[:-100])
    with pytest.raises(FileFormatError, match="truncated"):
        read_gaussians(path)
    path.write_bytes(data.replace(b"element chunk 2", b"element chunk 5", 1))
    with pytest.raises(FileFormatError, match="5 chunks for 295"):
        read_gaussians(path)


def test_damaged_spz_is_named(tmp_path, source):
    path = tmp_path / "model.spz"
    write_gaussians(path, source, "spz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(FileFormatError, match="not a readable SPZ file") as error:
        read_gaussians(path)
    assert "\n" not in str(error.value)


# ----- round trips ------------------------------------------------------------------------------
def test_ply_round_trip_is_bit_exact(tmp_path, source):
    write_gaussians(tmp_path / "a.ply", source, "ply")
    back = read_gaussians(tmp_path / "a.ply")
    for name, tensor in source.tensors().items():
        assert torch.equal(tensor, back.tensors()[name]), name
    assert render_psnr(source, back) == math.inf


def test_compressed_ply_round_trip_within_its_precision(tmp_path, source):
    path = tmp_path / "a.compressed.ply"
    write_gaussians(path, source, "compressed-ply")
    back = read_gaussians(path)
    assert len(back) == len(source) and back.sh_degree == 3
    assert path.stat().st_size < 0.3 * (GSPLAT / "model.ply").stat().st_size
    expected = matched(back, source, tolerance=0.01)
    step = half_steps(path, len(back))
    assert ((back.means - expected.means).abs() <= step["position"]).all()
    assert ((back.log_scales - expected.log_scales).abs() <= step["scale"]).all()
    assert ((rgb(back) - rgb(expected)).abs() <= step["rgb"]).all()
    assert float((back.opacities - expected.opacities).abs().max()) <= 0.5 / 255 + 1e-6
    assert quaternion_gap(back.quaternions, expected.quaternions) < 2e-3
    assert float((back.sh_rest - expected.sh_rest).abs().max()) <= 1 / 64 + 1e-6
    assert render_psnr(source, back) > 40


def test_splat_round_trip_within_its_precision(tmp_path, source):
    path = tmp_path / "a.splat"
    write_gaussians(path, source, "splat")
    back = read_gaussians(path)
    assert back.sh_degree == 0 and path.stat().st_size == 32 * len(source)
    expected = matched(back, source, tolerance=0.0)        # float32 positions: exact
    assert torch.equal(back.means, expected.means)
    assert torch.allclose(back.log_scales, expected.log_scales, atol=1e-5)
    assert float((back.opacities - expected.opacities).abs().max()) <= 0.5 / 255 + 1e-6
    assert float((rgb(back) - rgb(expected).clamp(0, 1)).abs().max()) <= 0.5 / 255 + 1e-6
    assert quaternion_gap(back.quaternions, expected.quaternions) <= 1 / 128
    assert render_psnr(source.with_sh_degree(0), back) > 40   # only the dropped SH differs


def test_spz_round_trip_within_its_precision(tmp_path, source):
    path = tmp_path / "a.spz"
    write_gaussians(path, source, "spz")
    back = read_gaussians(path)
    assert len(back) == len(source) and back.sh_degree == 3
    assert float((back.means - source.means).abs().max()) <= 0.5 / 4096 + 1e-6
    assert float((back.log_scales - source.log_scales).abs().max()) <= 1 / 32 + 1e-6
    assert float((back.opacities - source.opacities).abs().max()) <= 0.5 / 255 + 1e-6
    assert float((back.sh_dc - source.sh_dc).abs().max()) <= 0.5 / (0.15 * 255) + 1e-5
    assert quaternion_gap(back.quaternions, source.quaternions) < 3e-3
    clipped = source.sh_rest.clamp(-1, 127 / 128)
    assert float((back.sh_rest - clipped).abs().max()) <= 0.5 / 128 + 1e-6
    assert render_psnr(source, back) > 35


def test_spz_lowers_fractional_bits_for_large_scenes(tmp_path, source):
    far = source.clone()
    far.means[0] = torch.tensor([5000.0, -3000.0, 10.0])
    assert fractional_bits_for(source.means) == 12 and fractional_bits_for(far.means) == 10
    write_gaussians(tmp_path / "far.spz", far, "spz")
    back = read_gaussians(tmp_path / "far.spz")
    assert float((back.means - far.means).abs().max()) <= 0.5 / 1024 + 1e-6   # nothing clipped


@pytest.mark.parametrize("format_name", ["compressed-ply", "splat", "spz"])
def test_lossy_formats_drop_no_gaussian_and_keep_degree_zero_models(tmp_path, source, format_name):
    plain = source.with_sh_degree(0)
    path = tmp_path / f"a{SUFFIXES[format_name]}"
    write_gaussians(path, plain, format_name)
    back = read_gaussians(path)
    assert len(back) == len(plain) and back.sh_degree == 0


@pytest.mark.parametrize("format_name", ["compressed-ply", "spz"])
def test_zero_sh_bands_are_left_out_not_quantised(tmp_path, source, format_name):
    """A model saved before training raised its SH degree has all-zero upper bands: they are
    omitted (read back as exactly zero) instead of stored as the format's nearest value (1/64
    for compressed PLY), and the file is smaller."""
    early = source.with_sh_degree(1).with_sh_degree(3)          # bands 2 and 3 all zero
    write_gaussians(tmp_path / "early", early, format_name)
    write_gaussians(tmp_path / "full", source, format_name)
    back = read_gaussians(tmp_path / "early")
    assert back.sh_degree == 1 and len(back) == len(early)
    assert (tmp_path / "early").stat().st_size < 0.8 * (tmp_path / "full").stat().st_size


def test_writes_are_atomic(tmp_path, source, monkeypatch):
    """A writer that fails half-way leaves the previous file and no temporary file."""
    path = tmp_path / "model.spz"
    write_gaussians(path, source, "spz")
    before = path.read_bytes()
    import gsply

    def broken(file_path, data, **kwargs):
        Path(file_path).write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(gsply, "write_spz", broken)
    with pytest.raises(KeyboardInterrupt):
        write_gaussians(path, source, "spz")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.spz"]


# ----- files written by gsplat 1.5.3 --------------------------------------------------------------
def test_gsplat_splat_file(source):
    back = read_gaussians(GSPLAT / "model.splat")
    expected = matched(back, source, tolerance=0.0)
    assert len(back) == len(source)
    # gsplat truncates (we round): errors below one step.
    assert float((back.opacities - expected.opacities).abs().max()) <= 1 / 255 + 1e-6
    assert float((rgb(back) - rgb(expected).clamp(0, 1)).abs().max()) <= 1 / 255 + 1e-6
    assert quaternion_gap(back.quaternions, expected.quaternions) <= 2 / 128
    assert render_psnr(source.with_sh_degree(0), back) > 35


def test_gsplat_compressed_ply_file(source):
    back = read_gaussians(GSPLAT / "model.compressed.ply")
    assert len(back) == visible_count(source)   # gsplat drops opacity < 1/255
    assert back.sh_degree == 3
    expected = matched(back, source, tolerance=0.01)
    step = half_steps(GSPLAT / "model.compressed.ply", len(back))
    assert ((back.means - expected.means).abs() <= step["position"]).all()
    assert ((back.log_scales - expected.log_scales).abs() <= step["scale"]).all()
    assert float((back.opacities - expected.opacities).abs().max()) <= 0.5 / 255 + 1e-6
    assert float((back.sh_rest - expected.sh_rest).abs().max()) <= 1 / 64 + 1e-6
    assert quaternion_gap(back.quaternions, expected.quaternions) < 2e-3
    assert render_psnr(source, back) > 40


def test_fixtures_are_gsplats_output(tmp_path, source):
    """With gsplat 1.5.3 importable, its exporter writes these bytes for these Gaussians: the PLY
    exactly; the quantised formats up to a rare rounding (a value on a quantisation boundary can
    round either way under another PyTorch build or CPU: one byte in a thousand may differ)."""
    exporter = pytest.importorskip("gsplat.exporter")
    for format_name, name in (("ply", "model.ply"), ("splat", "model.splat"),
                              ("ply_compressed", "model.compressed.ply")):
        data = exporter.export_splats(source.means, source.log_scales, source.quaternions,
                                      source.opacity_logits, source.sh_dc, source.sh_rest, format=format_name)
        expected = (GSPLAT / name).read_bytes()
        if format_name == "ply":
            assert data == expected, name
            continue
        assert len(data) == len(expected), name
        if format_name == "splat":   # float32 position and scale, uint8 colour, opacity, quaternion
            record = np.dtype([("floats", "<f4", 6), ("bytes", "u1", 8)])
            ours, theirs = np.frombuffer(data, record), np.frombuffer(expected, record)
            np.testing.assert_allclose(ours["floats"], theirs["floats"], rtol=1e-6, err_msg=name)
            assert np.abs(ours["bytes"].astype(int) - theirs["bytes"]).max() <= 1, name
            continue
        differing = sum(a != b for a, b in zip(data, expected))
        assert differing <= len(expected) // 1000, f"{name}: {differing} bytes differ"


# ----- the commands open every format -------------------------------------------------------------
@pytest.mark.parametrize("format_name", FORMATS)
def test_viewer_opens_every_format_by_content(tmp_path, source, format_name):
    from viewer.scene_source import load_viewer_input

    path = tmp_path / "model.data"    # a name that says nothing
    write_gaussians(path, source, format_name)
    opened = load_viewer_input(path)
    assert len(opened.gaussians) == len(source) and opened.framing_only
    assert opened.gaussians.sh_degree == (0 if format_name == "splat" else 3)


def test_render_reads_a_compressed_point_cloud_ply(tmp_path, source):
    """splat-render's ``point_cloud.ply`` may be any format (it used to say 'lacks x, y, z')."""
    from rasterizer.model_folder import point_cloud_path, write_cfg_args
    from trainer.cli import render as render_cli

    from test_render_cli import cfg_args
    from test_train_support import write_tiny_scene

    scene = write_tiny_scene(tmp_path / "scene", train=2, test=1, white=True)
    model = tmp_path / "model"
    point_cloud_path(model, 5).parent.mkdir(parents=True)
    shutil.copy(GSPLAT / "model.compressed.ply", point_cloud_path(model, 5))
    write_cfg_args(model, cfg_args(scene, model, sh_degree=3))
    assert render_cli.main(["-m", str(model), "--quiet", "--skip_test"]) == 0
    assert len(list((model / "train" / "ours_5" / "renders").iterdir())) == 2
