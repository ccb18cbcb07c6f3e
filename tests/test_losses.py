"""The losses of S2VG against the paper's equations, on small hand-checkable cases."""

import numpy as np
import pytest
import torch as th

from sb3_s2vg import S2VG
from sb3_s2vg.s2vg import alive_weights, value_expansion_targets


def make_model(horizon: int = 1, **kwargs) -> S2VG:
    kwargs.setdefault("policy_kwargs", dict(net_arch=[32, 32]))
    model = S2VG("MlpPolicy", "Pendulum-v1", horizon=horizon, learning_starts=0, seed=0, **kwargs)
    model.learn(64)  # fills the buffer with 64 transitions and makes a few updates
    return model


def test_value_expansion_targets_by_hand():
    rewards = th.tensor([1.0, 2.0, 3.0]).reshape(3, 1, 1)
    dones = th.zeros(3, 1, 1)
    targets = value_expansion_targets(rewards, dones, th.tensor([[8.0]]), gamma=0.5)
    # G_2 = 3 + .5*8 = 7; G_1 = 2 + .5*7 = 5.5; G_0 = 1 + .5*5.5 = 3.75
    np.testing.assert_allclose(targets.flatten().numpy(), [3.75, 5.5, 7.0])


def test_value_expansion_stops_at_termination():
    rewards = th.tensor([1.0, 2.0, 3.0]).reshape(3, 1, 1)
    dones = th.tensor([0.0, 1.0, 0.0]).reshape(3, 1, 1)
    targets = value_expansion_targets(rewards, dones, th.tensor([[8.0]]), gamma=0.5)
    # G_1 = 2 (terminal), G_0 = 1 + .5*2 = 2
    np.testing.assert_allclose(targets.flatten().numpy(), [2.0, 2.0, 7.0])
    np.testing.assert_allclose(alive_weights(dones).flatten().numpy(), [1.0, 1.0, 0.0])


def _make_world_model_constant(model: S2VG, reward: float, value: float) -> None:
    """Dynamics s' = s (zero delta), reward = ``reward``, V_target = ``value``, all (almost) without noise."""
    world_model = model.world_model
    with th.no_grad():
        for head, mean in [(world_model.dynamics, 0.0), (world_model.reward, reward)]:
            last = head.net[-1]
            last.weight.zero_()
            out = head.output_dim
            last.bias[:out] = mean
            last.bias[out:] = -30.0  # log std at its lower bound: noise ~ 5e-5
        for normalizer in (world_model.obs_normalizer, world_model.dynamics_target_normalizer, world_model.reward_normalizer):
            normalizer.mean.zero_()
            normalizer.var.fill_(1.0 - normalizer.epsilon)
            normalizer.std.fill_(1.0)
        model.value_target.v_net[-1].weight.zero_()
        model.value_target.v_net[-1].bias.fill_(value)


def test_h3_critic_target_equals_hand_computed_expansion():
    model = make_model(horizon=3, gamma=0.9)
    _make_world_model_constant(model, reward=-2.0, value=10.0)
    data = model.replay_buffer.sample(16)
    th.manual_seed(7)
    observations, actions, rewards, dones, _, final_obs = model._imagined_rollout(data)
    assert len(observations) == 3
    # Imagined states stay at the real next state (s' = s)
    th.testing.assert_close(observations[2], data.next_observations, atol=1e-3, rtol=0)
    th.testing.assert_close(final_obs, data.next_observations, atol=1e-3, rtol=0)
    targets = value_expansion_targets(th.stack(rewards), th.stack(dones), model.value_target(final_obs), model.gamma)
    r0 = data.rewards
    expected_g0 = r0 + 0.9 * (-2.0) + 0.81 * (-2.0) + 0.729 * 10.0
    expected_g1 = -2.0 + 0.9 * (-2.0) + 0.81 * 10.0
    expected_g2 = -2.0 + 0.9 * 10.0
    th.testing.assert_close(targets[0], expected_g0, atol=1e-3, rtol=0)
    th.testing.assert_close(targets[1], th.full_like(r0, expected_g1), atol=1e-3, rtol=0)
    th.testing.assert_close(targets[2], th.full_like(r0, expected_g2), atol=1e-3, rtol=0)
    # The critic loss is the mean over t and the batch of the squared errors against these targets
    q_values = model.critic(th.cat(observations), th.cat(actions))
    expected_loss = 0.5 * sum(((q - targets.flatten(0, 1)) ** 2).mean() for q in q_values)
    th.manual_seed(7)  # the same imagined actions
    th.testing.assert_close(model._critic_loss(data), expected_loss, atol=1e-3, rtol=1e-4)


def _policy_log_prob(model: S2VG, observations: th.Tensor, actions: th.Tensor) -> th.Tensor:
    """log π(a|s) by SB3's distribution, shape (batch, 1)."""
    with th.no_grad():
        mean_actions, log_std, _ = model.actor.get_action_dist_params(observations)
        distribution = model.actor.action_dist.proba_distribution(mean_actions, log_std)
        return distribution.log_prob(actions).reshape(-1, 1)


def test_soft_value_expansion_adds_the_entropy_of_the_later_imagined_actions_to_each_target(tmp_path):
    model = make_model(horizon=3, gamma=0.9, ent_coef=0.3, soft_value_expansion=True)
    _make_world_model_constant(model, reward=-2.0, value=10.0)
    data = model.replay_buffer.sample(16)
    th.manual_seed(7)
    observations, actions, rewards, _, log_probs, _ = model._imagined_rollout(data)
    th.testing.assert_close(log_probs[0], th.zeros_like(data.rewards))  # the stored â₀ has none
    for step in (1, 2):  # log π(â_k|ŝ_k) of the rollout's own actions, against SB3's distribution
        expected = _policy_log_prob(model, observations[step], actions[step])
        th.testing.assert_close(log_probs[step], expected, atol=2e-3, rtol=0)
        th.testing.assert_close(rewards[step], th.full_like(data.rewards, -2.0), atol=1e-3, rtol=0)
    log_pi_1, log_pi_2 = log_probs[1], log_probs[2]
    th.manual_seed(7)  # the same rollout
    targets = model._critic_targets(data).targets.reshape(3, -1, 1)
    # Soft Bellman over 3 steps: a target for Q(ŝ_t, â_t) takes the entropy of the actions after â_t only
    expected_g2 = th.full_like(data.rewards, -2.0 + 0.9 * 10.0)
    expected_g1 = -2.0 + 0.9 * (-2.0 - 0.3 * log_pi_2) + 0.81 * 10.0
    expected_g0 = data.rewards + 0.9 * (-2.0 - 0.3 * log_pi_1) + 0.81 * (-2.0 - 0.3 * log_pi_2) + 0.729 * 10.0
    for target, expected in zip(targets, (expected_g0, expected_g1, expected_g2)):
        th.testing.assert_close(target, expected, atol=2e-3, rtol=0)
    # The paper's eq. 7 (the default) on the same rollout: no entropy terms
    model.soft_value_expansion = False
    th.manual_seed(7)
    paper_targets = model._critic_targets(data).targets.reshape(3, -1, 1)
    th.testing.assert_close(paper_targets[0], data.rewards + 0.9 * -2.0 + 0.81 * -2.0 + 0.729 * 10.0, atol=2e-3, rtol=0)
    th.testing.assert_close(paper_targets[1], th.full_like(data.rewards, -2.0 + 0.9 * -2.0 + 0.81 * 10.0), atol=2e-3, rtol=0)
    model.soft_value_expansion = True
    model.save(tmp_path / "model")
    assert S2VG.load(tmp_path / "model").soft_value_expansion is True


def test_on_policy_value_expansion_regresses_q_of_the_policys_action_toward_an_imagined_rollout(tmp_path):
    """DHMBPO's critic: Q(s, â₀ ~ π(s)) toward the soft return of an all-imagined rollout; the buffer's a, r unused."""
    model = make_model(horizon=3, gamma=0.9, ent_coef=0.3, soft_value_expansion=True, on_policy_value_expansion=True)
    _make_world_model_constant(model, reward=-2.0, value=10.0)
    data = model.replay_buffer.sample(16)
    th.manual_seed(7)
    observations, actions, rewards, _, log_probs, final_obs = model._imagined_rollout(data)
    assert len(observations) == len(actions) == len(rewards) == 3
    th.testing.assert_close(observations[0], data.observations)  # starts at the batch's states, not s'
    th.testing.assert_close(final_obs, data.observations, atol=1e-3, rtol=0)  # s' = s three times
    assert not th.allclose(actions[0], data.actions)  # â₀ is the policy's
    for step in range(3):  # every reward is the model's (-2), the first included; log π of the rollout's own actions
        th.testing.assert_close(rewards[step], th.full_like(data.rewards, -2.0), atol=1e-3, rtol=0)
        expected = _policy_log_prob(model, observations[step], actions[step])
        th.testing.assert_close(log_probs[step], expected, atol=2e-3, rtol=0)
    th.manual_seed(7)  # the same rollout
    regression = model._critic_targets(data)
    assert regression.weights is None and regression.targets.shape == (16, 1)  # one row per state: the first step
    th.testing.assert_close(regression.observations, data.observations)
    th.testing.assert_close(regression.actions, actions[0])
    expected_g0 = -2.0 + 0.9 * (-2.0 - 0.3 * log_probs[1]) + 0.81 * (-2.0 - 0.3 * log_probs[2]) + 0.729 * 10.0
    th.testing.assert_close(regression.targets, expected_g0, atol=2e-3, rtol=0)
    q_values = model.critic(data.observations, actions[0])
    th.manual_seed(7)
    expected_loss = 0.5 * sum(((q - expected_g0) ** 2).mean() for q in q_values)
    th.testing.assert_close(model._critic_loss(data), expected_loss, atol=1e-3, rtol=1e-4)
    # Without the entropy terms, and with H = 1: Q(s, â₀) toward r̂(s, â₀) + γ V(f(s, â₀))
    model.soft_value_expansion = False
    th.manual_seed(7)
    th.testing.assert_close(
        model._critic_targets(data).targets, th.full_like(data.rewards, -2.0 - 1.8 - 1.62 + 7.29), atol=2e-3, rtol=0
    )
    model.horizon = 1
    th.manual_seed(7)
    regression = model._critic_targets(data)
    th.testing.assert_close(regression.targets, th.full_like(data.rewards, -2.0 + 9.0), atol=2e-3, rtol=0)
    assert not th.allclose(regression.actions, data.actions)
    model.save(tmp_path / "model")
    assert S2VG.load(tmp_path / "model").on_policy_value_expansion is True


def test_value_expansion_targets_with_entropy_bonuses_by_hand():
    rewards = th.tensor([1.0, 2.0, 3.0]).reshape(3, 1, 1)
    bonuses = th.tensor([100.0, 0.5, 0.25]).reshape(3, 1, 1)  # the first is never used
    dones = th.tensor([0.0, 0.0, 0.0]).reshape(3, 1, 1)
    targets = value_expansion_targets(rewards, dones, th.tensor([[8.0]]), 0.5, bonuses)
    # G_2 = 3 + .5*8 = 7; G_1 = 2 + .5*(0.25 + 7) = 5.625; G_0 = 1 + .5*(0.5 + 5.625) = 4.0625
    np.testing.assert_allclose(targets.flatten().numpy(), [4.0625, 5.625, 7.0])
    # A termination at step 1 ends the sum there: nothing of step 2, its entropy included, reaches G_1 or G_0
    dones[1] = 1.0
    targets = value_expansion_targets(rewards, dones, th.tensor([[8.0]]), 0.5, bonuses)
    np.testing.assert_allclose(targets.flatten().numpy(), [2.25, 2.0, 7.0])


def test_h1_critic_loss_is_the_td_error_on_real_data():
    model = make_model(horizon=1)
    data = model.replay_buffer.sample(32)
    with th.no_grad():
        target = data.rewards + model.gamma * (1 - data.dones) * model.value_target(data.next_observations)
        expected = 0.5 * sum(((q - target) ** 2).mean() for q in model.critic(data.observations, data.actions))
    th.testing.assert_close(model._critic_loss(data).detach(), expected)


def _actor_gradient(model: S2VG, obs: th.Tensor) -> list[th.Tensor]:
    th.manual_seed(123)
    actions_pi, log_prob = model.actor.action_log_prob(obs)
    loss = model._actor_loss(obs, actions_pi, log_prob.reshape(-1, 1), model.ent_coef_tensor)
    return th.autograd.grad(loss, list(model.actor.parameters()))


@pytest.mark.parametrize("part", ["reward", "dynamics", "value"])
def test_actor_gradient_flows_through_model_and_value(part):
    model = make_model()
    obs = model.replay_buffer.sample(64).observations
    before = _actor_gradient(model, obs)
    module = {"reward": model.world_model.reward, "dynamics": model.world_model.dynamics, "value": model.value_net}[part]
    with th.no_grad():
        for param in module.parameters():
            param.add_(0.1 * th.randn_like(param))
    after = _actor_gradient(model, obs)
    # Same noise, same actor: the policy gradient changes only because it passes through the perturbed part
    assert any(not th.allclose(b, a) for b, a in zip(before, after))


def test_actor_critic_update_leaves_world_model_unchanged_and_actor_step_touches_only_the_actor():
    model = make_model()
    snapshot = {name: p.detach().clone() for name, p in model.policy.named_parameters()}
    data = model.replay_buffer.sample(64)
    # The policy gradient of eq. 11 reaches no parameter but the actor's
    for module in (model.world_model, model.value_net, model.critic, model.actor):
        module.zero_grad(set_to_none=True)
    actions_pi, log_prob = model.actor.action_log_prob(data.observations)
    actor_loss = model._actor_loss(data.observations, actions_pi, log_prob.reshape(-1, 1), model.ent_coef_tensor)
    actor_loss.backward(inputs=list(model.actor.parameters()))
    assert all(p.grad is None for m in (model.world_model, model.value_net, model.critic) for p in m.parameters())
    assert all(p.grad is not None for p in model.actor.parameters())
    # A whole actor-critic update changes actor, Q and V, never the world model or the target V beyond Polyak
    model._actor_critic_update(data)
    changed = {name for name, p in model.policy.named_parameters() if not th.equal(p, snapshot[name])}
    assert not any(name.startswith("world_model.") for name in changed)
    assert any(name.startswith("actor.") for name in changed)
    assert any(name.startswith("critic.") for name in changed)
    assert any(name.startswith("value_net.") for name in changed)
    assert not any(name.startswith("value_target.") for name in changed)


def test_value_loss_targets_min_q_minus_entropy():
    model = make_model()
    obs = model.replay_buffer.sample(32).observations
    actions, log_prob = model.actor.action_log_prob(obs)
    actions, log_prob = actions.detach(), log_prob.detach().reshape(-1, 1)
    alpha = th.tensor(0.3)
    with th.no_grad():
        q1, q2 = model.critic(obs, actions)
        expected = 0.5 * ((model.value_net(obs) - (th.min(q1, q2) - alpha * log_prob)) ** 2).mean()
    th.testing.assert_close(model._value_loss(obs, actions, log_prob, alpha).detach(), expected)


def test_actor_loss_is_the_negated_soft_bellman_value():
    model = make_model()
    obs = model.replay_buffer.sample(32).observations
    actions, log_prob = model.actor.action_log_prob(obs)
    log_prob = log_prob.reshape(-1, 1)
    alpha = th.tensor(0.2)
    th.manual_seed(5)
    loss = model._actor_loss(obs, actions, log_prob, alpha)
    th.manual_seed(5)
    prediction = model.world_model(obs, actions)
    expected = -(prediction.rewards - alpha * log_prob + model.gamma * model.value_net(prediction.next_observations)).mean()
    th.testing.assert_close(loss, expected)


def test_world_model_training_reduces_holdout_error():
    model = S2VG("MlpPolicy", "Pendulum-v1", learning_starts=200, actor_critic_updates=1, seed=0)
    model.learn(200)
    untrained = model._holdout_errors_of_new_transitions()
    model._holdout_pos = 0
    for _ in range(300):
        model._train_world_model()
    trained = model._holdout_errors_of_new_transitions()
    assert trained[:, 1].mean() < 0.2 * untrained[:, 1].mean()


def _make_value_constant(model: S2VG, value: float) -> None:
    model.value_net.v_net[-1].weight.data.zero_()
    model.value_net.v_net[-1].bias.data.fill_(value)


def test_policy_horizon_2_objective_equals_hand_computed_rollout(tmp_path):
    """H_π = 2 with s' = s, r̂ = −2, V = 10 and α = 0: the objective is r̂ + γ r̂ + γ² V, and a termination predicted
    at the first step leaves r̂ alone."""
    model = make_model(gamma=0.9, policy_horizon=2)
    assert model._manual_gradients is None  # H_π > 1 runs on autograd
    _make_world_model_constant(model, reward=-2.0, value=10.0)
    _make_value_constant(model, 10.0)
    obs = model.replay_buffer.sample(16).observations
    actions, log_prob = model.actor.action_log_prob(obs)
    loss = model._actor_loss(obs, actions, log_prob.reshape(-1, 1), th.tensor(0.0))
    th.testing.assert_close(loss, th.tensor(-(-2.0 + 0.9 * -2.0 + 0.81 * 10.0)), atol=1e-3, rtol=0)
    model.world_model.termination_fn = lambda o, a, next_o: th.ones(len(o), 1)
    loss = model._actor_loss(obs, actions, log_prob.reshape(-1, 1), th.tensor(0.0))
    th.testing.assert_close(loss, th.tensor(2.0), atol=1e-3, rtol=0)
    model.save(tmp_path / "model")
    assert S2VG.load(tmp_path / "model").policy_horizon == 2


def test_policy_horizon_gradient_reaches_the_actor_through_later_steps():
    """With H_π = 2 the entropy term of the second step depends on the actor at the imagined state: with α alone
    (r̂ = 0, V = 0) the same model's gradient differs from H_π = 1's, and the first step's noise is the same."""
    model = make_model()
    _make_world_model_constant(model, reward=0.0, value=0.0)
    _make_value_constant(model, 0.0)
    obs = model.replay_buffer.sample(16).observations
    grads = []
    for policy_horizon in (1, 2):
        model.policy_horizon = policy_horizon
        th.manual_seed(3)
        actions, log_prob = model.actor.action_log_prob(obs)
        loss = model._actor_loss(obs, actions, log_prob.reshape(-1, 1), th.tensor(0.5))
        grads.append(th.autograd.grad(loss, list(model.actor.parameters())))
    assert any(not th.allclose(a, b) for a, b in zip(*grads))
