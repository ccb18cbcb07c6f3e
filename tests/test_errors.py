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
        (dict(soft_value_expansion=True), "soft_value_expansion"),
        (dict(horizon=3, soft_value_expansion=1), "soft_value_expansion"),
        (dict(on_policy_value_expansion="yes"), "on_policy_value_expansion"),
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
        (dict(policy_kwargs=dict(net_arch=[64, 0])), "net_arch"),
        (dict(policy_kwargs=dict(net_arch=dict(qf=[64, -1]))), "net_arch"),
        (dict(policy_kwargs=dict(net_arch=[64.0])), "net_arch"),
        (dict(ent_coef="auto_x"), "ent_coef"),
        (dict(ent_coef="auto_-0.1"), "ent_coef"),
        (dict(ent_coef=float("nan")), "ent_coef"),
        (dict(target_entropy="foo"), "target_entropy"),
        (dict(learning_rate=float("inf")), "learning_rate"),
        (dict(termination_fn=lambda obs, action, next_obs: np.zeros(len(obs), dtype=bool)), "termination_fn"),
        (dict(termination_fn=lambda obs, action, next_obs: True), "termination_fn"),
        (dict(termination_fn=lambda obs, action, next_obs: th.zeros(len(obs), 2)), "termination_fn"),
        (dict(termination_fn=lambda obs, action, next_obs: obs[:, 99] > 0), "termination_fn"),
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
    with pytest.raises(ValueError, match="non-finite reward"):
        model.learn(20)
    assert model.replay_buffer.size() == 0  # refused before it entered the buffer


class _NanTerminalEnv(_SpaceEnv):
    """Ends every episode at its third step with a NaN final observation (seen as infos' terminal_observation)."""

    def reset(self, seed=None, options=None):
        self.t = 0
        return np.zeros(3, dtype=np.float32), {}

    def step(self, action):
        self.t += 1
        obs = np.full(3, np.nan if self.t == 3 else 0.0, dtype=np.float32)
        return obs, 0.0, self.t == 3, False, {}


class _NanResetEnv(_SpaceEnv):
    def reset(self, seed=None, options=None):
        return np.full(3, np.nan, dtype=np.float32), {}


@pytest.mark.parametrize("env_class, what", [(_NanTerminalEnv, "terminal_observation"), (_NanResetEnv, "reset observation")])
def test_nan_terminal_and_reset_observations_never_enter_the_buffer(env_class, what):
    env = env_class(spaces.Box(-1, 1, (3,)), spaces.Box(-1, 1, (1,)))
    model = S2VG("MlpPolicy", env, learning_starts=100, policy_kwargs=dict(net_arch=[8]))
    with pytest.raises(ValueError, match=what):
        model.learn(20)
    assert model.replay_buffer.size() == (2 if env_class is _NanTerminalEnv else 0)  # the NaN transition is not stored


def test_a_learning_rate_schedule_that_turns_negative_is_refused_when_it_does():
    def schedule(progress_remaining):
        return 3e-4 if progress_remaining > 0.5 else -3e-4

    model = S2VG("MlpPolicy", "Pendulum-v1", learning_starts=10, value_learning_rate=schedule, policy_kwargs=dict(net_arch=[8]))
    with pytest.raises(ValueError, match=r"value_learning_rate .* progress_remaining=0\.5\)"):
        model.learn(50)
    assert model.num_timesteps == 25  # refused at the first update where it turned negative


@pytest.mark.parametrize("algo", ["SAC", "TQC"])
def test_loading_another_algorithms_file_names_it(tmp_path, algo):
    if algo == "SAC":
        from stable_baselines3 import SAC as cls
    else:
        from sb3_contrib import TQC as cls
    cls("MlpPolicy", "Pendulum-v1", policy_kwargs=dict(net_arch=[8])).save(tmp_path / "other")
    with pytest.raises(ValueError, match=rf"holds {algo}Policy .* load it with {algo}\.load"):
        S2VG.load(tmp_path / "other")
    with pytest.raises(ValueError, match=rf"{algo}\.load"), open(tmp_path / "other.zip", "rb") as file:
        S2VG.load(file)


class _TerminatingEnv(_SpaceEnv):
    def reset(self, seed=None, options=None):
        self.t = 0
        return np.zeros(3, dtype=np.float32), {}

    def step(self, action):
        self.t += 1
        return np.zeros(3, dtype=np.float32), 0.0, self.t == 5, False, {}


def test_a_terminating_env_without_termination_model_warns_once():
    env = _TerminatingEnv(spaces.Box(-1, 1, (3,)), spaces.Box(-1, 1, (1,)))
    model = S2VG("MlpPolicy", env, learning_starts=100, policy_kwargs=dict(net_arch=[8]))
    with pytest.warns(UserWarning, match="terminated at step 5") as record:
        model.learn(30)
    assert sum("terminated" in str(warning.message) for warning in record) == 1
    with pytest.warns(UserWarning, match="Hopper-v5 ends episodes on termination"):
        S2VG("MlpPolicy", "Hopper-v5")


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
