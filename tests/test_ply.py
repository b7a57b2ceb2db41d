"""PLY files: reference byte layout, bit-exact round trips, tolerant reading, clear errors.

The reference (graphdeco-inria ``GaussianModel.save_ply``) writes ``point_cloud.ply`` with plyfile;
SIBR then reads it positionally (line 3 = ``element vertex N``, then N raw float32 records), so the
bytes must match exactly. See graphdeco-spec.md sections 2.1, 2.4 and 7.5.
"""

from __future__ import annotations

import os
import struct
import time

import numpy as np
import pytest
import torch
from plyfile import PlyData, PlyElement

from rasterizer.files import FileFormatError
from rasterizer.gaussians import Gaussians
from rasterizer.ply import (PointCloud, gaussian_ply_header, gaussian_property_names, read_ply,
                            read_ply_dropping_non_finite, read_point_cloud, write_ply, write_point_cloud)

SH_C0 = 0.28209479177387814
DEGREES = (0, 1, 2, 3)


# ----- helpers ------------------------------------------------------------------------------
def reference_property_names(degree: int) -> list[str]:
    """Written out independently of the code under test (reference construct_list_of_attributes)."""
    k = (degree + 1) ** 2
    names = ["x", "y", "z", "nx", "ny", "nz"]
    names += [f"f_dc_{i}" for i in range(1 * 3)]
    names += [f"f_rest_{i}" for i in range((k - 1) * 3)]
    names.append("opacity")
    names += [f"scale_{i}" for i in range(3)]
    names += [f"rot_{i}" for i in range(4)]
    return names


def random_gaussians(n: int, degree: int, seed: int = 0) -> Gaussians:
    g = torch.Generator().manual_seed(seed)
    k = (degree + 1) ** 2
    return Gaussians(
        means=torch.randn(n, 3, generator=g) * 10,
        sh_dc=torch.randn(n, 1, 3, generator=g),
        sh_rest=torch.randn(n, k - 1, 3, generator=g) * 0.3,
        opacity_logits=torch.randn(n, generator=g) * 3,
        log_scales=torch.randn(n, 3, generator=g) - 4,
        quaternions=torch.randn(n, 4, generator=g),
    )


def random_bit_gaussians(n: int, degree: int, seed: int = 0) -> Gaussians:
    """Arbitrary finite float32 bit patterns (denormals, -0.0, huge values); NaN and infinity
    are replaced (the reader rejects them, see test_non_finite_values_*)."""
    rng = np.random.default_rng(seed)
    k = (degree + 1) ** 2

    def bits(*shape, finite=False):
        a = rng.integers(0, 2 ** 32, size=shape, dtype=np.uint64).astype(np.uint32).view(np.float32)
        bad = ~np.isfinite(a)
        a = a.copy()
        a[bad] = rng.standard_normal(int(bad.sum())).astype(np.float32)
        return torch.from_numpy(a)

    g = Gaussians(bits(n, 3), bits(n, 1, 3), bits(n, k - 1, 3), bits(n), bits(n, 3), bits(n, 4))
    # Make sure the special values are really present.
    g.sh_dc[0, 0] = torch.tensor([-0.0, 1e-45, -3.4e38])
    g.opacity_logits[0] = 3.4e38
    return g


def assert_bitwise_equal(a: Gaussians, b: Gaussians) -> None:
    for name, x in a.tensors().items():
        y = b.tensors()[name]
        assert x.shape == y.shape, name
        assert y.dtype == torch.float32, name
        assert torch.equal(x.contiguous().view(torch.int32), y.contiguous().view(torch.int32)), name


def reference_structured_array(g: Gaussians) -> np.ndarray:
    """What GaussianModel.save_ply builds, line by line (numpy/torch, no code under test)."""
    xyz = g.means.detach().cpu().numpy()
    normals = np.zeros_like(xyz)
    f_dc = g.sh_dc.detach().transpose(1, 2).flatten(start_dim=1).contiguous().cpu().numpy()
    f_rest = g.sh_rest.detach().transpose(1, 2).flatten(start_dim=1).contiguous().cpu().numpy()
    opacities = g.opacity_logits.detach()[:, None].cpu().numpy()
    scale = g.log_scales.detach().cpu().numpy()
    rotation = g.quaternions.detach().cpu().numpy()
    dtype_full = [(attribute, "f4") for attribute in reference_property_names(g.sh_degree)]
    elements = np.empty(xyz.shape[0], dtype=dtype_full)
    attributes = np.concatenate((xyz, normals, f_dc, f_rest, opacities, scale, rotation), axis=1)
    elements[:] = list(map(tuple, attributes))
    return elements


def write_with_plyfile(path, array: np.ndarray, **kwargs) -> None:
    PlyData([PlyElement.describe(array, "vertex")], **kwargs).write(str(path))


def split_header(data: bytes) -> tuple[bytes, bytes]:
    end = data.index(b"end_header\n") + len(b"end_header\n")
    return data[:end], data[end:]


# ----- header and byte layout ---------------------------------------------------------------
@pytest.mark.parametrize("degree", DEGREES)
def test_property_names_match_reference(degree):
    assert gaussian_property_names(degree) == reference_property_names(degree)
    assert len(gaussian_property_names(degree)) == 17 + 3 * ((degree + 1) ** 2 - 1)


@pytest.mark.parametrize("degree", DEGREES)
def test_header_exact_bytes(tmp_path, degree):
    n = 7
    expected = ("ply\nformat binary_little_endian 1.0\nelement vertex 7\n"
                + "".join(f"property float {p}\n" for p in reference_property_names(degree))
                + "end_header\n").encode("ascii")
    assert gaussian_ply_header(n, degree) == expected

    path = tmp_path / "point_cloud.ply"
    write_ply(path, random_gaussians(n, degree))
    data = path.read_bytes()
    header, body = split_header(data)
    assert header == expected
    lines = header.decode("ascii").split("\n")
    assert lines[0] == "ply"
    assert lines[1] == "format binary_little_endian 1.0"
    assert lines[2] == "element vertex 7"          # SIBR reads line 3 positionally
    assert not any(line.startswith("comment") or line.startswith("obj_info") for line in lines)
    floats = 17 + 3 * ((degree + 1) ** 2 - 1)
    assert len(body) == n * 4 * floats


def test_degree3_is_248_bytes_per_vertex(tmp_path):
    n = 11
    path = tmp_path / "point_cloud.ply"
    write_ply(path, random_gaussians(n, 3))
    header, body = split_header(path.read_bytes())
    assert len(body) == 248 * n
    assert os.path.getsize(path) == len(header) + 248 * n


@pytest.mark.parametrize("degree", DEGREES)
def test_raw_bytes_of_one_vertex(tmp_path, degree):
    """Decode one vertex by hand: SIBR's struct layout, channel-major f_rest, zero normals."""
    n, i = 5, 3
    g = random_gaussians(n, degree, seed=degree)
    path = tmp_path / "point_cloud.ply"
    write_ply(path, g)
    header, body = split_header(path.read_bytes())
    k = (degree + 1) ** 2
    floats = 17 + 3 * (k - 1)
    record = np.frombuffer(body[i * 4 * floats:(i + 1) * 4 * floats], dtype="<f4")
    values = dict(zip(reference_property_names(degree), record))

    def same(a, b):
        return np.float32(a).view(np.uint32) == np.float32(b).view(np.uint32)

    for c, axis in enumerate("xyz"):
        assert same(values[axis], g.means[i, c])
        assert values["n" + axis] == 0.0
        assert not np.signbit(values["n" + axis])
    for c in range(3):
        assert same(values[f"f_dc_{c}"], g.sh_dc[i, 0, c])
        for kk in range(1, k):
            assert same(values[f"f_rest_{c * (k - 1) + (kk - 1)}"], g.sh_rest[i, kk - 1, c])
        assert same(values[f"scale_{c}"], g.log_scales[i, c])
    assert same(values["opacity"], g.opacity_logits[i])
    for c in range(4):
        assert same(values[f"rot_{c}"], g.quaternions[i, c])
    # The same record read with SIBR's fixed struct (little-endian float32 fields).
    unpacked = struct.unpack_from("<%df" % floats, body, i * 4 * floats)
    assert np.array_equal(np.array(unpacked, dtype=np.float32).view(np.uint32), record.view(np.uint32))


def test_f_rest_channel_major_degree3(tmp_path):
    """D=3: f_rest_0..14 are red, 15..29 green, 30..44 blue."""
    n = 2
    rest = torch.zeros(n, 15, 3)
    for c in range(3):
        rest[:, :, c] = (c + 1) * 100 + torch.arange(15, dtype=torch.float32)
    g = random_gaussians(n, 3)
    g = Gaussians(g.means, g.sh_dc, rest, g.opacity_logits, g.log_scales, g.quaternions)
    path = tmp_path / "p.ply"
    write_ply(path, g)
    _, body = split_header(path.read_bytes())
    record = np.frombuffer(body[:248], dtype="<f4")
    f_rest = record[9:9 + 45]
    assert f_rest.tolist() == [100 + j for j in range(15)] + [200 + j for j in range(15)] + \
        [300 + j for j in range(15)]


@pytest.mark.parametrize("degree", DEGREES)
def test_byte_identical_to_plyfile(tmp_path, degree):
    """Our file == the file the reference's save_ply (plyfile) writes from the same parameters."""
    g = random_gaussians(13, degree, seed=10 + degree)
    ours, theirs = tmp_path / "ours.ply", tmp_path / "theirs.ply"
    write_ply(ours, g)
    write_with_plyfile(theirs, reference_structured_array(g))
    assert ours.read_bytes() == theirs.read_bytes()


def test_write_accepts_grad_and_noncontiguous_tensors(tmp_path):
    g = random_gaussians(6, 2, seed=3)
    rest_t = g.sh_rest.transpose(1, 2).contiguous().transpose(1, 2)  # same values, odd strides
    assert not rest_t.is_contiguous()
    h = Gaussians(g.means.clone().requires_grad_(), g.sh_dc.clone().requires_grad_(), rest_t,
                  g.opacity_logits.clone().requires_grad_(), g.log_scales, g.quaternions)
    write_ply(tmp_path / "a.ply", g)
    write_ply(tmp_path / "b.ply", h)
    assert (tmp_path / "a.ply").read_bytes() == (tmp_path / "b.ply").read_bytes()


# ----- round trips --------------------------------------------------------------------------
@pytest.mark.parametrize("degree", DEGREES)
def test_round_trip_bitwise(tmp_path, degree):
    g = random_bit_gaussians(257, degree, seed=100 + degree)
    path = tmp_path / "point_cloud.ply"
    write_ply(path, g)
    back = read_ply(path)
    assert back.sh_degree == degree
    assert len(back) == 257
    assert_bitwise_equal(g, back)
    # Written again, the file is unchanged.
    write_ply(tmp_path / "again.ply", back)
    assert (tmp_path / "again.ply").read_bytes() == path.read_bytes()


@pytest.mark.parametrize("degree", DEGREES)
def test_round_trip_empty(tmp_path, degree):
    path = tmp_path / "empty.ply"
    write_ply(path, Gaussians.empty(degree))
    assert path.read_bytes() == gaussian_ply_header(0, degree)
    back = read_ply(path)
    assert len(back) == 0 and back.sh_degree == degree


@pytest.mark.parametrize("degree", DEGREES)
def test_read_file_written_by_plyfile(tmp_path, degree):
    g = random_bit_gaussians(50, degree, seed=200 + degree)
    path = tmp_path / "ref.ply"
    write_with_plyfile(path, reference_structured_array(g))
    assert_bitwise_equal(g, read_ply(path))


# ----- tolerant reading ---------------------------------------------------------------------
@pytest.mark.parametrize("degree", DEGREES)
def test_read_any_property_order(tmp_path, degree):
    g = random_bit_gaussians(40, degree, seed=300 + degree)
    reference = reference_structured_array(g)
    rng = np.random.default_rng(degree)
    names = list(rng.permutation(reference_property_names(degree)))
    assert names != reference_property_names(degree)
    shuffled = np.empty(len(reference), dtype=[(name, "<f4") for name in names])
    for name in names:
        shuffled[name] = reference[name]
    path = tmp_path / "shuffled.ply"
    write_with_plyfile(path, shuffled)
    assert_bitwise_equal(g, read_ply(path))


def test_read_ignores_extra_properties_and_elements(tmp_path):
    g = random_gaussians(9, 1, seed=5)
    reference = reference_structured_array(g)
    names = ["extra_a"] + list(reference.dtype.names) + ["extra_b"]
    array = np.zeros(len(reference), dtype=[(n, "<f4") for n in names])
    for name in reference.dtype.names:
        array[name] = reference[name]
    array["extra_a"] = 7.0
    faces = np.array([([0, 1, 2],)], dtype=[("vertex_indices", "i4", (3,))])
    path = tmp_path / "extra.ply"
    PlyData([PlyElement.describe(array, "vertex"), PlyElement.describe(faces, "face")]).write(str(path))
    assert_bitwise_equal(g, read_ply(path))


@pytest.mark.parametrize("degree", DEGREES)
def test_read_ascii(tmp_path, degree):
    g = random_gaussians(20, degree, seed=400 + degree)
    path = tmp_path / "ascii.ply"
    write_with_plyfile(path, reference_structured_array(g), text=True)
    assert path.read_bytes().startswith(b"ply\nformat ascii 1.0\n")
    # plyfile writes %.18g, which is exact for float32 values.
    assert_bitwise_equal(g, read_ply(path))


def test_read_big_endian(tmp_path):
    g = random_bit_gaussians(30, 3, seed=7)
    path = tmp_path / "be.ply"
    write_with_plyfile(path, reference_structured_array(g), byte_order=">")
    assert b"format binary_big_endian 1.0" in path.read_bytes()[:60]
    assert_bitwise_equal(g, read_ply(path))


@pytest.mark.parametrize("degree", DEGREES)
def test_read_double_properties(tmp_path, degree):
    g = random_gaussians(25, degree, seed=500 + degree)
    reference = reference_structured_array(g)
    doubles = np.empty(len(reference), dtype=[(n, "<f8") for n in reference.dtype.names])
    for name in reference.dtype.names:
        doubles[name] = reference[name].astype(np.float64)
    path = tmp_path / "double.ply"
    write_with_plyfile(path, doubles)
    assert b"property double x\n" in path.read_bytes()[:200]
    assert_bitwise_equal(g, read_ply(path))  # float32 -> float64 -> float32 is exact


def test_read_mixed_types(tmp_path):
    """Some properties double, some float: the structured (non-matrix) path, in any order."""
    g = random_gaussians(12, 2, seed=8)
    reference = reference_structured_array(g)
    names = list(reversed(reference.dtype.names))
    mixed = np.empty(len(reference), dtype=[(n, "<f8" if i % 2 else "<f4") for i, n in enumerate(names)])
    for name in names:
        mixed[name] = reference[name]
    path = tmp_path / "mixed.ply"
    write_with_plyfile(path, mixed)
    assert_bitwise_equal(g, read_ply(path))


def brute_force_mean_sq_knn(xyz: np.ndarray, k: int = 3) -> np.ndarray:
    d2 = ((xyz[:, None, :].astype(np.float64) - xyz[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d2, np.inf)
    nearest = np.sort(d2, axis=1)[:, :k]
    return np.maximum(nearest.mean(axis=1), 1e-7)


def point_cloud_array(n: int, seed: int, colour_type: str = "u1") -> np.ndarray:
    rng = np.random.default_rng(seed)
    array = np.empty(n, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                               ("red", colour_type), ("green", colour_type), ("blue", colour_type)])
    xyz = rng.uniform(-2, 2, size=(n, 3)).astype(np.float32)
    xyz[5] = xyz[4]  # a duplicate pair
    for i, axis in enumerate("xyz"):
        array[axis] = xyz[:, i]
    for channel in ("red", "green", "blue"):
        array[channel] = rng.integers(0, 256, size=n)
    return array


@pytest.mark.parametrize("text", [False, True])
def test_point_cloud_becomes_initial_gaussians(tmp_path, text):
    array = point_cloud_array(64, seed=11)
    path = tmp_path / "points3D.ply"
    write_with_plyfile(path, array, text=text)
    g = read_ply(path)
    n = len(array)
    xyz = np.stack([array[a] for a in "xyz"], axis=1)
    rgb = np.stack([array[c] for c in ("red", "green", "blue")], axis=1).astype(np.float64) / 255.0

    assert len(g) == n and g.sh_degree == 3
    assert torch.equal(g.means, torch.from_numpy(xyz))
    # colour = 0.5 + C0 * f_dc
    colour = 0.5 + SH_C0 * g.sh_dc[:, 0, :].double().numpy()
    np.testing.assert_allclose(colour, rgb, atol=1e-6)
    assert torch.count_nonzero(g.sh_rest) == 0
    np.testing.assert_allclose(g.opacity_logits.double().numpy(), np.log(0.1 / 0.9), rtol=1e-6)
    np.testing.assert_allclose(torch.sigmoid(g.opacity_logits).numpy(), 0.1, rtol=1e-6)
    expected_log_scale = np.log(np.sqrt(brute_force_mean_sq_knn(xyz)))
    for axis in range(3):
        np.testing.assert_allclose(g.log_scales[:, axis].double().numpy(), expected_log_scale,
                                   rtol=1e-5, atol=1e-5)
    assert torch.equal(g.quaternions, torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n, 1))
    for tensor in g.tensors().values():
        assert tensor.dtype == torch.float32


def test_point_cloud_without_colour_reads(tmp_path):
    rng = np.random.default_rng(12)
    array = np.empty(10, dtype=[("x", "<f8"), ("y", "<f8"), ("z", "<f8")])
    for axis in "xyz":
        array[axis] = rng.standard_normal(10)
    path = tmp_path / "bare.ply"
    write_with_plyfile(path, array)
    cloud = read_point_cloud(path)
    assert cloud.xyz.dtype == np.float32 and cloud.xyz.shape == (10, 3)
    np.testing.assert_allclose(cloud.xyz[:, 0], array["x"].astype(np.float32))
    assert len(read_ply(path)) == 10


# ----- input.ply ----------------------------------------------------------------------------
def test_write_point_cloud_layout_and_round_trip(tmp_path):
    rng = np.random.default_rng(13)
    n = 33
    xyz = rng.standard_normal((n, 3)).astype(np.float32)
    rgb = rng.uniform(0, 1, size=(n, 3)).astype(np.float32)
    rgb[0] = [0.0, 1.0, 0.5]
    path = tmp_path / "input.ply"
    write_point_cloud(path, PointCloud(xyz, rgb))

    header, body = split_header(path.read_bytes())
    assert header == (b"ply\nformat binary_little_endian 1.0\nelement vertex 33\n"
                      b"property float x\nproperty float y\nproperty float z\n"
                      b"property float nx\nproperty float ny\nproperty float nz\n"
                      b"property uchar red\nproperty uchar green\nproperty uchar blue\n"
                      b"end_header\n")
    assert len(body) == n * (6 * 4 + 3)
    records = np.frombuffer(body, dtype=[("xyz", "<f4", 3), ("n", "<f4", 3), ("rgb", "u1", 3)])
    assert np.array_equal(records["xyz"], xyz)
    assert np.all(records["n"] == 0)
    expected_rgb = np.round(rgb.astype(np.float64) * 255).astype(np.uint8)
    assert np.array_equal(records["rgb"], expected_rgb)
    assert records["rgb"][0].tolist() == [0, 255, 128]

    # plyfile writes the same bytes from the same records (reference storePly).
    reference = np.empty(n, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("nx", "f4"), ("ny", "f4"),
                                   ("nz", "f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    attributes = np.concatenate((xyz, np.zeros_like(xyz), expected_rgb), axis=1)
    reference[:] = list(map(tuple, attributes))
    write_with_plyfile(tmp_path / "ref.ply", reference)
    assert (tmp_path / "ref.ply").read_bytes() == path.read_bytes()

    cloud = read_point_cloud(path)
    assert np.array_equal(cloud.xyz, xyz)
    assert cloud.rgb.dtype == np.float32
    np.testing.assert_allclose(cloud.rgb, expected_rgb / 255.0, atol=1e-7)
    # Written back, the file is unchanged (colours are exact multiples of 1/255).
    write_point_cloud(tmp_path / "again.ply", cloud)
    assert (tmp_path / "again.ply").read_bytes() == path.read_bytes()


def test_write_point_cloud_clips_colours(tmp_path):
    path = tmp_path / "input.ply"
    write_point_cloud(path, PointCloud(np.zeros((2, 3)), np.array([[-0.5, 2.0, 0.0], [1.0, 0.0, 1.0]])))
    assert np.array_equal(read_point_cloud(path).rgb, [[0, 1, 0], [1, 0, 1]])


# ----- errors -------------------------------------------------------------------------------
def assert_names_file(excinfo, path):
    assert str(path) in str(excinfo.value)


def test_truncated_body(tmp_path):
    path = tmp_path / "truncated.ply"
    write_ply(path, random_gaussians(20, 3))
    data = path.read_bytes()
    for cut in (1, 248, 248 * 19 + 1):
        path.write_bytes(data[:-cut])
        with pytest.raises(FileFormatError) as excinfo:
            read_ply(path)
        assert_names_file(excinfo, path)
        assert "truncated" in str(excinfo.value) or "end-of-file" in str(excinfo.value)
    # Header only, and header cut short.
    header, _ = split_header(data)
    for cut_data in (header, header[:-5], data[:40]):
        path.write_bytes(cut_data)
        with pytest.raises(FileFormatError) as excinfo:
            read_ply(path)
        assert_names_file(excinfo, path)


def test_truncated_ascii_and_big_endian(tmp_path):
    reference = reference_structured_array(random_gaussians(20, 1))
    for kwargs in ({"text": True}, {"byte_order": ">"}):
        path = tmp_path / "t.ply"
        write_with_plyfile(path, reference, **kwargs)
        path.write_bytes(path.read_bytes()[:-50])
        with pytest.raises(FileFormatError) as excinfo:
            read_ply(path)
        assert_names_file(excinfo, path)


@pytest.mark.parametrize("content", [
    b"",
    b"\x00" * 100,
    np.random.default_rng(14).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
    b"ply\n" + np.random.default_rng(15).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
    b"ply\nformat binary_little_endian 1.0\nelement vertex many\nproperty float x\nend_header\n",
    b"hello world, this is not a ply file\n",
], ids=["empty", "zeros", "random", "ply-then-random", "bad-count", "text"])
def test_garbage(tmp_path, content):
    path = tmp_path / "garbage.ply"
    path.write_bytes(content)
    for reader in (read_ply, read_point_cloud):
        with pytest.raises(FileFormatError) as excinfo:
            reader(path)
        assert_names_file(excinfo, path)


def test_missing_xyz(tmp_path):
    array = np.zeros(4, dtype=[("a", "<f4"), ("b", "<f4"), ("red", "u1")])
    path = tmp_path / "noxyz.ply"
    write_with_plyfile(path, array)
    for reader in (read_ply, read_point_cloud):
        with pytest.raises(FileFormatError) as excinfo:
            reader(path)
        assert_names_file(excinfo, path)
        assert "x, y, z" in str(excinfo.value)


def test_no_vertex_element(tmp_path):
    faces = np.array([([0, 1, 2],)], dtype=[("vertex_indices", "i4", (3,))])
    path = tmp_path / "faces.ply"
    PlyData([PlyElement.describe(faces, "face")]).write(str(path))
    with pytest.raises(FileFormatError) as excinfo:
        read_ply(path)
    assert_names_file(excinfo, path)


@pytest.mark.parametrize("rest_count", [1, 3, 10, 12, 30, 48, 72])
def test_f_rest_count_matching_no_degree(tmp_path, rest_count):
    names = reference_property_names(0)
    names = names[:9] + [f"f_rest_{i}" for i in range(rest_count)] + names[9:]
    array = np.zeros(3, dtype=[(n, "<f4") for n in names])
    path = tmp_path / "bad_rest.ply"
    write_with_plyfile(path, array)
    with pytest.raises(FileFormatError) as excinfo:
        read_ply(path)
    assert_names_file(excinfo, path)
    assert "f_rest" in str(excinfo.value)


def test_missing_gaussian_property(tmp_path):
    names = [n for n in reference_property_names(1) if n != "rot_3"]
    path = tmp_path / "no_rot3.ply"
    write_with_plyfile(path, np.zeros(3, dtype=[(n, "<f4") for n in names]))
    with pytest.raises(FileFormatError) as excinfo:
        read_ply(path)
    assert_names_file(excinfo, path)
    assert "rot_3" in str(excinfo.value)


def test_non_finite_positions(tmp_path):
    g = random_gaussians(4, 0)
    g.means[2, 1] = float("nan")
    path = tmp_path / "nan.ply"
    write_ply(path, g)
    with pytest.raises(FileFormatError) as excinfo:
        read_ply(path)
    assert_names_file(excinfo, path)


@pytest.mark.parametrize("field, index, value", [
    ("opacity_logits", (3,), float("nan")), ("opacity_logits", (3,), float("inf")),
    ("log_scales", (3, 2), float("-inf")), ("sh_dc", (3, 0, 1), float("nan")),
    ("sh_rest", (3, 2, 2), float("inf")), ("quaternions", (3, 0), float("nan")),
])
def test_non_finite_values_are_refused_or_dropped_with_a_count(tmp_path, field, index, value):
    g = random_gaussians(10, 1)
    getattr(g, field)[index] = value
    getattr(g, field)[(7,) + index[1:]] = value
    path = tmp_path / "bad.ply"
    write_ply(path, g)
    with pytest.raises(FileFormatError) as excinfo:
        read_ply(path)
    assert_names_file(excinfo, path)
    assert "2 of 10 Gaussians" in str(excinfo.value)
    kept, note = read_ply_dropping_non_finite(path)
    assert len(kept) == 8 and note.startswith(f"{path}: dropped 2 of 10 Gaussians")
    keep = torch.tensor([i not in (3, 7) for i in range(10)])
    assert torch.equal(kept.means, g.means[keep]) and torch.equal(kept.opacity_logits, g.opacity_logits[keep])
    good = random_gaussians(5, 1)
    write_ply(path, good)
    assert read_ply_dropping_non_finite(path)[1] is None


def test_all_non_finite_is_an_error_even_when_dropping(tmp_path):
    g = random_gaussians(3, 0)
    g.opacity_logits[:] = float("nan")
    path = tmp_path / "bad.ply"
    write_ply(path, g)
    with pytest.raises(FileFormatError, match="3 of 3 Gaussians"):
        read_ply_dropping_non_finite(path)


def test_missing_file(tmp_path):
    path = tmp_path / "nope" / "point_cloud.ply"
    for reader in (read_ply, read_point_cloud):
        with pytest.raises(FileNotFoundError) as excinfo:
            reader(path)
        assert_names_file(excinfo, path)


def test_errors_are_value_errors():
    # FileFormatError is a ValueError carrying the path and the problem.
    error = FileFormatError("/a/b.ply", "broken")
    assert isinstance(error, ValueError)
    assert error.path == "/a/b.ply" and str(error) == "/a/b.ply: broken"


# ----- atomic writing -----------------------------------------------------------------------
def test_write_ply_failure_keeps_previous_file(tmp_path, monkeypatch):
    import rasterizer.ply as ply_module

    path = tmp_path / "point_cloud.ply"
    write_ply(path, random_gaussians(10, 3, seed=1))
    before = path.read_bytes()
    real_atomic_write = ply_module.atomic_write

    class FailingStream:
        """Lets the header through, then dies while writing the body."""

        def __init__(self, stream):
            self.stream, self.calls = stream, 0

        def write(self, data):
            self.calls += 1
            if self.calls > 1:
                self.stream.write(data[: len(data) // 2])
                raise OSError("disk full (simulated)")
            return self.stream.write(data)

    import contextlib

    @contextlib.contextmanager
    def failing_atomic_write(target, *args, **kwargs):
        with real_atomic_write(target, *args, **kwargs) as stream:
            yield FailingStream(stream)

    monkeypatch.setattr(ply_module, "atomic_write", failing_atomic_write)
    with pytest.raises(OSError, match="simulated"):
        write_ply(path, random_gaussians(10, 3, seed=2))
    with pytest.raises(OSError, match="simulated"):
        write_ply(tmp_path / "new.ply", random_gaussians(10, 3, seed=2))
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["point_cloud.ply"]


# ----- speed --------------------------------------------------------------------------------
def test_load_one_million_gaussians_fast(tmp_path):
    """The reader must be vectorised (the requirement is < 1 s; checked loosely for slow CI)."""
    n = 1_000_000
    # Distinct float32 values (1.0 upwards, one ulp apart), cheap to make: a column or row
    # mix-up changes them.
    payload = (np.arange(n * 62, dtype=np.uint32) + np.uint32(0x3F800000)).view(np.float32)
    payload = payload.reshape(n, 62)
    path = tmp_path / "big.ply"
    with open(path, "wb") as stream:
        stream.write(gaussian_ply_header(n, 3))
        stream.write(payload.data)
    checked = (0, 123_456, n - 1)
    expected = {i: payload[i].copy() for i in checked}
    del payload
    best = float("inf")
    for _ in range(3):  # retried only if a try was slowed by a busy machine
        start = time.perf_counter()
        g = read_ply(path)
        best = min(best, time.perf_counter() - start)
        if best < 3.0:
            break
    assert best < 3.0, f"reading 1M Gaussians took {best:.2f} s"
    # Spot-check the content, so a fast wrong reader does not pass.
    for i in checked:
        row = expected[i]
        assert g.means[i].tolist() == row[0:3].tolist()
        assert g.sh_dc[i, 0].tolist() == row[6:9].tolist()
        assert g.sh_rest[i, :, 0].tolist() == row[9:24].tolist()
        assert g.sh_rest[i, :, 2].tolist() == row[39:54].tolist()
        assert g.opacity_logits[i].item() == row[54]
        assert g.log_scales[i].tolist() == row[55:58].tolist()
        assert g.quaternions[i].tolist() == row[58:62].tolist()
