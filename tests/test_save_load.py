import numpy as np
import pytest
import torch as th
from stable_baselines3.common.env_util import make_vec_env

from sb3_s2vg import S2VG


def _trained(ent_coef="auto", **kwargs) -> S2VG:
    model = S2VG(
        "MlpPolicy",
        "Pendulum-v1",
        ent_coef=ent_coef,
        learning_starts=50,
        policy_kwargs=dict(net_arch=dict(pi=[32, 32], qf=[32, 32], vf=[16], dynamics=[24, 24], reward=[8])),
        seed=1,
        **kwargs,
    )
    return model.learn(150)


def _assert_state_dicts_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], dict):
            _assert_state_dicts_equal(a[key], b[key])
        elif isinstance(a[key], th.Tensor):
            assert th.equal(a[key], b[key]), key
        elif isinstance(a[key], list):
            assert len(a[key]) == len(b[key])
            for x, y in zip(a[key], b[key]):
                if isinstance(x, dict):
                    _assert_state_dicts_equal(x, y)
                else:
                    assert x == y, key
        else:
            assert a[key] == b[key], key


@pytest.mark.slow
@pytest.mark.parametrize("ent_coef", ["auto", 0.2])
def test_save_load_round_trips_every_network_optimizer_and_statistic(tmp_path, ent_coef):
    model = _trained(ent_coef=ent_coef, learn_termination=True, model_loss="nll", horizon=2)
    obs = np.stack([model.observation_space.sample() for _ in range(20)])
    actions, _ = model.predict(obs, deterministic=True)
    model.save(tmp_path / "model")
    loaded = S2VG.load(tmp_path / "model", env=make_vec_env("Pendulum-v1"))

    loaded_actions, _ = loaded.predict(obs, deterministic=True)
    np.testing.assert_array_equal(actions, loaded_actions)
    _assert_state_dicts_equal(model.policy.state_dict(), loaded.policy.state_dict())
    for name in ("actor", "critic", "value_net", "world_model"):
        _assert_state_dicts_equal(getattr(model, name).optimizer.state_dict(), getattr(loaded, name).optimizer.state_dict())
    # The normaliser statistics are non-trivial and travel with the model
    assert model.world_model.obs_normalizer.count.item() > 0
    th.testing.assert_close(model.world_model.obs_normalizer.mean, loaded.world_model.obs_normalizer.mean, rtol=0, atol=0)
    if ent_coef == "auto":
        assert th.equal(model.log_ent_coef, loaded.log_ent_coef)
        _assert_state_dicts_equal(model.ent_coef_optimizer.state_dict(), loaded.ent_coef_optimizer.state_dict())
    else:
        assert th.equal(model.ent_coef_tensor, loaded.ent_coef_tensor)
    for attribute in ("horizon", "actor_critic_updates", "model_loss", "learn_termination", "model_batch_size"):
        assert getattr(loaded, attribute) == getattr(model, attribute)
    # The world model predicts the same (deterministic means)
    th.manual_seed(0)
    x = th.as_tensor(obs, dtype=th.float32)
    a = th.as_tensor(actions, dtype=th.float32)
    expected = model.world_model(x, a, deterministic=True)
    got = loaded.world_model(x, a, deterministic=True)
    for e, g in zip(expected, got):
        assert th.equal(e, g)


def test_get_set_parameters_round_trip():
    model = _trained()
    other = S2VG("MlpPolicy", "Pendulum-v1", ent_coef="auto", policy_kwargs=model.policy_kwargs, seed=5)
    other.set_parameters(model.get_parameters(), exact_match=True)
    _assert_state_dicts_equal(model.policy.state_dict(), other.policy.state_dict())
    _assert_state_dicts_equal(model.world_model.optimizer.state_dict(), other.world_model.optimizer.state_dict())


@pytest.mark.slow
def test_continue_training_after_load_with_replay_buffer(tmp_path):
    model = _trained()
    model.save(tmp_path / "model")
    model.save_replay_buffer(tmp_path / "buffer")
    loaded = S2VG.load(tmp_path / "model", env=make_vec_env("Pendulum-v1"))
    loaded.load_replay_buffer(tmp_path / "buffer")
    assert loaded.replay_buffer.size() == model.replay_buffer.size()
    np.testing.assert_array_equal(loaded.replay_buffer.observations, model.replay_buffer.observations)
    updates_before, ac_updates_before = loaded._n_updates, loaded._n_actor_critic_updates
    loaded.learn(50, reset_num_timesteps=False)
    assert loaded.num_timesteps == 200
    assert loaded._n_updates == updates_before + 50  # gradient steps, as SB3 counts them
    assert loaded._n_actor_critic_updates == ac_updates_before + 50 * loaded.actor_critic_updates


def test_termination_fn_survives_save_load(tmp_path):
    from sb3_s2vg.termination import inverted_pendulum_termination

    model = S2VG("MlpPolicy", "Pendulum-v1", termination_fn=inverted_pendulum_termination, policy_kwargs=dict(net_arch=[8]))
    model.save(tmp_path / "model")
    loaded = S2VG.load(tmp_path / "model")
    assert loaded.termination_fn is inverted_pendulum_termination
    assert loaded.world_model.termination_fn is inverted_pendulum_termination
