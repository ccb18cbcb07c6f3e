import numpy as np
import pytest
import torch as th
from gymnasium import spaces

from sb3_s2vg.world_model import RunningNormalizer, WorldModel


def test_running_normalizer_matches_numpy_statistics():
    rng = np.random.default_rng(0)
    data = rng.normal(loc=[3.0, -2.0], scale=[0.5, 4.0], size=(1000, 2)).astype(np.float32)
    normalizer = RunningNormalizer(2)
    for chunk in np.array_split(data, 7):
        normalizer.update(th.as_tensor(chunk))
    np.testing.assert_allclose(normalizer.mean.numpy(), data.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(normalizer.var.numpy(), data.var(axis=0), rtol=1e-4)
    assert normalizer.count.item() == 1000
    normalized = normalizer.normalize(th.as_tensor(data)).numpy()
    np.testing.assert_allclose(normalized.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(normalized.std(axis=0), 1.0, atol=1e-3)
    np.testing.assert_allclose(normalizer.denormalize(th.as_tensor(normalized)).numpy(), data, atol=1e-4)


def test_disabled_normalizer_is_identity_but_keeps_statistics():
    normalizer = RunningNormalizer(3, enabled=False)
    x = th.randn(10, 3) * 5 + 2
    normalizer.update(x)
    assert th.equal(normalizer.normalize(x), x)
    assert normalizer.count.item() == 10


def _box(dim: int) -> spaces.Box:
    return spaces.Box(-np.inf, np.inf, (dim,), np.float32)


def _linear_system(n: int, seed: int = 0):
    """s' = A s + B a, r = -|s|² - 0.1 |a|², a known system the world model must fit."""
    gen = th.Generator().manual_seed(seed)
    a_matrix = th.tensor([[0.9, 0.2, 0.0], [-0.1, 0.8, 0.1], [0.0, 0.3, 0.95]])
    b_matrix = th.tensor([[0.5, 0.0], [0.0, 1.0], [0.2, -0.3]])
    obs = th.randn(n, 3, generator=gen) * 2.0
    actions = th.rand(n, 2, generator=gen) * 2 - 1
    next_obs = obs @ a_matrix.T + actions @ b_matrix.T
    rewards = -(obs.square().sum(1, keepdim=True)) - 0.1 * actions.square().sum(1, keepdim=True)
    return obs, actions, next_obs, rewards


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["mse", "nll"])
def test_world_model_fits_a_known_linear_system(loss):
    th.manual_seed(0)
    model = WorldModel(_box(3), _box(2), dynamics_arch=[64, 64], reward_arch=[64, 64], termination_arch=[16])
    optimizer = th.optim.Adam(model.parameters(), lr=3e-3)
    obs, actions, next_obs, rewards = _linear_system(4096)
    dones = th.zeros(len(obs), 1)
    for _ in range(1500):
        idx = th.randint(0, len(obs), (256,))
        model.update_normalizers(obs[idx], next_obs[idx], rewards[idx])
        losses = model.loss(obs[idx], actions[idx], next_obs[idx], rewards[idx], dones[idx], loss)
        optimizer.zero_grad()
        sum(losses).backward()
        optimizer.step()
    test_obs, test_actions, test_next_obs, test_rewards = _linear_system(1000, seed=1)
    _, obs_nmse, reward_mse = model.prediction_errors(test_obs, test_actions, test_next_obs, test_rewards)
    # Predicting the mean change would give a normalised error of 1; the fitted model is far better
    assert obs_nmse.mean().item() < 0.02
    assert reward_mse.mean().item() < 0.05 * test_rewards.var().item()
    # Sampled predictions are close to the truth too (the predicted noise is small for a deterministic system)
    prediction = model(test_obs, test_actions)
    assert (prediction.next_observations - test_next_obs).square().mean().item() < 0.1


def test_world_model_samples_are_differentiable_in_actions():
    model = WorldModel(_box(3), _box(2), dynamics_arch=[16], reward_arch=[16], termination_arch=[16])
    actions = th.zeros(4, 2, requires_grad=True)
    prediction = model(th.randn(4, 3), actions)
    (prediction.next_observations.sum() + prediction.rewards.sum()).backward()
    assert actions.grad is not None and actions.grad.abs().sum() > 0


def test_learned_termination_classifier_separates_terminal_states():
    th.manual_seed(0)
    model = WorldModel(_box(2), _box(1), dynamics_arch=[32], reward_arch=[32], termination_arch=[32], learn_termination=True)
    optimizer = th.optim.Adam(model.parameters(), lr=3e-3)
    obs = th.randn(2048, 2)
    actions = th.rand(2048, 1) * 2 - 1
    next_obs = obs + 0.1 * actions
    dones = (next_obs[:, :1] > 1.0).float()
    for _ in range(600):
        idx = th.randint(0, 2048, (256,))
        model.update_normalizers(obs[idx], next_obs[idx], th.zeros(256, 1))
        losses = model.loss(obs[idx], actions[idx], next_obs[idx], th.zeros(256, 1), dones[idx])
        optimizer.zero_grad()
        sum(losses).backward()
        optimizer.step()
    probabilities = model(obs, actions, deterministic=True).dones
    accuracy = ((probabilities > 0.5).float() == dones).float().mean().item()
    assert accuracy > 0.95


def test_termination_fn_takes_precedence():
    model = WorldModel(
        _box(2), _box(1), dynamics_arch=[8], reward_arch=[8], termination_arch=[8], learn_termination=True,
        termination_fn=lambda obs, action, next_obs: th.ones(len(obs), dtype=th.bool),
    )  # fmt: skip
    assert model.termination_classifier is None
    dones = model(th.randn(5, 2), th.zeros(5, 1)).dones
    assert dones.shape == (5, 1) and th.all(dones == 1.0)


def test_world_model_speaks_dict_observations():
    observation_space = spaces.Dict({"position": _box(2), "goal": spaces.Box(-1, 1, (2, 1), np.float32)})
    model = WorldModel(observation_space, _box(1), dynamics_arch=[8], reward_arch=[8], termination_arch=[8])
    observations = {key: th.as_tensor(np.stack([space.sample() for _ in range(5)])) for key, space in observation_space.items()}
    prediction = model(observations, th.zeros(5, 1))
    assert set(prediction.next_observations) == {"position", "goal"}
    assert prediction.next_observations["goal"].shape == (5, 2, 1) and prediction.rewards.shape == (5, 1)
    # The flat vector is the space's keys in order, each flattened: what SB3's CombinedExtractor reads
    flat = model.flattener.flatten(observations)
    th.testing.assert_close(flat, th.cat([observations["goal"].reshape(5, 2), observations["position"]], dim=1))
    model.update_normalizers(observations, prediction.next_observations, prediction.rewards)
    losses = model.loss(observations, th.zeros(5, 1), prediction.next_observations, prediction.rewards, th.zeros(5, 1))
    assert all(th.isfinite(loss) for loss in losses)


def test_predict_transition_scales_env_actions_and_speaks_numpy():
    """``S2VG.predict_transition`` takes env actions (scaled inside) and numpy observations, single or batched, and
    gives the world model's deterministic prediction for the scaled action."""
    from sb3_s2vg import S2VG

    model = S2VG("MlpPolicy", "Pendulum-v1", learning_starts=50, seed=0, policy_kwargs=dict(net_arch=[16]))
    model.learn(120)
    obs = np.array([0.5, -0.5, 1.0], dtype=np.float32)
    env_action = np.array([1.0], dtype=np.float32)  # Pendulum's actions lie in [-2, 2]: scaled, this is 0.5
    next_obs, reward, done = model.predict_transition(obs, env_action)
    assert next_obs.shape == (3,) and reward.shape == () and done is None
    with th.no_grad():
        expected = model.world_model(th.as_tensor(obs[None]), th.tensor([[0.5]]), deterministic=True)
    np.testing.assert_allclose(next_obs, expected.next_observations[0].numpy(), rtol=1e-6)
    np.testing.assert_allclose(reward, expected.rewards[0, 0].numpy(), rtol=1e-6)
    batch_next, batch_rewards, _ = model.predict_transition(np.stack([obs, obs]), np.stack([env_action, -env_action]))
    assert batch_next.shape == (2, 3) and batch_rewards.shape == (2,)
    np.testing.assert_allclose(batch_next[0], next_obs, rtol=1e-6)
    with pytest.raises(ValueError, match="outside the action space"):
        model.predict_transition(obs, np.array([3.0]))
    with pytest.raises(ValueError, match="2 actions for 1 observations"):
        model.predict_transition(obs, np.zeros((2, 1)))
