"""benchmarks/exact_checkpoints.py: a run stopped and resumed from its checkpoint ends exactly as an uninterrupted one."""

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from exact_checkpoints import load_checkpoint, save_checkpoint  # benchmarks/, on pytest's pythonpath
from stable_baselines3 import SAC
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

from sb3_s2vg import S2VG

pytestmark = pytest.mark.slow  # seconds to a minute each; `pytest -m 'not slow'` skips them


def _env(env_id: str) -> DummyVecEnv:
    return DummyVecEnv([lambda: Monitor(gym.make(env_id))])


def _new_model(algorithm, env_id: str):
    kwargs = dict(learning_starts=30, batch_size=32, policy_kwargs=dict(net_arch=[16, 16]), seed=4)
    if algorithm is S2VG:
        kwargs["model_batch_size"] = 32
    return algorithm("MlpPolicy", _env(env_id), **kwargs)


@pytest.mark.parametrize("algorithm", [S2VG, SAC])
@pytest.mark.parametrize("env_id", ["Pendulum-v1", "HalfCheetah-v5"])
def test_resumed_run_is_identical_to_an_uninterrupted_run(tmp_path, algorithm, env_id):
    # Interrupted mid-episode (HalfCheetah episodes last 1000 steps, Pendulum's 200: step 130 is inside one)
    uninterrupted = _new_model(algorithm, env_id).learn(260)

    first_half = _new_model(algorithm, env_id).learn(130)
    save_checkpoint(tmp_path, first_half, extra={"rows": [1, 2]})
    th.manual_seed(999)  # the checkpoint must restore every random state itself
    np.random.seed(999)
    resumed, extra = load_checkpoint(tmp_path, algorithm, _env(env_id))
    assert extra == {"rows": [1, 2]}
    resumed.learn(130, reset_num_timesteps=False)

    assert resumed.num_timesteps == uninterrupted.num_timesteps == 260
    expected, got = uninterrupted.policy.state_dict(), resumed.policy.state_dict()
    for key in expected:
        assert th.equal(expected[key], got[key]), key
    np.testing.assert_array_equal(uninterrupted.replay_buffer.observations, resumed.replay_buffer.observations)
