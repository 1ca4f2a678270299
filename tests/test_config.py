import pytest
import torch

from robustnb import config
from robustnb.config import ConfigError


def test_preset_from_argument_env_and_default(monkeypatch):
    monkeypatch.delenv("ROBUSTNB_PRESET", raising=False)
    assert config.resolve_preset(None) == "cpu"
    monkeypatch.setenv("ROBUSTNB_PRESET", "smoke")
    assert config.resolve_preset(None) == "smoke"
    assert config.resolve_preset("full") == "full"  # an explicit parameter wins over the environment


@pytest.mark.parametrize("via_env", [False, True])
def test_unknown_preset_lists_the_allowed_ones(monkeypatch, via_env):
    if via_env:
        monkeypatch.setenv("ROBUSTNB_PRESET", "bogus")
    with pytest.raises(ConfigError) as e:
        config.resolve_preset(None if via_env else "bogus")
    msg = str(e.value)
    assert "'bogus'" in msg and all(p in msg for p in ("smoke", "cpu", "full"))
    if via_env:
        assert "ROBUSTNB_PRESET" in msg


def test_pick_needs_every_preset():
    assert config.pick("smoke", smoke=1, cpu=2, full=3) == 1
    with pytest.raises(ConfigError, match="full"):
        config.pick("cpu", smoke=1, cpu=2)


def test_device_selection():
    assert config.get_device("auto").type in ("cpu", "cuda", "mps")
    assert config.get_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="'tpu'"):
        config.get_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            config.get_device("cuda")


def test_seeding_is_reproducible():
    config.seed_everything(3)
    a = torch.rand(5)
    config.seed_everything(3)
    assert torch.equal(a, torch.rand(5))
    with pytest.raises(ConfigError):
        config.seed_everything(-1)


def test_folders_follow_environment(tmp_env):
    data, cache = tmp_env
    assert config.data_dir() == data.resolve()
    assert config.cache_dir() == cache.resolve() and cache.is_dir()


def test_setup_returns_run(tmp_env, capsys):
    run = config.setup("smoke", seed=1, device="cpu")
    assert run.preset == "smoke" and run.seed == 1 and run.device.type == "cpu"
    assert run.pick(smoke="s", cpu="c", full="f") == "s"
    assert "preset='smoke'" in capsys.readouterr().out
