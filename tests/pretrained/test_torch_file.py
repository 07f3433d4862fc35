"""Reading PyTorch state dicts without PyTorch: both torch.save layouts, exact values, and refusals in one line."""

import collections
import pickle

import numpy as np
import pytest

from skinkeras.pretrained import CheckpointError, packaged_checkpoint, read_state_dict


def test_packaged_lite0_checkpoint_reads_whole():
    """The legacy (pre-zip) file of the package: every tensor, 4,694,073 numbers, the documented names."""
    state = read_state_dict(packaged_checkpoint("efficientnet_lite0"))
    assert len(state) == 296
    assert sum(v.size for v in state.values()) == 4_694_073
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3) and state["_conv_stem.weight"].dtype == np.float32
    assert state["_fc.weight"].shape == (1000, 1280) and state["_bn0.num_batches_tracked"].dtype == np.int64
    assert list(state)[:2] == ["_conv_stem.weight", "_bn0.weight"]
    assert np.isfinite(state["_blocks.15._project_conv.weight"]).all()


def test_legacy_file_equals_torch_load():
    torch = pytest.importorskip("torch")
    path = packaged_checkpoint("efficientnet_lite0")
    want = torch.load(path, map_location="cpu", weights_only=True)
    got = read_state_dict(path)
    assert list(got) == list(want)
    for name, tensor in want.items():
        np.testing.assert_array_equal(got[name], tensor.numpy())


def test_zip_layout_with_views_dtypes_and_a_training_checkpoint(tmp_path):
    torch = pytest.importorskip("torch")
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    state = collections.OrderedDict([
        ("a.weight", base.t()),  # a strided view of a shared storage
        ("a.slice", base[1:3, 2:]),  # a storage offset
        ("b.half", torch.linspace(-1, 1, 5, dtype=torch.float16)),
        ("b.count", torch.tensor(7)),
        ("c.double", torch.ones(2, 2, dtype=torch.float64) / 3),
    ])
    plain, wrapped = tmp_path / "plain.pth", tmp_path / "ckpt.pt"
    torch.save(state, plain)
    torch.save({"epoch": 3, "state_dict": state}, wrapped)
    for path in (plain, wrapped):
        got = read_state_dict(str(path))
        assert list(got) == list(state)
        for name, tensor in state.items():
            assert got[name].dtype == tensor.numpy().dtype
            np.testing.assert_array_equal(got[name], tensor.numpy())


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


def test_code_in_a_checkpoint_is_refused_not_run(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as handle:
        for part in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
            pickle.dump(part, handle)
        pickle.dump({"x": _Evil()}, handle)
    with pytest.raises(CheckpointError) as info:
        read_state_dict(str(path))
    message = str(info.value)
    assert str(path) in message and "system" in message and "\n" not in message


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04broken zip"])
def test_damaged_files_are_one_line(tmp_path, content):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        read_state_dict(str(path))
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_truncated_packaged_checkpoint_is_one_line(tmp_path):
    data = open(packaged_checkpoint("efficientnet_lite0"), "rb").read()
    path = tmp_path / "cut.pth"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated|not a readable"):
        read_state_dict(str(path))
