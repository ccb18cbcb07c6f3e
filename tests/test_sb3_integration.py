"""S2VG behaves as SB3 users expect of SAC: callbacks, VecNormalize, several envs, Dict observations, logging."""

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.callbacks import CheckpointCallback, EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize

from sb3_s2vg import S2VG

SMALL = dict(net_arch=[32, 32])


@pytest.mark.slow
def test_callbacks_eval_and_checkpoint(tmp_path):
    eval_env = make_vec_env("Pendulum-v1", n_envs=1, seed=3)
    eval_callback = EvalCallback(eval_env, eval_freq=100, n_eval_episodes=1, log_path=str(tmp_path / "eval"))
    checkpoint = CheckpointCallback(save_freq=100, save_path=str(tmp_path / "ckpt"), save_replay_buffer=True)
    model = S2VG("MlpPolicy", "Pendulum-v1", learning_starts=50, policy_kwargs=SMALL, seed=0)
    model.learn(200, callback=[eval_callback, checkpoint])
    assert len(np.load(tmp_path / "eval" / "evaluations.npz")["timesteps"]) == 2
    assert (tmp_path / "ckpt" / "rl_model_200_steps.zip").exists()
    assert (tmp_path / "ckpt" / "rl_model_replay_buffer_200_steps.pkl").exists()
    S2VG.load(tmp_path / "ckpt" / "rl_model_200_steps.zip")


def test_vec_normalize_and_several_envs():
    env = VecNormalize(make_vec_env("Pendulum-v1", n_envs=3, seed=0))
    model = S2VG("MlpPolicy", env, learning_starts=30, batch_size=32, model_batch_size=32, policy_kwargs=SMALL, seed=0)
    model.learn(150)
    assert model.num_timesteps == 150
    assert model.replay_buffer.size() == 50  # 150 steps over 3 envs
    # The world model saw normalised observations: their running mean is near zero, unlike raw Pendulum speeds
    assert model.world_model.obs_normalizer.count.item() > 0
    assert np.all(np.abs(model.world_model.obs_normalizer.mean.numpy()) < 3.0)


class _DictEnv(gym.Env):
    """A point that moves by its action; observation {"position": (2,), "goal": (2,)}, reward minus distance."""

    observation_space = spaces.Dict(
        {"position": spaces.Box(-10, 10, (2,), np.float32), "goal": spaces.Box(-1, 1, (2,), np.float32)}
    )
    action_space = spaces.Box(-1, 1, (2,), np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.position = self.np_random.uniform(-1, 1, 2).astype(np.float32)
        self.goal = self.np_random.uniform(-1, 1, 2).astype(np.float32)
        self.t = 0
        return self._obs(), {}

    def _obs(self):
        return {"position": self.position.copy(), "goal": self.goal.copy()}

    def step(self, action):
        self.position = np.clip(self.position + 0.1 * action, -10, 10).astype(np.float32)
        self.t += 1
        return self._obs(), -float(np.linalg.norm(self.position - self.goal)), False, self.t >= 50, {}


def test_multi_input_policy_with_dict_observations(tmp_path):
    model = S2VG("MultiInputPolicy", _DictEnv(), learning_starts=50, horizon=2, policy_kwargs=SMALL, seed=0)
    assert model._manual_gradients is not None  # Dict of vector boxes: the hand-derived update
    model.learn(150)
    assert model.world_model.obs_dim == 4
    obs, _ = _DictEnv().reset(seed=1)
    action, _ = model.predict(obs, deterministic=True)
    model.save(tmp_path / "dict_model")
    loaded = S2VG.load(tmp_path / "dict_model")
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], action)
    flat = model.world_model.flattener.flatten({k: th.as_tensor(v[None]) for k, v in obs.items()})
    restored = model.world_model.flattener.unflatten(flat)
    for key in obs:
        np.testing.assert_array_equal(restored[key].numpy()[0], obs[key])


@pytest.mark.slow
def test_tensorboard_logs_every_loss_and_progress_bar(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model = S2VG("MlpPolicy", "Pendulum-v1", learning_starts=50, tensorboard_log=str(tmp_path), policy_kwargs=SMALL)
    model.learn(400, progress_bar=True, log_interval=1)
    (run_dir,) = (tmp_path).iterdir()
    events = EventAccumulator(str(run_dir))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for name in [
        "actor_loss",
        "critic_loss",
        "value_loss",
        "dynamics_loss",
        "reward_loss",
        "ent_coef",
        "entropy",
        "model_holdout_obs_mse",
        "model_holdout_obs_nmse",
        "model_holdout_reward_mse",
    ]:
        assert f"train/{name}" in tags, name


@pytest.mark.parametrize("manual_gradients", [False, True])
def test_logged_entropy_is_the_policys_entropy(manual_gradients):
    """train/entropy is −mean log π(a|s) of the update's policy samples: for a policy fixed at tanh(N(0, σ²)), the
    Gaussian's entropy ½ log(2πe σ²) less the tanh correction (about σ² for a small σ)."""
    model = S2VG(
        "MlpPolicy", "Pendulum-v1", learning_starts=300, actor_critic_updates=1, policy_kwargs=SMALL, seed=0,
        manual_gradients=manual_gradients,
    )  # fmt: skip
    model.learn(300)  # fills the buffer; no update yet
    entropies = {}
    for log_std in (0.0, -3.0):
        with th.no_grad():  # every state: mean 0, log σ = log_std; the first update samples from this policy
            for layer, bias in ((model.actor.mu, 0.0), (model.actor.log_std, log_std)):
                layer.weight.zero_()
                layer.bias.fill_(bias)
        model.train(gradient_steps=1, batch_size=1024)
        entropies[log_std] = model.logger.name_to_value["train/entropy"]
    sigma = np.exp(-3.0)
    assert entropies[-3.0] == pytest.approx(0.5 * np.log(2 * np.pi * np.e * sigma**2) - sigma**2, abs=0.08)
    # σ = 1: the tanh correction E[log(1 − tanh²(u) + 1e-6)], u ~ N(0, 1), is −0.749 (Monte Carlo, 10⁷ samples)
    assert entropies[0.0] == pytest.approx(0.5 * np.log(2 * np.pi * np.e) - 0.749, abs=0.08)


def test_learned_entropy_coefficient_moves():
    model = S2VG("MlpPolicy", "Pendulum-v1", ent_coef="auto_0.5", learning_starts=50, policy_kwargs=SMALL, seed=0)
    model.learn(150)
    assert abs(th.exp(model.log_ent_coef).item() - 0.5) > 1e-3


def _never_ends_built_on_the_cpu(obs: th.Tensor, action: th.Tensor, next_obs: th.Tensor) -> th.Tensor:
    return th.zeros(len(obs), dtype=th.bool)  # a new tensor on the default device, as a user's function may return


@pytest.mark.cuda
@pytest.mark.skipif(not th.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(
    "kwargs",
    [
        dict(policy_kwargs=SMALL),  # the paper's configuration, manual-gradient fast path
        dict(  # the options: ensemble, imagined transitions, H_pi = 2 (autograd), input normalisation, a CPU verdict
            n_models=2,
            imagined_ratio=0.5,
            policy_horizon=2,
            termination_fn=_never_ends_built_on_the_cpu,
            policy_kwargs=dict(net_arch=[16], normalize_input=True),
        ),
    ],
)
def test_cuda_device(tmp_path, kwargs):
    model = S2VG("MlpPolicy", "Pendulum-v1", learning_starts=50, seed=0, device="cuda", **kwargs)
    model.learn(150)
    for module in (model.world_model, model.actor, model.critic, model.value_net):
        assert all(parameter.is_cuda for parameter in module.parameters())
    obs = model.env.observation_space.sample()[None]
    model.save(tmp_path / "model")
    loaded = S2VG.load(tmp_path / "model", device="cuda")
    np.testing.assert_array_equal(model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])


def test_n_updates_counts_gradient_steps_as_sb3_does():
    """SB3's meaning of train/n_updates: with gradient_steps=-1, one gradient step per env step collected
    (train_freq * n_envs per rollout); S2VG's m actor-critic updates and world-model updates are counted apart."""
    from stable_baselines3.common.env_util import make_vec_env

    model = S2VG(
        "MlpPolicy", make_vec_env("Pendulum-v1", n_envs=2), train_freq=2, gradient_steps=-1, learning_starts=0,
        batch_size=8, model_batch_size=8, actor_critic_updates=3, policy_kwargs=SMALL, seed=0,
    )  # fmt: skip
    model.learn(20)
    assert model.num_timesteps == 20 and model._n_updates == 20
    assert model._n_actor_critic_updates == 60 and model._n_model_updates == 20
    assert model.logger.name_to_value["train/n_updates"] == 20
