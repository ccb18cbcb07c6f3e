"""The imagined-transition option (``imagined_ratio``, ``sb3_s2vg.imagined_buffer``): rollouts branched from real
states, stopped at predicted terminations, batches that mix real and imagined transitions in the stated ratio,
Dict observations, save/load, and bad arguments refused."""

import pytest
import torch as th
from gymnasium import spaces
from test_sb3_integration import _DictEnv

from sb3_s2vg import S2VG
from sb3_s2vg.imagined_buffer import ImaginedTransitions
from sb3_s2vg.world_model import ObservationFlattener

SMALL = dict(net_arch=[16])


def test_ring_buffer_keeps_the_last_transitions():
    buffer = ImaginedTransitions(5, ObservationFlattener(spaces.Box(-1, 1, (2,))), action_dim=1)
    for start in (0, 3):
        rows = th.arange(start, start + 3, dtype=th.float32).reshape(-1, 1)
        buffer.add(rows.expand(3, 2), rows, rows, rows.expand(3, 2), th.zeros(3, 1))
    assert buffer.size == 5 and buffer.pos == 1
    assert sorted(buffer.actions.squeeze(-1).tolist()) == [1.0, 2.0, 3.0, 4.0, 5.0]  # 0 was overwritten
    batch = buffer.sample(50)
    obs, actions, next_obs, dones, rewards = (
        batch.observations,
        batch.actions,
        batch.next_observations,
        batch.dones,
        batch.rewards,
    )
    assert obs.shape == next_obs.shape == (50, 2) and rewards.shape == dones.shape == (50, 1)
    assert set(actions.squeeze(-1).tolist()) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert th.equal(obs[:, 0], rewards.squeeze(-1)) and th.equal(next_obs, obs)  # rows stay together


@pytest.mark.parametrize("terminates, steps_per_start", [(False, 3), (True, 1)])
def test_rollouts_branch_from_real_states_and_stop_at_termination(terminates, steps_per_start):
    model = S2VG("MlpPolicy", "Pendulum-v1", learning_starts=50, seed=0, imagined_ratio=0.5, model_rollout_length=3,
                 model_rollout_batch_size=8, termination_fn=lambda obs, action, next_obs: th.full((len(obs),), terminates),
                 policy_kwargs=SMALL)  # fmt: skip
    model.learn(50)  # random transitions only
    model._model_rollouts(model._imagined)
    assert model._imagined.size == 8 * steps_per_start
    real = model.replay_buffer.observations[: model.replay_buffer.size(), 0]
    first_step = model._imagined.observations[:8]
    assert all(any(th.allclose(state, th.as_tensor(row)) for row in real) for state in first_step)  # real starts
    if steps_per_start > 1:  # the second step starts where the first ended
        assert th.equal(model._imagined.observations[8:16], model._imagined.next_observations[:8])


def test_batches_mix_real_and_imagined_transitions_in_the_stated_ratio():
    model = S2VG("MlpPolicy", "Pendulum-v1", learning_starts=50, seed=0, imagined_ratio=0.25, policy_kwargs=SMALL)
    model.learn(60)
    batch = model._actor_critic_batch(8)
    imagined_obs = model._imagined.observations[: model._imagined.size]
    real_obs = th.as_tensor(model.replay_buffer.observations[: model.replay_buffer.size(), 0])
    assert batch.observations.shape == (8, 3) and batch.rewards.shape == (8, 1) and batch.dones.shape == (8, 1)
    assert all((real_obs == row).all(-1).any() for row in batch.observations[:6])
    assert all((imagined_obs == row).all(-1).any() for row in batch.observations[6:])
    model.imagined_ratio = 1.0
    assert all((imagined_obs == row).all(-1).any() for row in model._actor_critic_batch(8).observations)


def test_imagined_option_with_dict_observations_saves_and_loads(tmp_path):
    model = S2VG("MultiInputPolicy", _DictEnv(), learning_starts=50, imagined_ratio=0.5, policy_kwargs=SMALL, seed=0)
    model.learn(120)
    batch = model._actor_critic_batch(8)
    assert isinstance(batch.observations, dict) and batch.actions.shape[0] == 8
    model.save(tmp_path / "model")
    loaded = S2VG.load(tmp_path / "model", env=_DictEnv())
    assert loaded._imagined.size == model._imagined.size > 0
    assert th.equal(loaded._imagined.observations, model._imagined.observations)
    loaded.learn(20)


@pytest.mark.parametrize("kwargs", [dict(imagined_ratio=-0.1), dict(imagined_ratio=1.5), dict(model_rollout_length=0)])
def test_bad_imagined_arguments_are_refused(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        S2VG("MlpPolicy", "Pendulum-v1", **kwargs)
