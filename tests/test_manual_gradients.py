"""
The hand-derived actor-critic update (``sb3_s2vg.manual_gradients``) against autograd on the same batch, the same
parameters and the same random stream: same losses, same gradients, in every configuration it covers; and the
configurations it does not cover fall back to autograd.
"""

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from torch import nn

from sb3_s2vg import S2VG
from sb3_s2vg.manual_gradients import ManualActorCriticGradients

SMALL = dict(net_arch=[32, 32])


class _GoalEnv(gym.Env):
    """A point that moves by its action toward a goal; Dict observation {"position": (2,), "goal": (2, 1)}."""

    observation_space = spaces.Dict(
        {"position": spaces.Box(-10, 10, (2,), np.float32), "goal": spaces.Box(-1, 1, (2, 1), np.float32)}
    )
    action_space = spaces.Box(-1, 1, (2,), np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.position = self.np_random.uniform(-1, 1, 2).astype(np.float32)
        self.goal = self.np_random.uniform(-1, 1, (2, 1)).astype(np.float32)
        return self._obs(), {}

    def _obs(self):
        return {"position": self.position.copy(), "goal": self.goal.copy()}

    def step(self, action):
        self.position = np.clip(self.position + 0.1 * action, -10, 10).astype(np.float32)
        distance = float(np.linalg.norm(self.position - self.goal[:, 0]))
        return self._obs(), -distance, distance < 0.05, False, {}


def _pair(env_id: str, **kwargs) -> tuple[S2VG, S2VG]:
    """Two agents with the same parameters and buffer: one on autograd, one on the hand-derived update."""
    kwargs = {"learning_starts": 100, "batch_size": 64, "model_batch_size": 64, "seed": 0, "policy_kwargs": SMALL, **kwargs}
    env, policy = (_GoalEnv(), "MultiInputPolicy") if env_id == "goal" else (env_id, "MlpPolicy")
    reference = S2VG(policy, env, manual_gradients=False, **kwargs)
    reference.learn(150)  # trains the world model and V a little, so that nothing sits at its initial value
    manual = S2VG(policy, env, manual_gradients=True, **kwargs)
    manual.set_parameters(reference.get_parameters())
    if reference.log_ent_coef is not None:  # a saved variable, not a state dict
        manual.log_ent_coef.data.copy_(reference.log_ent_coef.data)
    assert reference._manual_gradients is None and manual._manual_gradients is not None
    return reference, manual


def _gradients(model: S2VG, data, seed: int) -> tuple[list[th.Tensor], list[th.Tensor]]:
    for module in (model.actor, model.critic, model.value_net, model.world_model):
        module.zero_grad(set_to_none=True)
    th.manual_seed(seed)
    losses = model._actor_critic_gradients(data)
    loss_values = [losses.critic, losses.value, losses.actor, losses.entropy]
    if losses.ent_coef is not None:
        loss_values.append(losses.ent_coef.detach())
    grads = [p.grad for module in (model.actor, model.critic, model.value_net) for p in module.parameters()]
    assert all(p.grad is None for p in model.world_model.parameters()), "the update must not train the world model"
    return loss_values, grads  # type: ignore[return-value]


@pytest.mark.parametrize(
    "env_id, kwargs",
    [
        ("Pendulum-v1", {}),
        ("HalfCheetah-v5", {"ent_coef": "auto"}),
        ("Hopper-v5", {"learn_termination": True}),
        ("Hopper-v5", {"termination_fn": "sb3_s2vg.termination.hopper_termination"}),
        ("Pendulum-v1", {"normalize_model": False, "predict_delta": False, "model_loss": "nll"}),
        ("Pendulum-v1", {"horizon": 2}),
        ("goal", {}),
        ("goal", {"horizon": 2, "learn_termination": True}),
        ("Hopper-v5", {"horizon": 3, "learn_termination": True}),
        ("Hopper-v5", {"horizon": 3, "termination_fn": "sb3_s2vg.termination.hopper_termination"}),
        ("Hopper-v5", {"horizon": 3, "learn_termination": True, "on_policy_value_expansion": True, "soft_value_expansion": True}),
        ("Pendulum-v1", {"on_policy_value_expansion": True}),
        (
            "Pendulum-v1",
            {"policy_kwargs": dict(net_arch=dict(pi=[16], qf=[24, 8, 8], vf=[8, 16], dynamics=[8], reward=[16, 8]), n_critics=3)},
        ),
        ("Pendulum-v1", {"policy_kwargs": dict(net_arch=dict(pi=[], qf=[], vf=[], dynamics=[], reward=[]))}),
        ("Pendulum-v1", {"min_q_subset": 2, "policy_kwargs": dict(net_arch=[32, 32], n_critics=5)}),
        ("HalfCheetah-v5", {"policy_kwargs": dict(net_arch=[32, 32], normalize_input=True)}),
        ("goal", {"horizon": 2, "policy_kwargs": dict(net_arch=[32, 32], normalize_input=True)}),
    ],
)
def test_manual_gradients_equal_autograd(env_id, kwargs):
    reference, manual = _pair(env_id, **kwargs)
    data = reference.replay_buffer.sample(64)
    expected_losses, expected_grads = _gradients(reference, data, seed=7)
    losses, grads = _gradients(manual, data, seed=7)
    for got, expected in zip(losses, expected_losses):
        th.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert len(grads) == len(expected_grads)
    for got, expected in zip(grads, expected_grads):
        th.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


def test_manual_gradients_train_like_autograd():
    """
    Whole updates, optimizer steps included, on the same batches: the two paths stay within two Adam steps of each
    other (Adam's normalised steps turn last-bit differences of near-zero gradients into differences of up to a
    learning rate; measured: 1.3e-4 after 1 update, 3.5e-4 after 30, 4.3e-4 after 200, no drift), while the
    parameters move by many steps.
    """
    reference, manual = _pair("Pendulum-v1")
    initial = [p.detach().clone() for p in reference.policy.parameters()]
    for step in range(30):
        batch = reference.replay_buffer.sample(64)
        for model in (reference, manual):
            th.manual_seed(step)
            model._actor_critic_update(batch)
            model._update_value_target()
    largest_move = max((p - p0).abs().max().item() for p, p0 in zip(reference.policy.parameters(), initial))
    assert largest_move > 20 * reference.learning_rate
    for got, expected in zip(manual.policy.parameters(), reference.policy.parameters()):
        th.testing.assert_close(got, expected, rtol=0.0, atol=2 * reference.learning_rate)


class _DifferentiableTermination:
    def __call__(self, obs, action, next_obs):
        return th.sigmoid(next_obs[:, :1])  # a soft done that carries a gradient into the model's prediction


@pytest.mark.parametrize(
    "kwargs, policy",
    [
        ({"use_sde": True}, "MlpPolicy"),
        ({"policy_kwargs": dict(net_arch=[16], activation_fn=nn.Tanh)}, "MlpPolicy"),
        ({"termination_fn": _DifferentiableTermination()}, "MlpPolicy"),
        ({"manual_gradients": False}, "MlpPolicy"),
        ({"policy_horizon": 2}, "MlpPolicy"),
    ],
)
def test_unsupported_configurations_use_autograd(kwargs, policy):
    model = S2VG(policy, "Pendulum-v1", learning_starts=10, batch_size=16, seed=0, **kwargs)
    assert model._manual_gradients is None
    model.learn(20)  # and the autograd update runs


def test_unsupported_reason_names_the_obstacle():
    model = S2VG("MlpPolicy", "Pendulum-v1", use_sde=True, seed=0)
    assert ManualActorCriticGradients.unsupported_reason(model.actor, model.critic, model.value_net, model.world_model) == "gSDE"
    model = S2VG("MlpPolicy", "Pendulum-v1", termination_fn=_DifferentiableTermination(), seed=0)
    reason = ManualActorCriticGradients.unsupported_reason(model.actor, model.critic, model.value_net, model.world_model)
    assert reason == "termination_fn is differentiable"


def test_fallback_is_reported_when_verbose(capsys):
    S2VG("MlpPolicy", "Pendulum-v1", use_sde=True, verbose=1, seed=0)
    assert "actor-critic gradients by autograd, the hand-derived ones do not cover gSDE" in capsys.readouterr().out
    S2VG("MlpPolicy", "Pendulum-v1", verbose=1, seed=0)
    assert "by autograd" not in capsys.readouterr().out


def test_only_plain_relu_mlps_are_taken_apart():
    from sb3_s2vg.manual_gradients import _linear_layers

    relu_mlp = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    assert _linear_layers(relu_mlp) == ([relu_mlp[0], relu_mlp[2]], False)
    latent = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
    assert _linear_layers(latent) == ([latent[0]], True)
    assert _linear_layers(nn.Sequential()) == ([], False)
    assert _linear_layers(nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1))) is None
    assert _linear_layers(nn.Sequential(nn.Linear(2, 3, bias=False))) is None
    assert _linear_layers(nn.Linear(2, 3)) is None
