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


def test_compiled_losses_match_eager_losses_and_gradients(tmp_path):
    """
    The opt-in torch.compile path computes the same losses and gradients as eager mode (with inductor drawing its
    random numbers from torch's generator, as eager mode does, so that both sample the same model noise).
    """
    from torch._inductor import config as inductor_config

    kwargs = dict(learning_starts=100, batch_size=32, seed=0, policy_kwargs=dict(net_arch=[32, 32]))
    eager = S2VG("MlpPolicy", "Pendulum-v1", **kwargs)
    eager.learn(110)
    compiled = S2VG("MlpPolicy", "Pendulum-v1", compile_losses=True, **kwargs)
    compiled.set_parameters(eager.get_parameters())
    data = eager.replay_buffer.sample(32)
    results = []
    for model in (eager, compiled):
        th.manual_seed(5)
        with inductor_config.patch(fallback_random=True):
            losses = model._actor_critic_gradients(data)
        grads = [p.grad.clone() for m in (model.critic, model.value_net, model.actor) for p in m.parameters()]
        results.append((losses, grads))
    (eager_losses, eager_grads), (compiled_losses, compiled_grads) = results
    for name in ("critic", "value", "actor"):
        th.testing.assert_close(getattr(compiled_losses, name), getattr(eager_losses, name), rtol=1e-4, atol=1e-5)
    for got, expected in zip(compiled_grads, eager_grads):
        th.testing.assert_close(got, expected, rtol=1e-3, atol=1e-5)
    compiled.learn(20, reset_num_timesteps=False)
    compiled.save(tmp_path / "compiled")  # the compiled functions are rebuilt on load, not saved
    assert S2VG.load(tmp_path / "compiled").compile_losses


def test_float_mask_relu_matches_relu_values_and_gradients():
    """FloatMaskReLU, used on the compiled path, has nn.ReLU's values and gradients, zeros included."""
    from sb3_s2vg.layers import FloatMaskReLU, replace_relu_with_float_mask

    x = th.tensor([[-2.0, -0.0, 0.0, 1e-8, 3.0]] * 2, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    grad = th.tensor([[1.0, -2.0, 3.0, -4.0, 5.0], [0.5, 0.5, -0.5, 7.0, -1.0]])
    y, y_ref = FloatMaskReLU()(x), nn.ReLU()(x_ref)
    assert th.equal(y, y_ref)
    y.backward(grad)
    y_ref.backward(grad)
    assert th.equal(x.grad, x_ref.grad)
    network = nn.Sequential(nn.Linear(3, 4), nn.ReLU(inplace=True), nn.Sequential(nn.Linear(4, 4), nn.ReLU()))
    assert replace_relu_with_float_mask(network) == 2
    assert not any(isinstance(module, nn.ReLU) for module in network.modules())
