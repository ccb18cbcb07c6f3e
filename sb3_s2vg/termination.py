"""
Known termination functions of gymnasium's MuJoCo ``*-v5`` environments, for ``S2VG(termination_fn=...)``.

Each takes flat observation tensors of the environment's default observation (``exclude_current_positions_from_
observation=True``, not normalised by ``VecNormalize``) and returns a float tensor of shape (batch, 1), 1 where
the episode ends. They reproduce the environments' default ``healthy`` conditions.

``walker2d_soft_termination`` is a smooth version of ``walker2d_termination``: a done probability that is
differentiable in the predicted next state, so that eq. 10-11's γ(1 − d)V(ŝ') gives the actor a gradient away from
imagined falls, as a learned classifier's does, while it stays within 0.03 of the 0/1 function wherever the predicted
state is five widths or more from every bound.
"""

import torch as th

#: Width of ``walker2d_soft_termination``'s transition, in the units of the height (m) and of the angle (rad): a
#: margin of one width inside the healthy range gives a done probability of about 0.27 per bound, two widths 0.12,
#: five widths 0.007
SOFT_TERMINATION_WIDTH = 0.02

#: Walker2d-v5's healthy range (the environment's defaults): height z in (0.8, 2.0), |torso angle| < 1.0 rad
WALKER2D_HEIGHT_RANGE = (0.8, 2.0)
WALKER2D_MAX_ANGLE = 1.0


def hopper_termination(obs: th.Tensor, action: th.Tensor, next_obs: th.Tensor) -> th.Tensor:
    """
    Hopper-v5: healthy while z > 0.7, |angle| < 0.2 and every other state entry is within (-100, 100).
    ``next_obs[:, 0]`` is z, ``next_obs[:, 1]`` the torso angle, ``next_obs[:, 1:]`` the state checked for range.

    :param obs: Shape (batch, 11)
    :param action: Shape (batch, 3)
    :param next_obs: Shape (batch, 11)
    :return: Shape (batch, 1)
    """
    height, angle = next_obs[:, 0], next_obs[:, 1]
    healthy = (height > 0.7) & (angle.abs() < 0.2) & (next_obs[:, 1:].abs() < 100.0).all(dim=1)
    return (~healthy).float().unsqueeze(1)


def walker2d_healthy_margins(next_obs: th.Tensor) -> th.Tensor:
    """
    How far Walker2d-v5's state is inside each bound of its healthy range: z − 0.8, 2.0 − z and 1.0 − |angle|, all
    positive exactly when the state is healthy. ``next_obs[:, 0]`` is z, ``next_obs[:, 1]`` the torso angle.

    :param next_obs: Shape (batch, 17)
    :return: Shape (3, batch)
    """
    height, angle = next_obs[:, 0], next_obs[:, 1]
    low, high = WALKER2D_HEIGHT_RANGE
    return th.stack([height - low, high - height, WALKER2D_MAX_ANGLE - angle.abs()])


def walker2d_termination(obs: th.Tensor, action: th.Tensor, next_obs: th.Tensor) -> th.Tensor:
    """
    Walker2d-v5: healthy while 0.8 < z < 2.0 and |angle| < 1.0 (every ``walker2d_healthy_margins`` positive).

    :param obs: Shape (batch, 17)
    :param action: Shape (batch, 6)
    :param next_obs: Shape (batch, 17)
    :return: Shape (batch, 1)
    """
    healthy = (walker2d_healthy_margins(next_obs) > 0).all(dim=0)
    return (~healthy).float().unsqueeze(1)


def walker2d_soft_termination(obs: th.Tensor, action: th.Tensor, next_obs: th.Tensor) -> th.Tensor:
    """
    Walker2d-v5's termination as a probability differentiable in ``next_obs``: 1 − σ((z − 0.8) / w) σ((2.0 − z) / w)
    σ((1.0 − |angle|) / w) with w = ``SOFT_TERMINATION_WIDTH``. It is at least 0.5 wherever ``walker2d_termination``
    is 1 (0.5 on a bound, more beyond it) and 0.0067 five widths inside one bound, far from the others. An option beyond the
    paper and its sources (S2VG's own): with it, ``S2VG`` computes the actor-critic gradients by autograd (the
    hand-derived path takes termination functions without a gradient).

    :param obs: Shape (batch, 17)
    :param action: Shape (batch, 6)
    :param next_obs: Shape (batch, 17)
    :return: Shape (batch, 1), in [0, 1]
    """
    healthy = th.sigmoid(walker2d_healthy_margins(next_obs) / SOFT_TERMINATION_WIDTH).prod(dim=0)
    return (1.0 - healthy).unsqueeze(1)


def inverted_pendulum_termination(obs: th.Tensor, action: th.Tensor, next_obs: th.Tensor) -> th.Tensor:
    """
    InvertedPendulum-v5: the episode ends when the pole angle leaves (-0.2, 0.2) (``next_obs[:, 1]``), or the
    state is not finite.

    :param obs: Shape (batch, 4)
    :param action: Shape (batch, 1)
    :param next_obs: Shape (batch, 4)
    :return: Shape (batch, 1)
    """
    healthy = th.isfinite(next_obs).all(dim=1) & (next_obs[:, 1].abs() <= 0.2)
    return (~healthy).float().unsqueeze(1)
