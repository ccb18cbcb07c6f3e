"""Options beyond the paper (the frontier configurations): shapes, their reduction to the paper's networks, the
autograd fallback, and exact save/load."""

import pytest
import torch as th
from torch import nn

from sb3_s2vg import S2VG
from sb3_s2vg.layers import BatchedMLP, make_mlp
from sb3_s2vg.manual_gradients import ManualActorCriticGradients


@pytest.mark.parametrize("layer_norm", [False, True])
def test_batched_mlp_member_equals_the_plain_mlp(layer_norm):
    """Each member of a ``BatchedMLP`` is the ``make_mlp`` network with the same weights (layer norm included)."""
    th.manual_seed(0)
    batched = BatchedMLP(3, 5, 2, [8, 4], nn.ReLU, layer_norm=layer_norm)
    with th.no_grad():
        for parameter in [*batched.norm_weights, *batched.norm_biases]:
            parameter.normal_()  # away from the (1, 0) initialisation, so that the affine part is tested
    x = th.randn(7, 5)
    out = batched(x)
    assert out.shape == (3, 7, 2)
    for member in range(3):
        plain = make_mlp(5, 2, [8, 4], nn.ReLU, layer_norm=layer_norm)
        linears = [m for m in plain if isinstance(m, nn.Linear)]
        norms = [m for m in plain if isinstance(m, nn.LayerNorm)]
        assert len(norms) == (2 if layer_norm else 0)
        with th.no_grad():
            for linear, weight, bias in zip(linears, batched.weights, batched.biases):
                linear.weight.copy_(weight[member].T)
                linear.bias.copy_(bias[member, 0])
            for norm, gain, shift in zip(norms, batched.norm_weights, batched.norm_biases):
                norm.weight.copy_(gain[member, 0])
                norm.bias.copy_(shift[member, 0])
        th.testing.assert_close(out[member], plain(x))


def test_layer_norm_option_builds_normalised_critics_value_and_model(tmp_path):
    model = S2VG(
        "MlpPolicy", "Pendulum-v1", learning_starts=50, batch_size=32, model_batch_size=32, seed=0, verbose=1,
        learn_termination=True, policy_kwargs=dict(net_arch=[16, 16], layer_norm=True),
    )  # fmt: skip
    assert model.critic.q_networks.layer_norm and len(model.critic.q_networks.norm_weights) == 2
    for network in (model.value_net.v_net, model.value_target.v_net, model.world_model.dynamics.net,
                    model.world_model.reward.net, model.world_model.termination):  # fmt: skip
        assert sum(isinstance(m, nn.LayerNorm) for m in network) == 2
    assert not any(isinstance(m, nn.LayerNorm) for m in model.actor.modules())
    reason = ManualActorCriticGradients.unsupported_reason(model.actor, model.critic, model.value_net, model.world_model)
    assert reason == "layer_norm=True" and model._manual_gradients is None
    model.learn(120)
    model.save(tmp_path / "model")
    loaded = S2VG.load(tmp_path / "model")
    expected, got = model.policy.state_dict(), loaded.policy.state_dict()
    assert expected.keys() == got.keys() and any("norm" in key for key in got)
    for key in expected:
        assert th.equal(expected[key], got[key]), key


def _value_loss_and_members(model: S2VG, observations, actions, log_prob, seed: int):
    """eq. 8's loss and, from the same random state, the subset of critics it took the minimum over."""
    th.manual_seed(seed)
    loss = model._value_loss(observations, actions, log_prob, model.ent_coef_tensor)
    th.manual_seed(seed)
    return loss, model._min_q_members()


def test_min_q_subset_takes_the_minimum_over_a_random_subset_of_the_critics():
    model = S2VG(
        "MlpPolicy", "Pendulum-v1", learning_starts=50, batch_size=32, seed=0, min_q_subset=2,
        policy_kwargs=dict(net_arch=[16, 16], n_critics=5),
    )  # fmt: skip
    model.learn(80)
    obs = model.replay_buffer.sample(32).observations
    actions, log_prob = model.actor.action_log_prob(obs)
    actions, log_prob = actions.detach(), log_prob.detach().reshape(-1, 1)
    loss, members = _value_loss_and_members(model, obs, actions, log_prob, seed=4)
    assert members is not None and members.shape == (2,) and len(set(members.tolist())) == 2
    with th.no_grad():
        q_values = model.critic(obs, actions)  # a tuple of 5 tensors (batch, 1)
        target = th.min(q_values[members[0]], q_values[members[1]]) - model.ent_coef_tensor * log_prob
        expected = 0.5 * (model.value_net(obs) - target).square().mean()
    th.testing.assert_close(loss, expected)
    # M = n_critics is the minimum over all of them, with no draw: the paper's target
    model.min_q_subset = 5
    loss_all, members_all = _value_loss_and_members(model, obs, actions, log_prob, seed=4)
    model.min_q_subset = None
    loss_none, _ = _value_loss_and_members(model, obs, actions, log_prob, seed=4)
    assert members_all is None and th.equal(loss_all, loss_none)
    with th.no_grad():
        expected_all = (
            0.5 * (model.value_net(obs) - (th.stack(q_values).min(0).values - model.ent_coef_tensor * log_prob)).square().mean()
        )
    th.testing.assert_close(loss_none, expected_all)
