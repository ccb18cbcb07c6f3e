import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces

from sb3_s2vg import S2VG


class _SpaceEnv(gym.Env):
    def __init__(self, observation_space, action_space):
        self.observation_space = observation_space
        self.action_space = action_space

    def reset(self, seed=None, options=None):
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, False, {}


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(horizon=0), "horizon"),
        (dict(horizon=1.5), "horizon"),
        (dict(policy_horizon=0), "policy_horizon"),
        (dict(min_q_subset=0), "min_q_subset"),
        (dict(n_models=0), "n_models"),
        (dict(n_models=3, n_elites=4), "n_elites"),
        (dict(ensemble_prediction="median"), "ensemble_prediction"),
        (dict(min_q_subset=3), "min_q_subset"),
        (dict(policy_kwargs=dict(n_critics=0)), "n_critics"),
        (dict(actor_critic_updates=0), "actor_critic_updates"),
        (dict(model_gradient_steps=-1), "model_gradient_steps"),
        (dict(model_batch_size=0), "model_batch_size"),
        (dict(batch_size=0), "batch_size"),
        (dict(learning_rate=0.0), "learning_rate"),
        (dict(value_learning_rate=-1e-3), "value_learning_rate"),
        (dict(model_learning_rate=lambda progress: 0.0), "model_learning_rate"),
        (dict(tau=0.0), "tau"),
        (dict(gamma=1.5), "gamma"),
        (dict(ent_coef=-0.1), "ent_coef"),
        (dict(ent_coef="fixed"), "ent_coef"),
        (dict(model_loss="l1"), "model_loss"),
        (dict(termination_fn="hopper"), "termination_fn"),
        (dict(policy_kwargs=dict(net_arch=dict(policy=[8]))), "net_arch"),
    ],
)
def test_bad_hyperparameters_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        S2VG("MlpPolicy", "Pendulum-v1", **kwargs)


def test_discrete_action_space_is_refused():
    env = _SpaceEnv(spaces.Box(-1, 1, (3,)), spaces.Discrete(2))
    with pytest.raises(AssertionError, match="Discrete"):
        S2VG("MlpPolicy", env)


@pytest.mark.parametrize(
    "observation_space",
    [
        spaces.Discrete(4),
        spaces.Box(0, 255, (32, 32, 3), dtype=np.uint8),
        spaces.Dict({"x": spaces.Box(-1, 1, (2,)), "k": spaces.Discrete(3)}),
    ],
)
def test_unsupported_observation_spaces_are_named(observation_space):
    env = _SpaceEnv(observation_space, spaces.Box(-1, 1, (1,)))
    with pytest.raises(ValueError, match="observation space"):
        S2VG("MlpPolicy", env)


class _NanRewardEnv(_SpaceEnv):
    def step(self, action):
        return self.observation_space.sample(), float("nan"), False, False, {}


def test_nan_rewards_stop_training_with_a_clear_error():
    env = _NanRewardEnv(spaces.Box(-1, 1, (3,)), spaces.Box(-1, 1, (1,)))
    model = S2VG("MlpPolicy", env, learning_starts=10, policy_kwargs=dict(net_arch=[8]))
    with pytest.raises(ValueError, match="non-finite reward or observation"):
        model.learn(20)


def test_diverging_losses_stop_training_with_a_clear_error():
    model = S2VG("MlpPolicy", "Pendulum-v1", learning_starts=10, policy_kwargs=dict(net_arch=[8]))
    model.learn(20)
    with th.no_grad():
        model.critic.q_networks.weights[0].fill_(float("inf"))
    with pytest.raises(RuntimeError, match=r"diverged: non-finite .*critic_loss"):
        model.train(gradient_steps=1, batch_size=8)


@pytest.mark.parametrize(
    "option, constructor_value, policy_kwargs_value",
    [
        ("predict_delta", True, False),
        ("normalize_model", True, False),
        ("learn_termination", False, True),
        ("termination_fn", None, "sb3_s2vg.termination.hopper_termination"),
    ],
)
def test_world_model_option_in_policy_kwargs_must_agree_with_the_constructor(option, constructor_value, policy_kwargs_value):
    with pytest.raises(ValueError, match=rf"policy_kwargs\['{option}'\].*conflicts with S2VG\({option}="):
        S2VG("MlpPolicy", "Pendulum-v1", policy_kwargs={option: policy_kwargs_value}, **{option: constructor_value})


def test_world_model_options_reach_the_world_model_from_the_constructor(tmp_path):
    from sb3_s2vg.termination import hopper_termination

    model = S2VG(
        "MlpPolicy", "Hopper-v5", predict_delta=False, normalize_model=False, learn_termination=True,
        termination_fn="sb3_s2vg.termination.hopper_termination", policy_kwargs=dict(net_arch=[8], predict_delta=False),
    )  # fmt: skip
    world_model = model.world_model
    assert not world_model.predict_delta and not world_model.obs_normalizer.enabled
    assert world_model.termination is not None and world_model.termination_fn is hopper_termination
    assert world_model.termination_classifier is None  # the known function wins
    model.save(tmp_path / "model")
    loaded = S2VG.load(tmp_path / "model")
    assert loaded.world_model.termination_fn is hopper_termination and not loaded.world_model.predict_delta
    # policy_kwargs are saved as the user gave them (plus SB3's use_sde): the options live in S2VG's attributes
    assert loaded.policy_kwargs == dict(net_arch=[8], predict_delta=False, use_sde=False)
