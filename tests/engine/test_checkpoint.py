import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from engine.checkpoint import BundleError, load_bundle, read_config, save_bundle
from engine.models.lr_a2v import LRA2V
from engine.models.refiner import PGRefiner
from engine.presets import get_preset
from tests.factories import randomize_

TINY = get_preset("tiny")


PARTS = {"lr_a2v": randomize_(LRA2V(TINY)), "refiner": randomize_(PGRefiner(TINY), seed=1)}


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    return save_bundle(tmp_path / "bundle", TINY, PARTS, meta={"steps": 7})


def test_round_trip(bundle: Path) -> None:
    loaded = load_bundle(bundle)
    assert loaded.config == TINY
    assert loaded.meta == {"steps": 7}
    for part, module in PARTS.items():
        for name, value in module.state_dict().items():
            assert torch.equal(loaded.parts[part].state_dict()[name], value), name
    assert not loaded.parts["refiner"].training
    only = load_bundle(bundle, parts=["refiner"])
    assert list(only.parts) == ["refiner"]


def test_shape_mismatch_names_the_tensor_and_both_shapes(bundle: Path) -> None:
    document = json.loads((bundle / "config.json").read_text())
    document["config"]["lr_a2v"]["width"] = 64
    document["config"]["lr_a2v"]["heads"] = 2
    (bundle / "config.json").write_text(json.dumps(document))
    with pytest.raises(
        BundleError, match=r"lr_a2v: tensor '.*' has shape \[\d+.*\] in the bundle but the config needs \["
    ):
        load_bundle(bundle, parts=["lr_a2v"])


def test_corrupted_weights_are_refused(bundle: Path) -> None:
    data = (bundle / "refiner.safetensors").read_bytes()
    (bundle / "refiner.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match=r"refiner: refiner\.safetensors is corrupted"):
        load_bundle(bundle, parts=["refiner"])


def test_missing_tensor_is_refused(bundle: Path) -> None:
    state = PGRefiner(TINY).state_dict()
    state.pop("lr_proj.weight")
    save_file({k: v.contiguous() for k, v in state.items()}, str(bundle / "refiner.safetensors"))
    with pytest.raises(BundleError, match=r"missing \['lr_proj.weight'\]"):
        load_bundle(bundle, parts=["refiner"])


def test_pickles_are_refused_and_never_opened(bundle: Path, tmp_path: Path) -> None:
    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))

    evil = tmp_path / "model.pt"
    evil.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(BundleError, match="pickle file"):
        load_bundle(evil)
    (bundle / "extra.pth").write_bytes(pickle.dumps(Boom()))
    with pytest.raises(BundleError, match=r"holds pickle files \['extra.pth'\]"):
        load_bundle(bundle)


def test_wrong_version_and_format_and_missing_folder(bundle: Path, tmp_path: Path) -> None:
    document = json.loads((bundle / "config.json").read_text())
    (bundle / "config.json").write_text(json.dumps(document | {"version": 99}))
    with pytest.raises(BundleError, match="bundle version 99"):
        read_config(bundle)
    (bundle / "config.json").write_text(json.dumps(document | {"format": "other"}))
    with pytest.raises(BundleError, match="not an infinityhuman-bundle"):
        read_config(bundle)
    with pytest.raises(BundleError, match="no bundle at"):
        load_bundle(tmp_path / "nothing")
    (bundle / "config.json").write_text(json.dumps(document))
    with pytest.raises(BundleError, match="has no part 'vae'"):
        load_bundle(bundle, parts=["vae"])
