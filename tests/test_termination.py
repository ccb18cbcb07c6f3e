"""The known termination functions of ``sb3_s2vg.termination`` against the environments' own terminations."""

import gymnasium as gym
import numpy as np
import pytest
import torch as th

from sb3_s2vg import S2VG
from sb3_s2vg.termination import (
    SOFT_TERMINATION_WIDTH,
    hopper_termination,
    walker2d_healthy_margins,
    walker2d_soft_termination,
    walker2d_termination,
)


def _random_transitions(env_id: str, n_steps: int, seed: int = 0) -> tuple[th.Tensor, th.Tensor, th.Tensor, np.ndarray]:
    """(obs, action, next_obs, terminated) of a uniformly random policy, episodes restarted on termination."""
    env = gym.make(env_id)
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    observations, actions, next_observations, terminations = [], [], [], []
    for _ in range(n_steps):
        action = env.action_space.sample()
        next_obs, _, terminated, truncated, _ = env.step(action)
        observations.append(obs)
        actions.append(action)
        next_observations.append(next_obs)
        terminations.append(terminated)
        obs = env.reset()[0] if terminated or truncated else next_obs
    env.close()
    as_tensor = lambda x: th.as_tensor(np.asarray(x), dtype=th.float32)  # noqa: E731
    return as_tensor(observations), as_tensor(actions), as_tensor(next_observations), np.asarray(terminations)


@pytest.mark.parametrize("env_id, termination_fn", [("Hopper-v5", hopper_termination), ("Walker2d-v5", walker2d_termination)])
def test_known_termination_reproduces_the_environment(env_id, termination_fn):
    obs, actions, next_obs, terminated = _random_transitions(env_id, 600)
    assert 5 <= terminated.sum() < len(terminated)  # both outcomes occur
    np.testing.assert_array_equal(termination_fn(obs, actions, next_obs).flatten().numpy(), terminated.astype(np.float32))


def test_walker2d_soft_termination_agrees_with_the_environment_and_is_smooth():
    obs, actions, next_obs, terminated = _random_transitions("Walker2d-v5", 600)
    soft = walker2d_soft_termination(obs, actions, next_obs).flatten()
    assert soft.shape == (len(terminated),) and bool(((soft >= 0) & (soft <= 1)).all())
    assert bool((soft[th.as_tensor(terminated)] >= 0.5).all())
    # away from every bound (five widths or more) it is the 0/1 function within 0.03 (three bounds at 1 − σ(5) each)
    margin = walker2d_healthy_margins(next_obs).abs().min(0).values
    far = margin >= 5 * SOFT_TERMINATION_WIDTH
    assert far.sum() > len(far) // 2
    np.testing.assert_allclose(soft[far].numpy(), terminated[far.numpy()].astype(np.float32), atol=0.03)


def test_walker2d_soft_termination_has_a_gradient_towards_the_bounds():
    next_obs = th.zeros(3, 17)
    next_obs[:, 0] = th.tensor([0.81, 1.4, 1.99])  # near the lower height bound, mid-range, near the upper one
    next_obs.requires_grad_(True)
    walker2d_soft_termination(next_obs, th.zeros(3, 6), next_obs).sum().backward()
    grad_height = next_obs.grad[:, 0]
    assert grad_height[0] < -1.0 and grad_height[2] > 1.0  # falling lower / rising higher raises d
    assert abs(float(grad_height[1])) < 1e-6


def test_s2vg_trains_with_the_soft_termination_by_autograd():
    model = S2VG(
        "MlpPolicy", "Walker2d-v5", termination_fn="sb3_s2vg.termination.walker2d_soft_termination", learning_starts=100,
        batch_size=32, model_batch_size=32, actor_critic_updates=1, imagined_ratio=0.5, model_rollout_batch_size=16,
        policy_kwargs=dict(net_arch=[16]), seed=0,
    )  # fmt: skip
    assert model._manual_gradients is None  # the hand-derived path takes only termination functions without a gradient
    model.learn(150)
    assert model._imagined is not None and model._imagined.size > 0
    dones = model._imagined.dones[: model._imagined.size]
    assert bool(((dones >= 0) & (dones <= 1)).all())
    assert bool(((dones > 1e-3) & (dones < 1 - 1e-3)).any())  # probabilities, not 0/1 indicators
