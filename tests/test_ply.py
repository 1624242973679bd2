# SPDX-License-Identifier: Apache-2.0
"""3DGS PLY export/import: standard layout, exact round trip, tolerant reading, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gen4d.core.engine.gaussians import Gaussians
from gen4d.core.formats import ply

STANDARD_K1 = [
    "x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2",
    "opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3",
]


def random_gaussians(n: int, k: int) -> Gaussians:
    return Gaussians(torch.randn(n, 3), torch.randn(n, 4), torch.randn(n, 3), torch.randn(n), torch.randn(n, k, 3))


def assert_bitwise_equal(a: Gaussians, b: Gaussians) -> None:
    for name, value in a.tensors().items():
        other = getattr(b, name)
        assert other.dtype == torch.float32, name
        assert other.shape == value.shape, name
        assert torch.equal(value.view(torch.int32), other.view(torch.int32)), name


def write_custom_ply(path, fmt: str, props: list[tuple[str, str]], columns: dict[str, np.ndarray],
                     pre_elements: str = "") -> None:
    """An independent PLY writer for the reader tests (binary via numpy, ascii via repr)."""
    n = len(next(iter(columns.values())))
    header = "ply\nformat " + fmt + " 1.0\ncomment written by the test\n" + pre_elements + f"element vertex {n}\n"
    header += "".join(f"property {t} {name}\n" for t, name in props) + "end_header\n"
    if fmt == "ascii":
        rows = zip(*[columns[name] for _, name in props], strict=True)
        body = "".join(" ".join(repr(float(v)) for v in row) + "\n" for row in rows).encode()
    else:
        endian = "<" if fmt == "binary_little_endian" else ">"
        code = {"float": "f4", "double": "f8", "uchar": "u1", "int": "i4"}
        arr = np.empty(n, dtype=[(name, endian + code[t]) for t, name in props])
        for _, name in props:
            arr[name] = columns[name]
        body = arr.tobytes()
    path.write_bytes(header.encode("ascii") + body)


def columns_of(g: Gaussians) -> dict[str, np.ndarray]:
    k = g.sh.shape[1]
    cols = {n: g.means[:, i].numpy() for i, n in enumerate("xyz")}
    cols.update({f"f_dc_{c}": g.sh[:, 0, c].numpy() for c in range(3)})
    cols.update({f"f_rest_{c * (k - 1) + j - 1}": g.sh[:, j, c].numpy() for c in range(3) for j in range(1, k)})
    cols["opacity"] = g.logit_opacities.numpy()
    cols.update({f"scale_{i}": g.log_scales[:, i].numpy() for i in range(3)})
    cols.update({f"rot_{i}": g.quats[:, i].numpy() for i in range(4)})
    return cols


@pytest.mark.parametrize("k", [1, 4, 9, 16])
def test_exact_round_trip(tmp_path, k):
    g = random_gaussians(257, k)
    path = ply.save_ply(g, tmp_path / "g.ply")
    back = ply.load_ply(path)
    assert back.sh.shape == (257, k, 3)
    assert_bitwise_equal(g, back)
    assert_bitwise_equal(g, ply.gaussians_from_ply_bytes(ply.gaussians_to_ply_bytes(g)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.ply"]  # no temp file left


@pytest.mark.parametrize("k", [1, 16])
def test_header_is_the_standard_layout(k):
    n = 5
    data = ply.gaussians_to_ply_bytes(random_gaussians(n, k))
    names = STANDARD_K1[:9] + [f"f_rest_{i}" for i in range(3 * (k - 1))] + STANDARD_K1[9:]
    expected = ("ply\nformat binary_little_endian 1.0\nelement vertex 5\n"
                + "".join(f"property float {p}\n" for p in names) + "end_header\n").encode("ascii")
    assert data[: len(expected)] == expected
    assert len(data) == len(expected) + n * 4 * (14 + 3 * k)
    assert ply.ply_property_names(k) == names


def test_body_columns_follow_the_inria_layout():
    k, n = 16, 7
    g = random_gaussians(n, k)
    data = ply.gaussians_to_ply_bytes(g)
    body = np.frombuffer(data[data.index(b"end_header\n") + 11:], dtype="<f4").reshape(n, 14 + 3 * k)
    np.testing.assert_array_equal(body[:, 0:3], g.means.numpy())
    np.testing.assert_array_equal(body[:, 3:6], 0.0)
    np.testing.assert_array_equal(body[:, 6:9], g.sh[:, 0].numpy())
    for c in range(3):
        for j in range(1, k):  # f_rest_{c*(K-1) + j-1} holds coefficient j of channel c
            np.testing.assert_array_equal(body[:, 9 + c * (k - 1) + j - 1], g.sh[:, j, c].numpy())
    np.testing.assert_array_equal(body[:, 9 + 3 * (k - 1)], g.logit_opacities.numpy())
    np.testing.assert_array_equal(body[:, -7:-4], g.log_scales.numpy())
    np.testing.assert_array_equal(body[:, -4:], g.quats.numpy())


@pytest.mark.parametrize("fmt", ["binary_little_endian", "binary_big_endian", "ascii"])
def test_reads_any_order_extra_properties_and_doubles(tmp_path, fmt):
    g = random_gaussians(33, 4)
    cols = columns_of(g)
    cols["red"] = np.arange(33) % 256
    cols["nx"] = np.zeros(33)
    cols["confidence"] = np.linspace(0, 1, 33)
    names = list(cols)
    rng = np.random.default_rng(0)
    rng.shuffle(names)
    types = {"red": "uchar", "confidence": "double", "x": "double", "opacity": "double"}
    props = [(types.get(name, "float"), name) for name in names]
    pre = "element camera 2\nproperty float fx\nproperty int id\n"
    path = tmp_path / f"shuffled_{fmt}.ply"
    write_custom_ply(path, fmt, props, cols)
    # Insert two camera rows before the vertex rows to check that fixed-size elements are skipped.
    raw = path.read_bytes()
    split = raw.index(b"end_header\n") + len(b"end_header\n")
    header = raw[:split].replace(b"element vertex", pre.encode() + b"element vertex")
    if fmt == "ascii":
        cam = b"1.5 7\n2.5 8\n"
    else:
        endian = "<" if fmt == "binary_little_endian" else ">"
        cam = np.array([(1.5, 7), (2.5, 8)], dtype=[("fx", endian + "f4"), ("id", endian + "i4")]).tobytes()
    path.write_bytes(header + cam + raw[split:])
    back = ply.load_ply(path)
    assert_bitwise_equal(g, back)  # float32 -> double -> float32 is exact, ascii repr too


def test_nan_loads_and_is_reported_by_validate(tmp_path):
    g = random_gaussians(4, 1)
    means = g.means.clone()
    means[2, 1] = float("nan")
    g = Gaussians(means, g.quats, g.log_scales, g.logit_opacities, g.sh)
    back = ply.load_ply(ply.save_ply(g, tmp_path / "nan.ply"))
    assert torch.isnan(back.means[2, 1]) and torch.isfinite(back.means[[0, 1, 3]]).all()
    with pytest.raises(ValueError, match="means"):
        back.validate(check_finite=True)


def test_empty_set_round_trips(tmp_path):
    back = ply.load_ply(ply.save_ply(Gaussians.empty(sh_degree=2), tmp_path / "empty.ply"))
    assert len(back) == 0 and back.sh.shape == (0, 9, 3)


def test_truncated_file_is_rejected(tmp_path):
    data = ply.gaussians_to_ply_bytes(random_gaussians(10, 4))
    path = tmp_path / "cut.ply"
    path.write_bytes(data[:-3])
    with pytest.raises(ValueError, match=r"cut\.ply.*truncated"):
        ply.load_ply(path)
    path.write_bytes(data[:40])  # header cut short
    with pytest.raises(ValueError, match=r"cut\.ply.*end_header"):
        ply.load_ply(path)


def test_truncated_ascii_is_rejected(tmp_path):
    g = random_gaussians(5, 1)
    path = tmp_path / "a.ply"
    write_custom_ply(path, "ascii", [("float", n) for n in columns_of(g)], columns_of(g))
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-2]))
    with pytest.raises(ValueError, match="truncated"):
        ply.load_ply(path)


@pytest.mark.parametrize("data", [b"", b"\x00\x01garbage" * 50, b"solid cube\nfacet normal 0 0 1\n"])
def test_garbage_is_rejected(tmp_path, data):
    path = tmp_path / "junk.ply"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=r"junk\.ply.*not a PLY"):
        ply.load_ply(path)


def test_missing_file_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        ply.load_ply(tmp_path / "nope.ply")


def test_header_problems_are_named(tmp_path):
    g = random_gaussians(3, 1)
    cols = columns_of(g)
    path = tmp_path / "bad.ply"
    write_custom_ply(path, "binary_little_endian", [("float", n) for n in cols if n != "rot_2"], cols)
    with pytest.raises(ValueError, match=r"bad\.ply.*rot_2"):
        ply.load_ply(path)
    cols5 = {**cols, **{f"f_rest_{i}": cols["x"] for i in range(5)}}
    write_custom_ply(path, "binary_little_endian", [("float", n) for n in cols5], cols5)
    with pytest.raises(ValueError, match="5 f_rest"):
        ply.load_ply(path)
    write_custom_ply(path, "binary_little_endian", [("float", n) for n in cols], cols)
    raw = path.read_bytes()
    path.write_bytes(raw.replace(b"binary_little_endian", b"binary_middle_endian"))
    with pytest.raises(ValueError, match="unsupported PLY format"):
        ply.load_ply(path)
    path.write_bytes(raw.replace(b"element vertex", b"element face 1\nproperty list uchar int vertex_indices\n"
                                                    b"element vertex"))
    with pytest.raises(ValueError, match="list properties"):
        ply.load_ply(path)
    path.write_bytes(raw.replace(b"property float opacity", b"property uchar opacity"))
    with pytest.raises(ValueError, match="opacity"):
        ply.load_ply(path)


def test_dotdot_name_is_rejected_and_nothing_written(tmp_path):
    root = tmp_path / "out"
    root.mkdir()
    g = random_gaussians(3, 1)
    for name in ["../escape", "a/../../escape.ply", "/tmp/abs.ply"]:
        with pytest.raises(ValueError, match="name"):
            ply.save_ply(g, name, root=root)
    assert list(tmp_path.rglob("*")) == [root]
    path = ply.save_ply(g, "scenes/run1", root=root)
    assert path == (root / "scenes" / "run1.ply").resolve() and path.is_file()


def test_points_ply(tmp_path):
    pts = torch.randn(20, 3)
    colors = torch.rand(20, 3)
    path = ply.save_points_ply(pts, colors, tmp_path / "tracks.ply")
    text = path.read_bytes()[:200].decode("ascii", "replace")
    assert "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n" in text
    p, c = ply.load_points_ply(path)
    np.testing.assert_array_equal(p, pts.numpy())
    np.testing.assert_array_equal(c * 255, np.round(colors.numpy() * 255))
    with pytest.raises(ValueError, match="colors"):
        ply.save_points_ply(pts, colors[:5], tmp_path / "x.ply")
