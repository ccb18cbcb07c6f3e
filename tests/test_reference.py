"""
The optimised update against a straightforward reference implementation of the paper's equations on a fixed
batch: SB3's ``Actor.action_log_prob`` (torch.distributions), one ``nn.Sequential`` per Q network, one backward
per loss with ``inputs=`` restricted to the parameters that loss trains. Losses and gradients must agree.
"""

import pytest
import torch as th
from torch import nn

from sb3_s2vg import S2VG


def _q_networks_as_sequentials(model: S2VG) -> list[nn.Sequential]:
    """Rebuild each Q network of the batched critic as the plain MLP it stands for, sharing its parameters' values."""
    batched = model.critic.q_networks
    networks = []
    for member in range(batched.n_members):
        layers: list[nn.Module] = []
        for index, (weight, bias) in enumerate(zip(batched.weights, batched.biases)):
            linear = nn.Linear(weight.shape[1], weight.shape[2])
            linear.weight = nn.Parameter(weight[member].detach().T.clone())
            linear.bias = nn.Parameter(bias[member, 0].detach().clone())
            layers.append(linear)
            if index < len(batched.weights) - 1:
                layers.append(nn.ReLU())
        networks.append(nn.Sequential(*layers))
    return networks


def _reference_gradients(model: S2VG, data, seed: int):
    """Losses of eq. 7, 8, 10-11 and their gradients, computed the plain way."""
    q_networks = _q_networks_as_sequentials(model)
    alpha = model.ent_coef_tensor
    obs, next_obs = data.observations, data.next_observations
    th.manual_seed(seed)
    actions_pi, log_prob = model.actor.action_log_prob(obs)
    log_prob = log_prob.reshape(-1, 1)
    # eq. 7, H = 1
    with th.no_grad():
        target_q = data.rewards + model.gamma * (1 - data.dones) * model.value_target(next_obs)
    q_inputs = th.cat([obs.float(), data.actions], dim=1)
    critic_loss = 0.5 * sum(((q(q_inputs) - target_q) ** 2).mean() for q in q_networks)
    # eq. 8
    with th.no_grad():
        pi_inputs = th.cat([obs.float(), actions_pi], dim=1)
        v_target = th.min(*[q(pi_inputs) for q in q_networks]) - alpha * log_prob
    value_loss = 0.5 * ((model.value_net(obs) - v_target) ** 2).mean()
    # eq. 10-11
    prediction = model.world_model(obs.float(), actions_pi)
    soft_value = (
        prediction.rewards
        - alpha * log_prob
        + model.gamma
        * (1 - (prediction.dones if prediction.dones is not None else 0))
        * model.value_net(prediction.next_observations)
    )
    actor_loss = -soft_value.mean()

    q_params = [p for q in q_networks for p in q.parameters()]
    q_grads = th.autograd.grad(critic_loss, q_params)
    v_grads = th.autograd.grad(value_loss, list(model.value_net.parameters()))
    actor_grads = th.autograd.grad(actor_loss, list(model.actor.parameters()))
    # Back into the batched layout: weight (n, in, out), bias (n, 1, out)
    n_layers = len(model.critic.q_networks.weights)
    batched_q_grads = []
    for layer in range(n_layers):
        batched_q_grads.append(th.stack([q_grads[2 * (m * n_layers + layer)].T for m in range(len(q_networks))]))
    for layer in range(n_layers):
        batched_q_grads.append(th.stack([q_grads[2 * (m * n_layers + layer) + 1].unsqueeze(0) for m in range(len(q_networks))]))
    return (critic_loss, value_loss, actor_loss), batched_q_grads, v_grads, actor_grads


@pytest.mark.parametrize("manual_gradients", [True, False])
@pytest.mark.parametrize("env_id", ["Pendulum-v1", "HalfCheetah-v5"])
def test_optimised_update_matches_reference_losses_and_gradients(env_id, manual_gradients):
    model = S2VG(
        "MlpPolicy", env_id, learning_starts=100, batch_size=64, seed=0, policy_kwargs=dict(net_arch=[64, 64]),
        manual_gradients=manual_gradients,
    )  # fmt: skip
    assert (model._manual_gradients is not None) == manual_gradients
    model.learn(120)
    data = model.replay_buffer.sample(64)
    (critic_loss, value_loss, actor_loss), q_grads, v_grads, actor_grads = _reference_gradients(model, data, seed=3)

    model.world_model.zero_grad(set_to_none=True)
    th.manual_seed(3)
    losses = model._actor_critic_gradients(data)
    th.testing.assert_close(losses.critic, critic_loss.detach(), rtol=1e-5, atol=1e-6)
    th.testing.assert_close(losses.value, value_loss.detach(), rtol=1e-5, atol=1e-6)
    th.testing.assert_close(losses.actor, actor_loss.detach(), rtol=1e-5, atol=1e-6)
    q_params = [*model.critic.q_networks.weights, *model.critic.q_networks.biases]
    for got, expected in zip(q_params, q_grads):
        th.testing.assert_close(got.grad, expected, rtol=1e-4, atol=1e-6)
    for got, expected in zip(model.value_net.parameters(), v_grads):
        th.testing.assert_close(got.grad, expected, rtol=1e-4, atol=1e-6)
    for got, expected in zip(model.actor.parameters(), actor_grads):
        th.testing.assert_close(got.grad, expected, rtol=1e-4, atol=1e-6)
    # Nothing else received a gradient
    assert all(p.grad is None for p in model.world_model.parameters())


def test_lean_action_sampling_matches_sb3_actor():
    model = S2VG("MlpPolicy", "HalfCheetah-v5", seed=0, policy_kwargs=dict(net_arch=[32]))
    obs = th.as_tensor(model.observation_space.sample()[None].repeat(16, 0))
    th.manual_seed(11)
    expected_actions, expected_log_prob = model.actor.action_log_prob(obs)
    th.manual_seed(11)
    actions, log_prob = model._sample_actions(obs)
    th.testing.assert_close(actions, expected_actions)
    th.testing.assert_close(log_prob, expected_log_prob.reshape(-1, 1), rtol=1e-5, atol=1e-4)
