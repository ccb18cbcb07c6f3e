"""Options beyond the paper (the frontier configurations): shapes, their reduction to the paper's networks, the
autograd fallback, and exact save/load."""

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.torch_layers import NatureCNN
from torch import nn

from sb3_s2vg import S2VG
from sb3_s2vg.layers import BatchedMLP, ValueScale, make_mlp
from sb3_s2vg.manual_gradients import ManualActorCriticGradients
from sb3_s2vg.policies import NormalizedFlattenExtractor
from sb3_s2vg.s2vg import value_expansion_targets


def _assert_same_policy_state(model: S2VG, loaded: S2VG, key_part: str) -> None:
    """Every tensor of the policy's state dict equal after save/load, with some key containing ``key_part``."""
    expected, got = model.policy.state_dict(), loaded.policy.state_dict()
    assert expected.keys() == got.keys() and any(key_part in key for key in got)
    for key in expected:
        assert th.equal(expected[key], got[key]), key


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
    _assert_same_policy_state(model, loaded, "norm")


def test_batched_mlp_dropout_acts_in_training_mode_only():
    """With ``dropout``, training-mode outputs are random and evaluation-mode ones are the network without it."""
    th.manual_seed(0)
    with_dropout = BatchedMLP(3, 5, 2, [64, 64], nn.ReLU, layer_norm=True, dropout=0.5)
    plain = BatchedMLP(3, 5, 2, [64, 64], nn.ReLU, layer_norm=True)
    plain.load_state_dict(with_dropout.state_dict())
    x = th.randn(7, 5)
    with_dropout.eval()
    th.testing.assert_close(with_dropout(x), plain(x))
    with_dropout.train()
    first, second = with_dropout(x), with_dropout(x)
    assert not th.allclose(first, second) and not th.allclose(first, plain(x))
    sequential = make_mlp(5, 2, [8, 4], nn.ReLU, layer_norm=True, dropout=0.1)
    kinds = [type(m) for m in sequential]
    assert kinds == [nn.Linear, nn.Dropout, nn.LayerNorm, nn.ReLU] * 2 + [nn.Linear]  # DroQ's order


def test_batched_mlp_dropout_comes_before_the_layer_norm(monkeypatch):
    """DroQ's order in ``BatchedMLP``: a dropout that scales its input by 3 changes nothing before a layer norm."""
    th.manual_seed(0)
    network = BatchedMLP(2, 5, 1, [16, 16], nn.ReLU, layer_norm=True, dropout=0.5)
    x = th.randn(4, 5)
    with th.no_grad():
        expected = network.eval()(x)
        monkeypatch.setattr("sb3_s2vg.layers.F.dropout", lambda h, p, training: 3.0 * h)
        th.testing.assert_close(network.train()(x), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("layer_norm", [True, False])
def test_critic_dropout_trains_q_and_v_with_it_and_evaluates_targets_and_the_policy_objective_without(tmp_path, layer_norm):
    model = S2VG(
        "MlpPolicy", "Pendulum-v1", learning_starts=50, batch_size=32, model_batch_size=32, seed=0,
        policy_kwargs=dict(net_arch=[16, 16], layer_norm=layer_norm, critic_dropout=0.1),
    )  # fmt: skip
    assert model.critic.q_networks.dropout == 0.1
    for network in (model.value_net.v_net, model.value_target.v_net):
        assert sum(isinstance(m, nn.Dropout) for m in network) == 2
    assert not model.value_target.training
    assert not any(isinstance(m, nn.Dropout) for m in [*model.actor.modules(), *model.world_model.modules()])
    reason = ManualActorCriticGradients.unsupported_reason(model.actor, model.critic, model.value_net, model.world_model)
    assert reason == "critic_dropout=0.1" and model._manual_gradients is None
    model.learn(120)

    # Which networks run with dropout in which loss: record each forward's training flag
    modes: list[tuple[str, bool]] = []
    for name, module in (("q", model.critic.q_networks), ("v", model.value_net), ("v_target", model.value_target)):
        module.register_forward_hook(lambda m, args, out, name=name: modes.append((name, m.training)))
    model.policy.set_training_mode(True)
    data = model.replay_buffer.sample(32)
    actions, log_prob = model._sample_actions(data.observations)
    model._critic_loss(data)
    assert modes == [("v_target", False), ("q", True)]  # eq. 7: the target V without, Q trained with it
    modes.clear()
    model._value_loss(data.observations, actions.detach(), log_prob.detach(), model.ent_coef_tensor)
    assert modes == [("q", False), ("v", True)]  # eq. 8: the target's Q without, V trained with it
    modes.clear()
    model._actor_loss(data.observations, actions, log_prob, model.ent_coef_tensor)
    assert modes == [("v", False)]  # eq. 10-11: V(f(s, a)) without
    assert model.critic.training and model.value_net.training  # switched back
    model.policy.train()  # nn.Module's train() too keeps the target V without dropout
    assert model.value_net.training and not model.value_target.training

    model.save(tmp_path / "model")
    loaded = S2VG.load(tmp_path / "model")
    assert loaded.policy.critic_dropout == 0.1 and loaded.critic.q_networks.dropout == 0.1
    _assert_same_policy_state(model, loaded, "v_net")


@pytest.mark.parametrize("rate", [1.0, -0.1, float("nan"), True, "0.1"])
def test_critic_dropout_rejects_a_rate_outside_zero_to_one(rate):
    with pytest.raises(ValueError, match=r"critic_dropout must be a dropout rate in \[0, 1\)"):
        S2VG("MlpPolicy", "Pendulum-v1", policy_kwargs=dict(critic_dropout=rate))


def test_critic_dropout_accepts_numpy_rates():
    model = S2VG("MlpPolicy", "Pendulum-v1", policy_kwargs=dict(critic_dropout=np.float32(0.25)))
    assert model.critic.q_networks.dropout == 0.25 and model.policy.critic_dropout == 0.25


def test_value_scale_sets_its_range_from_the_first_batch_then_moves_toward_each_by_its_rate():
    scale = ValueScale(quantile=0.0, rate=0.5)
    raw = th.tensor([[-1.0], [0.0], [1.0]])
    assert th.equal(scale(raw), raw) and th.equal(scale.clip(th.tensor([-1e9, 1e9])), th.tensor([-1e9, 1e9]))
    scale.update(th.tensor([[1.0], [3.0], [2.0]]), gamma=0.5)  # quantiles 0 and 1: min 1 and max 3, over 1 - γ
    assert (scale.lower.item(), scale.upper.item(), scale.center.item(), scale.width.item()) == (2.0, 6.0, 4.0, 2.0)
    assert th.equal(scale(raw), th.tensor([[2.0], [4.0], [6.0]]))
    assert th.equal(scale.clip(th.tensor([0.0, 5.0, 9.0])), th.tensor([2.0, 5.0, 6.0]))
    scale.update(th.tensor([[5.0], [7.0]]), gamma=0.5)  # this batch's range [10, 14]; halfway there
    assert (scale.lower.item(), scale.upper.item(), scale.center.item(), scale.width.item()) == (6.0, 10.0, 8.0, 2.0)
    scale.update(th.full((4, 1), 8.0), gamma=0.5)  # no range in the batch: [16, 16], width from the moving bounds
    assert (scale.lower.item(), scale.upper.item(), scale.width.item()) == (11.0, 13.0, 1.0)


@pytest.mark.parametrize("horizon", [1, 3])
def test_value_scaling_scales_q_v_and_the_target_v_by_one_range_and_bounds_the_targets(tmp_path, horizon):
    model = S2VG(
        "MlpPolicy", "Pendulum-v1", learning_starts=50, batch_size=32, model_batch_size=32, seed=0, horizon=horizon,
        policy_kwargs=dict(net_arch=[16, 16], value_scaling=True),
    )  # fmt: skip
    scale = model.policy.value_scale
    assert scale is not None and model.critic.value_scale is scale and model.value_net.value_scale is scale
    assert model.value_target.value_scale is scale and not scale.initialized
    reason = ManualActorCriticGradients.unsupported_reason(model.actor, model.critic, model.value_net, model.world_model)
    assert reason == "value_scaling=True" and model._manual_gradients is None
    # The range is buffers, not parameters: no optimizer steps it, Polyak averaging does not touch it
    assert len(list(scale.buffers())) == 6 and not list(scale.parameters())
    optimized = {id(p) for module in (model.critic, model.value_net) for g in module.optimizer.param_groups for p in g["params"]}
    assert not optimized & {id(b) for b in scale.buffers()}
    obs = th.as_tensor(model.env.observation_space.sample()[None])
    # The last products start at zero (with the initial center 0 and width 1, every value is 0)
    assert th.equal(model.critic.stacked(obs, th.zeros(1, 1)), th.zeros(2, 1, 1)) and th.equal(
        model.value_net(obs), th.zeros(1, 1)
    )

    updates = []
    update = scale.update
    scale.update = lambda *args: (updates.append(1), update(*args))[1]  # type: ignore[method-assign]
    model.learn(120)
    assert len(updates) == model._n_actor_critic_updates > 0  # once per actor-critic update
    del scale.update
    logged = model.logger.name_to_value
    assert (logged["train/value_range_lower"], logged["train/value_range_upper"]) == (scale.lower.item(), scale.upper.item())

    # The first update sets the range to the quantiles of r - α log π (policy samples at the batch states) over 1 - γ
    data = model.replay_buffer.sample(32)
    scale.initialized.fill_(False)
    th.manual_seed(1)
    model._actor_critic_gradients(data)
    th.manual_seed(1)
    _, log_prob = model._sample_actions(data.observations)
    soft_rewards = (data.rewards - model.ent_coef_tensor * log_prob).flatten()
    expected_range = th.quantile(soft_rewards, th.tensor([0.01, 0.99])) / (1 - model.gamma)
    assert th.allclose(th.stack([scale.lower, scale.upper]), expected_range)
    assert th.allclose(th.stack([scale.center, scale.width]), th.stack([expected_range.mean(), expected_range.diff()[0] / 2]))

    raw_q = model.critic.q_networks(th.cat([data.observations, data.actions], dim=1))
    assert th.allclose(model.critic.stacked(data.observations, data.actions), raw_q * scale.width + scale.center)
    for network in (model.value_net, model.value_target):
        assert th.allclose(network(data.observations), network.v_net(data.observations) * scale.width + scale.center)

    # eq. 7's target V (at the rollout's end for H > 1) is clipped into the range: a range of one point c gives c
    th.manual_seed(2)
    with th.no_grad():
        if horizon == 1:
            final_obs, rewards, dones = data.next_observations, data.rewards[None], data.dones[None]
        else:
            _, _, reward_list, done_list, _, final_obs = model._imagined_rollout(data)
            rewards, dones = th.stack(reward_list), th.stack(done_list)
        final_values = model.value_target(final_obs)
    c = final_values.median()  # values on both sides of it: the clip changes them
    assert (final_values > c).any() and (final_values < c).any()
    scale.lower.copy_(c), scale.upper.copy_(c)
    th.manual_seed(2)
    targets = model._critic_targets(data).targets
    expected = value_expansion_targets(rewards, dones, c.expand(len(data.rewards), 1), model.gamma).flatten(0, 1)
    assert th.allclose(targets, expected)

    model.save(tmp_path / "model")
    loaded = S2VG.load(tmp_path / "model")
    shared = loaded.policy.value_scale
    assert loaded.policy.value_scaling and shared is not None
    assert (
        loaded.critic.value_scale is shared
        and loaded.value_net.value_scale is shared
        and loaded.value_target.value_scale is shared
    )
    _assert_same_policy_state(model, loaded, "value_scale.width")


def test_value_scaling_is_off_by_default_and_rejects_a_non_boolean_and_gamma_one():
    model = S2VG("MlpPolicy", "Pendulum-v1")
    assert model.policy.value_scale is None and model.critic.value_scale is None
    assert not any("value_scale" in key for key in model.policy.state_dict())
    with pytest.raises(ValueError, match="value_scaling must be True or False"):
        S2VG("MlpPolicy", "Pendulum-v1", policy_kwargs=dict(value_scaling="yes"))
    with pytest.raises(ValueError, match=r"value_scaling=True needs gamma < 1 .*got gamma=1.0"):
        S2VG("MlpPolicy", "Pendulum-v1", gamma=1.0, policy_kwargs=dict(value_scaling=True))


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


def _box(dim: int):
    import numpy as np
    from gymnasium import spaces

    return spaces.Box(-np.inf, np.inf, (dim,), np.float32)


def _world_model(n_models: int, prediction: str = "random", **kwargs):
    from sb3_s2vg.world_model import WorldModel

    return WorldModel(
        _box(3), _box(2), [16, 16], [16], [8], n_models=n_models, ensemble_prediction=prediction, **kwargs
    )  # fmt: skip


@pytest.mark.parametrize("prediction", ["random", "mean"])
def test_ensemble_of_identical_members_predicts_as_the_single_model(prediction):
    """The ensemble reduces to today's model: members that are copies of one model predict what it predicts."""
    th.manual_seed(0)
    single, ensemble = _world_model(1, learn_termination=True), _world_model(3, prediction, learn_termination=True)
    pairs = [(single.dynamics.net, ensemble.dynamics.net), (single.reward.net, ensemble.reward.net)]
    pairs.append((single.termination, ensemble.termination))
    with th.no_grad():
        for plain, batched in pairs:
            linears = [m for m in plain if isinstance(m, nn.Linear)]
            for linear, weight, bias in zip(linears, batched.weights, batched.biases):
                weight.copy_(linear.weight.T.expand_as(weight))
                bias.copy_(linear.bias.expand_as(bias))
    obs, actions = th.randn(10, 3), th.rand(10, 2) * 2 - 1
    expected, got = single(obs, actions, deterministic=True), ensemble(obs, actions, deterministic=True)
    for name in ("next_observations", "rewards", "dones"):
        th.testing.assert_close(getattr(got, name), getattr(expected, name))
    th.manual_seed(1)
    if prediction == "random":
        th.randperm(10)  # the ensemble draws its member assignment first
    expected_sample = single(obs, actions).next_observations
    th.manual_seed(1)
    th.testing.assert_close(ensemble(obs, actions).next_observations, expected_sample)


def test_random_member_prediction_gives_each_sample_one_member_in_equal_blocks():
    model = _world_model(3, normalize=False)
    with th.no_grad():  # member m predicts reward m, deterministically
        model.reward.net.weights[-1].zero_()
        model.reward.net.biases[-1].zero_()
        model.reward.net.biases[-1][:, 0, 0] = th.arange(3.0)
    obs, actions = th.randn(12, 3), th.zeros(12, 2)
    rewards = model(obs, actions, deterministic=True).rewards.flatten()
    assert sorted(rewards.tolist()) == [0.0] * 4 + [1.0] * 4 + [2.0] * 4
    assert not th.equal(rewards, model(obs, actions, deterministic=True).rewards.flatten())  # re-drawn each call
    for batch_size in (7, 1):  # blocks of 3, 3, 1 (padded with repeats); one sample
        rewards = model(obs[:batch_size], actions[:batch_size], deterministic=True).rewards.flatten()
        assert set(rewards.tolist()) <= {0.0, 1.0, 2.0} and rewards.shape == (batch_size,)
    model.ensemble_prediction = "mean"
    th.testing.assert_close(model(obs, actions, deterministic=True).rewards, th.ones(12, 1))


def test_ensemble_members_train_on_their_own_bootstrap():
    model = _world_model(4, learn_termination=True)
    obs, actions, next_obs = th.randn(32, 3), th.rand(32, 2), th.randn(32, 3)
    rewards, dones = th.randn(32, 1), (th.rand(32, 1) > 0.8).float()
    model.update_normalizers(obs, next_obs, rewards)
    losses = model.loss(obs, actions, next_obs, rewards, dones, "nll")
    sum(losses).backward()
    grads = model.dynamics.net.weights[0].grad  # (members, in, out)
    assert grads.shape[0] == 4 and all(grads[m].abs().sum() > 0 for m in range(4))
    assert not th.allclose(grads[0], grads[1])  # different data, not only different weights: checked below
    with th.no_grad():
        for weight in model.dynamics.net.weights:
            weight.copy_(weight[:1].expand_as(weight))
        for bias in model.dynamics.net.biases:
            bias.copy_(bias[:1].expand_as(bias))
    model.zero_grad()
    model.loss(obs, actions, next_obs, rewards, dones, "nll").dynamics.backward()
    grads = model.dynamics.net.weights[0].grad
    assert not th.allclose(grads[0], grads[1])  # identical members, different bootstraps


def test_ensemble_option_trains_saves_and_loads(tmp_path):
    model = S2VG(
        "MlpPolicy", "Hopper-v5", learning_starts=50, batch_size=32, model_batch_size=32, seed=0, n_models=3,
        learn_termination=True, horizon=2, policy_kwargs=dict(net_arch=[16, 16]),
    )  # fmt: skip
    assert model.world_model.n_models == 3 and model._manual_gradients is None
    reason = ManualActorCriticGradients.unsupported_reason(model.actor, model.critic, model.value_net, model.world_model)
    assert reason == "an ensemble world model (n_models=3)"
    model.learn(120)
    model.save(tmp_path / "model")
    loaded = S2VG.load(tmp_path / "model")
    assert loaded.world_model.n_models == 3
    for key, value in model.policy.state_dict().items():
        assert th.equal(value, loaded.policy.state_dict()[key]), key


def test_elites_are_the_members_of_lowest_held_out_error_and_alone_predict():
    model = _world_model(3, normalize=False, n_elites=1)
    with th.no_grad():  # member m predicts reward m and next observation = observation + m
        for head, value in ((model.reward.net, 1.0), (model.dynamics.net, 1.0)):
            head.weights[-1].zero_()
            head.biases[-1].zero_()
            head.biases[-1][:, 0, : head.biases[-1].shape[-1] // 2] = value * th.arange(3.0).unsqueeze(1)
    obs, actions = th.randn(12, 3), th.zeros(12, 2)
    errors = model.member_errors(obs, actions, obs + 2.0)  # the truth is member 2's prediction
    assert errors.shape == (3, 12)
    th.testing.assert_close(errors.mean(1), th.tensor([4.0, 1.0, 0.0]) / (1.0 + model.dynamics_target_normalizer.epsilon))
    model.set_elites(errors.mean(1))
    assert model.elites.tolist() == [2]
    for prediction in ("random", "mean"):
        model.ensemble_prediction = prediction
        th.testing.assert_close(model(obs, actions, deterministic=True).rewards, th.full((12, 1), 2.0))


def test_s2vg_logs_each_members_held_out_error_and_chooses_elites():
    model = S2VG(
        "MlpPolicy", "Pendulum-v1", learning_starts=50, batch_size=32, model_batch_size=32, seed=0, n_models=3,
        n_elites=2, policy_kwargs=dict(net_arch=[16, 16]),
    )  # fmt: skip
    model.learn(150)
    window = np.mean(model._holdout_errors, axis=0)
    assert window.shape == (6,)
    assert sorted(model.world_model.elites.tolist()) == sorted(np.argsort(window[3:])[:2].tolist())
    logged = model.logger.name_to_value  # recorded, not yet dumped (no episode has ended)
    for member in range(3):
        assert logged[f"train/model_holdout_obs_nmse_member{member}"] == pytest.approx(window[3 + member])


def test_normalize_input_standardises_the_actor_critic_inputs_with_the_world_model_statistics(tmp_path):
    model = S2VG(
        "MlpPolicy", "Pendulum-v1", learning_starts=50, batch_size=32, model_batch_size=32, seed=0,
        policy_kwargs=dict(net_arch=[16, 16], normalize_input=True),
    )  # fmt: skip
    statistics = model.world_model.obs_normalizer
    for module in (model.actor, model.critic, model.value_net, model.value_target):
        assert isinstance(module.features_extractor, NormalizedFlattenExtractor)
        assert module.features_extractor.normalizer is statistics
    manual = model._manual_gradients
    assert manual is not None and manual.input_standardizer is model.actor.features_extractor
    model.learn(150)
    assert statistics.count > 0 and not th.allclose(statistics.mean, th.zeros(3))
    obs = th.randn(4, 3)
    th.testing.assert_close(model.critic.features_extractor(obs), (obs - statistics.mean) / statistics.std)
    model.save(tmp_path / "model")
    loaded = S2VG.load(tmp_path / "model")
    _assert_same_policy_state(model, loaded, "features_extractor.normalizer.mean")
    assert loaded.actor.features_extractor.normalizer is loaded.world_model.obs_normalizer
    observations = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    actions = [m.predict(observations, deterministic=True)[0] for m in (model, loaded)]
    np.testing.assert_array_equal(actions[0], actions[1])


def test_normalize_input_rejects_another_features_extractor():
    with pytest.raises(ValueError, match=r"normalize_input=True .* features_extractor_class=NatureCNN"):
        S2VG("MlpPolicy", "Pendulum-v1", policy_kwargs=dict(normalize_input=True, features_extractor_class=NatureCNN))
