"""One rank/world-size discovery (distill.scale.distributed.launch_env) behind DDP, shards and cache-teacher."""

from __future__ import annotations

import pytest

from distill.errors import ConfigError
from distill.scale.distributed import init_distributed, launch_env

TORCHRUN = {"RANK": "2", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "TORCHELASTIC_RUN_ID": "x"}


def _env(monkeypatch, values: dict[str, str]) -> None:
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "TORCHELASTIC_RUN_ID", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    for k, v in values.items():
        monkeypatch.setenv(k, v)


def test_launch_env_reads_torchrun_and_explicit_values_win(monkeypatch):
    _env(monkeypatch, {})
    assert launch_env() == launch_env(0, 1)
    assert (launch_env().rank, launch_env().world_size, launch_env().local_rank, launch_env().by_torchrun) == (0, 1, None, False)
    _env(monkeypatch, TORCHRUN)
    env = launch_env()
    assert (env.rank, env.world_size, env.local_rank, env.by_torchrun) == (2, 4, 1, True)
    assert (launch_env(rank=0).rank, launch_env(world_size=8).world_size) == (0, 8)
    with pytest.raises(ConfigError, match="not within world size"):
        launch_env(rank=4)


def test_every_caller_uses_it(monkeypatch):
    from distill.data.shards import dist_info
    from distill.scale.cache_teacher import rank_and_world

    _env(monkeypatch, TORCHRUN)
    assert dist_info() == (2, 4)
    assert rank_and_world() == (2, 4, True)
    assert rank_and_world(1, 2) == (1, 2, False)
    _env(monkeypatch, {"RANK": "0", "WORLD_SIZE": "1"})
    assert not init_distributed("cpu").enabled
