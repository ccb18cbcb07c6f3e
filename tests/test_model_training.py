"""The world model's MBPO training schedule (``model_train_freq``, ``sb3_s2vg.model_training``): the fixed held-out
split, early stopping with the best weights restored, fits every N env steps with the normalisers absorbing each
transition once, elites from the fit, save/load, and bad arguments refused."""

import numpy as np
import pytest
import torch as th

from sb3_s2vg import S2VG
from sb3_s2vg.model_training import MAX_HOLDOUT, fit_world_model, holdout_mask, holdout_split


def test_holdout_mask_is_a_fixed_fraction_of_the_slots():
    indices = np.arange(100_000)
    mask = holdout_mask(indices, 0.2)
    assert abs(mask.mean() - 0.2) < 0.01
    assert np.array_equal(mask[5000:6000], holdout_mask(np.arange(5000, 6000), 0.2))  # per slot, not per call
    assert abs(mask[:1000].mean() - 0.2) < 0.05  # spread over the buffer, not in one region
    assert not holdout_mask(indices, 1e-9).any()


def test_holdout_split_caps_the_held_out_set_and_scores_everything_while_nothing_is_held_out():
    indices = np.arange(40_000)
    train, holdout = holdout_split(indices, 0.2)
    assert len(holdout) == MAX_HOLDOUT and len(np.unique(holdout)) == MAX_HOLDOUT  # 8,000 held out, 5,000 drawn
    assert holdout_mask(holdout, 0.2).all() and not holdout_mask(train, 0.2).any()
    assert len(train) == (~holdout_mask(indices, 0.2)).sum()  # no held-out slot is trained on, none dropped
    drawn = [holdout_split(indices, 0.2, np.random.default_rng(1))[1] for _ in range(2)]
    assert np.array_equal(drawn[0], drawn[1]) and len(drawn[0]) == MAX_HOLDOUT  # a generator makes it reproducible
    few = np.arange(3)
    assert not holdout_mask(few, 0.01).any()
    train, holdout = holdout_split(few, 0.01)
    assert np.array_equal(train, few) and np.array_equal(holdout, few)


def _model_with_data(n_models=1, steps=600):
    model = S2VG("MlpPolicy", "Pendulum-v1", learning_starts=steps, seed=0, n_models=n_models,
                 policy_kwargs=dict(net_arch=[32, 32]))  # fmt: skip
    model.learn(steps)  # collects random transitions only
    data = model._buffer_samples(np.arange(model.replay_buffer.size()))
    model.world_model.update_normalizers(data.observations, data.next_observations, data.rewards)
    mask = th.as_tensor(holdout_mask(np.arange(model.replay_buffer.size()), 0.2))
    from sb3_s2vg.model_training import _rows

    return model, _rows(data, th.where(~mask)[0]), _rows(data, th.where(mask)[0])


def _holdout_loss(model, holdout):
    wm = model.world_model
    return wm.member_losses(holdout.observations, holdout.actions, holdout.next_observations, holdout.rewards, holdout.dones)


def test_fit_lowers_the_held_out_loss_and_stops_when_it_stops_improving():
    model, train, holdout = _model_with_data()
    before = float(_holdout_loss(model, holdout).mean())
    fit = fit_world_model(model.world_model, model.world_model.optimizer, train, holdout, 64, "mse", 200, 3)
    assert fit.holdout_loss < 0.2 * before
    assert fit.epochs < 200  # early stopping, not the cap
    assert fit.updates >= 20 * fit.epochs  # at least MIN_EPOCH_UPDATES minibatches per epoch
    assert th.allclose(_holdout_loss(model, holdout), fit.member_holdout_losses)  # the kept weights are the scored ones


def test_fit_restores_the_best_epoch_and_caps_the_epochs():
    model, train, holdout = _model_with_data()
    optimizer = th.optim.SGD(model.world_model.parameters(), lr=0.5)  # diverges after the first steps
    fit = fit_world_model(model.world_model, optimizer, train, holdout, 64, "mse", 4, 100)
    assert fit.epochs == 4
    assert np.isfinite(fit.holdout_loss)
    assert float(_holdout_loss(model, holdout).mean()) == pytest.approx(fit.holdout_loss)


def test_s2vg_fits_every_n_steps_and_normalises_each_transition_once():
    model = S2VG("MlpPolicy", "Pendulum-v1", learning_starts=100, seed=0, model_train_freq=100, model_max_epochs=2,
                 n_models=3, n_elites=2, policy_kwargs=dict(net_arch=[16, 16]))  # fmt: skip
    fits = []
    original = model._fit_world_model

    def spy():
        fit = original()
        if fit is not None:
            fits.append((model.num_timesteps, model.world_model.obs_normalizer.count.item(), fit))
        return fit

    model._fit_world_model = spy
    model.learn(350)
    assert [step for step, _, _ in fits] == [101, 201, 301]
    assert [count for _, count, _ in fits] == [101, 201, 301]  # every stored transition once, none twice
    assert model._n_model_updates == sum(fit.updates for _, _, fit in fits)  # no per-step model updates
    assert all(fit.epochs <= 2 for _, _, fit in fits)
    expected_elites = th.argsort(fits[-1][2].member_holdout_losses)[:2]
    assert th.equal(model.world_model.elites, expected_elites)


def test_fit_schedule_resumes_exactly_after_save_and_load(tmp_path):
    kwargs = dict(learning_starts=100, seed=0, model_train_freq=100, model_max_epochs=2, policy_kwargs=dict(net_arch=[16]))
    model = S2VG("MlpPolicy", "Pendulum-v1", **kwargs)
    model.learn(250)
    model.save(tmp_path / "model")
    loaded = S2VG.load(tmp_path / "model", env=model.get_env())
    assert loaded.model_train_freq == 100 and loaded._last_model_fit == model._last_model_fit
    assert loaded._model_fit_pos == model._model_fit_pos


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(model_train_freq=0), "model_train_freq"),
        (dict(model_holdout_ratio=1.0), "model_holdout_ratio"),
        (dict(model_max_epochs=0), "model_max_epochs"),
        (dict(model_patience=-1), "model_patience"),
    ],
)
def test_bad_schedule_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        S2VG("MlpPolicy", "Pendulum-v1", **kwargs)
