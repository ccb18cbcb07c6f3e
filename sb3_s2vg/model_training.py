"""
The world model's training schedule of MBPO (Janner et al., 2019) and DHMBPO (Kubo et al., 2025), an option of S2VG
(``model_train_freq``): every N environment steps, fit the model on the whole replay buffer, with a held-out split,
until the held-out loss stops improving. The paper instead makes one small model update per gradient step (eq. 6).

What the sources leave open, and the choices made here:

- The split is fixed per replay-buffer slot (``holdout_mask``, a hash of the slot index, as DHMBPO draws one label per
  transition when it enters the buffer), so a held-out transition is never trained on in any fit. MBPO redraws the
  split at every fit, which lets later fits score the model on transitions it trained on earlier.
- An epoch is one pass over the training split in minibatches (MBPO), or as many passes as make
  ``MIN_EPOCH_UPDATES`` minibatches while the buffer is small, so that the patience is not spent on epochs of one or
  two updates early in training; each member sees its own bootstrap of each minibatch (``WorldModel.loss``, as in the
  per-step schedule).
- Early stopping as MBPO: stop when the held-out loss (the mean over members of ``WorldModel.member_losses``) has not
  improved by 1 % for ``patience`` epochs, or after ``max_epochs``; the weights of the best epoch are restored.
- The held-out set is at most ``MAX_HOLDOUT`` transitions (MBPO's 5,000), drawn at random at each fit.
"""

import copy
from typing import NamedTuple

import numpy as np
import torch as th
from stable_baselines3.common.type_aliases import ReplayBufferSamples

from sb3_s2vg.imagined_buffer import select_observations
from sb3_s2vg.world_model import WorldModel

#: At most this many held-out transitions score each epoch (MBPO)
MAX_HOLDOUT = 5000
#: An epoch is one pass over the training split, or as many passes as make this many minibatches
MIN_EPOCH_UPDATES = 20
#: The relative improvement of the held-out loss that resets the patience (MBPO)
MIN_IMPROVEMENT = 0.01


class ModelFit(NamedTuple):
    """
    What one fit did.

    :param epochs: Epochs run
    :param updates: Gradient steps taken
    :param train_losses: Dynamics, reward and termination losses averaged over the last epoch, shape (3,)
    :param holdout_loss: The best epoch's held-out loss (mean over members), the one whose weights were kept
    :param member_holdout_losses: Each member's held-out loss at the best epoch, shape (n_models,)
    """

    epochs: int
    updates: int
    train_losses: th.Tensor
    holdout_loss: float
    member_holdout_losses: th.Tensor


def holdout_mask(indices: np.ndarray, ratio: float) -> np.ndarray:
    """
    Which replay-buffer slots are held out: a fixed pseudo-random fraction ``ratio`` of them, the same at every call
    (Knuth's multiplicative hash of the slot index), so that no state needs saving.

    :param indices: Slot indices, shape (n,)
    :param ratio: Fraction held out, in (0, 1)
    :return: Boolean mask of shape (n,)
    """
    hashed = ((indices.astype(np.uint64) + np.uint64(1)) * np.uint64(2654435761)) % np.uint64(2**32)
    return hashed < np.uint64(int(ratio * 2**32))


def holdout_split(indices: np.ndarray, ratio: float, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """
    The training and held-out slots of one fit. The held-out ones are those ``holdout_mask`` picks, at most
    ``MAX_HOLDOUT`` of them drawn at random; while it picks none (a small buffer), every slot is both trained on and
    scored.

    :param indices: The slots to split, shape (n,)
    :param ratio: Fraction held out, in (0, 1)
    :param rng: Draw the held-out set as the first ``MAX_HOLDOUT`` of a random order from this generator; without
        it, with numpy's global generator (``np.random.choice``, only when there are more than ``MAX_HOLDOUT``)
    :return: Training slots, shape (n_train,), and held-out slots, shape (n_holdout,)
    """
    held_out = holdout_mask(indices, ratio)
    holdout = indices[held_out] if held_out.any() else indices
    if rng is not None:
        holdout = rng.permutation(holdout)[:MAX_HOLDOUT]
    elif len(holdout) > MAX_HOLDOUT:
        holdout = np.random.choice(holdout, MAX_HOLDOUT, replace=False)
    return indices[~held_out], holdout


def _rows(data: ReplayBufferSamples, rows: th.Tensor) -> ReplayBufferSamples:
    """The transitions ``rows`` of ``data`` (observations may be dicts of tensors; optional fields None)."""

    return ReplayBufferSamples(*(None if field is None else select_observations(field, rows) for field in data))  # type: ignore[arg-type]


def optimizer_step(optimizer: th.optim.Optimizer, losses: tuple[th.Tensor, ...]) -> th.Tensor:
    """
    One gradient step of the world model on the sum of its losses (``WorldModel.loss``: eq. 6 and the termination
    classifier's cross-entropy).

    :param optimizer: The world model's optimizer
    :param losses: Dynamics, reward and termination losses (scalars, attached to their graphs)
    :return: The losses, detached and stacked, shape (3,)
    """
    optimizer.zero_grad()
    sum(losses).backward()  # type: ignore[union-attr]
    optimizer.step()
    return th.stack([value.detach() for value in losses])


def fit_world_model(
    world_model: WorldModel,
    optimizer: th.optim.Optimizer,
    train: ReplayBufferSamples,
    holdout: ReplayBufferSamples,
    batch_size: int,
    loss: str,
    max_epochs: int,
    patience: int,
) -> ModelFit:
    """
    Train ``world_model`` on ``train`` in epochs of minibatches, scoring every epoch on ``holdout``, until the
    held-out loss has not improved by ``MIN_IMPROVEMENT`` for ``patience`` epochs or ``max_epochs`` have run; then
    restore the weights of the best epoch. The normalisers are not touched (the caller updates them once per fit).

    :param world_model: The model to train
    :param optimizer: Its optimizer
    :param train: Training transitions, n of them (observations of shape (n, ...), rewards and dones (n, 1))
    :param holdout: Held-out transitions, same shapes
    :param batch_size: Minibatch size
    :param loss: ``"mse"`` (eq. 6) or ``"nll"``
    :param max_epochs: Most epochs of this fit
    :param patience: Epochs without improvement before stopping
    :return: What the fit did
    """
    n_train = train.rewards.shape[0]
    best_loss, best_members, best_state = float("inf"), th.zeros(0), None
    epochs_since_improvement = updates = epochs = 0
    train_losses = th.zeros(3)
    while epochs < max_epochs and epochs_since_improvement < patience:
        # one pass, or several while the training split is small (at least MIN_EPOCH_UPDATES minibatches)
        passes = -(-MIN_EPOCH_UPDATES * batch_size // n_train)
        order = th.cat([th.randperm(n_train, device=train.rewards.device) for _ in range(passes)])
        epoch_losses = []
        for start in range(0, len(order), batch_size):
            batch = _rows(train, order[start : start + batch_size])
            losses = world_model.loss(*batch[:3], batch.rewards, batch.dones, loss)  # obs, actions, next obs
            epoch_losses.append(optimizer_step(optimizer, losses))
            updates += 1
        epochs += 1
        train_losses = th.stack(epoch_losses).mean(0)
        member_losses = world_model.member_losses(
            holdout.observations, holdout.actions, holdout.next_observations, holdout.rewards, holdout.dones, loss
        )
        holdout_loss = float(member_losses.mean())
        if best_state is None or holdout_loss < best_loss - MIN_IMPROVEMENT * abs(best_loss):
            best_loss, best_members = holdout_loss, member_losses
            best_state = copy.deepcopy(world_model.state_dict())
            epochs_since_improvement = 0
        else:
            epochs_since_improvement += 1
    if best_state is not None:
        world_model.load_state_dict(best_state)
    return ModelFit(epochs, updates, train_losses, best_loss, best_members)
