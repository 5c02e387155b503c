"""Model checkpoints round-trip, and damaged ones fail with the file's name."""

import pytest
import torch

from histolean import arch, models, nar
from histolean.core import checkpoints


def test_round_trip_rebuilds_the_same_network(tmp_path):
    spec = nar.reduce(arch.resnet50v2(num_classes=2, input_size=64), phi=3)
    net = models.build(spec, seed=1).eval()
    path = checkpoints.save_model(tmp_path / "m.pt", net, spec, patch_um=50.0, classes=["neg", "til"])
    again, info = checkpoints.load_model(path)
    x = torch.randn(2, 3, spec.input_size, spec.input_size)
    with torch.no_grad():
        assert torch.equal(net(x), again(x))
    assert info["spec"] == spec and info["patch_um"] == 50.0 and info["input_size"] == spec.input_size


def test_damaged_and_foreign_files_name_the_file(tmp_path):
    spec = arch.b2(input_size=32)
    path = checkpoints.save_model(tmp_path / "m.pt", models.build(spec), spec)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="m.pt cannot be read"):
        checkpoints.load_model(path)
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt is not a histolean model"):
        checkpoints.load_model(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        checkpoints.load_model(tmp_path / "nope.pt")


def test_weights_of_another_spec_are_refused(tmp_path):
    spec = arch.b2(input_size=96)
    other = arch.b6(input_size=96)
    torch.save({"format": checkpoints.FORMAT, "spec": checkpoints.spec_to_dict(spec),
                "state_dict": models.build(other).state_dict()}, tmp_path / "mix.pt")
    with pytest.raises(ValueError, match="mix.pt: weights do not match"):
        checkpoints.load_model(tmp_path / "mix.pt")
