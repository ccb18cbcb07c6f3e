import base64
import importlib
import io
import json
import pathlib
import warnings
import zipfile
from collections import deque
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, ClassVar, NamedTuple, TypeVar

import cloudpickle
import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import (
    GymEnv,
    MaybeCallback,
    PyTorchObs,
    ReplayBufferSamples,
    Schedule,
)
from stable_baselines3.common.utils import FloatSchedule, update_learning_rate
from stable_baselines3.sac.policies import Actor

from sb3_s2vg.imagined_buffer import ImaginedTransitions, cat_observations, cat_samples, select_observations
from sb3_s2vg.manual_gradients import ManualActorCriticGradients
from sb3_s2vg.model_training import ModelFit, fit_world_model, holdout_split, optimizer_step
from sb3_s2vg.policies import (
    BatchedContinuousCritic,
    MlpPolicy,
    MultiInputPolicy,
    S2VGPolicy,
    ValueNetwork,
    check_observation_space,
    min_over_critics,
    squashed_gaussian_sample,
)
from sb3_s2vg.presets import terminates
from sb3_s2vg.world_model import ENSEMBLE_PREDICTIONS, MODEL_LOSSES, TerminationFn, WorldModel, WorldModelLosses

SelfS2VG = TypeVar("SelfS2VG", bound="S2VG")


#: Number of never-trained-on transitions whose one-step model error is averaged for ``train/model_holdout_*``.
HOLDOUT_WINDOW = 1000


#: World-model options: constructor arguments of ``S2VG`` that reach the ``WorldModel`` through the policy. A value
#: given in ``policy_kwargs`` as well must agree with the constructor's.
WORLD_MODEL_OPTIONS = (
    "predict_delta",
    "normalize_model",
    "learn_termination",
    "termination_fn",
    "n_models",
    "ensemble_prediction",
    "n_elites",
)


class ActorCriticLosses(NamedTuple):
    """
    Scalar losses of one actor-critic update (eq. 7, eq. 8, eq. 10-11) and of the entropy coefficient (None when
    α is constant), logged as ``train/<field>_loss``; and the policy's entropy estimate on the update's batch states
    (real, or with ``imagined_ratio`` partly imagined), −mean log π(a|s) over the batch (detached), logged as
    ``train/entropy``.
    """

    critic: th.Tensor
    value: th.Tensor
    actor: th.Tensor
    ent_coef: th.Tensor | None
    entropy: th.Tensor


class CriticRegression(NamedTuple):
    """
    The regression of eq. 7 for one update, computed without gradient (``S2VG._critic_targets``).

    :param observations: Inputs ŝ_t of the Q networks, the H steps stacked: (n, ...) with n = H * batch
    :param actions: Their actions â_t, shape (n, action_dim)
    :param targets: Regression targets, shape (n, 1)
    :param weights: Weight of each row (the probability that no earlier imagined step terminated), shape (n, 1), or
        None when all are one (H = 1)
    """

    observations: PyTorchObs
    actions: th.Tensor
    targets: th.Tensor
    weights: th.Tensor | None


def _import_termination_fn(path: str) -> TerminationFn:
    module_name, _, attribute = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as error:
        raise ValueError(f"termination_fn {path!r} is not an importable 'module.function' path") from error


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")


def _is_finite_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (float, int, np.floating, np.integer)) and bool(np.isfinite(value))


def _check_ent_coef(ent_coef: Any) -> None:
    """:raises ValueError: unless ``ent_coef`` is a positive float, ``"auto"`` or ``"auto_<positive float>"``"""
    message = f"ent_coef must be a positive float, 'auto' or 'auto_<initial value>' (e.g. 'auto_0.1'), got {ent_coef!r}"
    if isinstance(ent_coef, str):
        if ent_coef == "auto":
            return
        prefix, _, initial = ent_coef.partition("_")
        try:
            valid = prefix == "auto" and 0 < float(initial) < np.inf
        except ValueError:
            valid = False
    else:
        valid = _is_finite_number(ent_coef) and ent_coef > 0
    if not valid:
        raise ValueError(message)


def _check_learning_rate(name: str, value: Any, progress_remaining: float = 1.0) -> None:
    """
    :raises ValueError: naming ``name`` unless ``value`` is a positive finite number, or a schedule that returns one
        at ``progress_remaining``
    """
    at = ""
    if callable(value):
        value, at = value(progress_remaining), f" (its value at progress_remaining={progress_remaining:.4g})"
    if not (_is_finite_number(value) and value > 0):
        raise ValueError(f"{name} must be a positive float or a schedule returning one, got {value!r}{at}")


class S2VG(OffPolicyAlgorithm):
    """
    Soft Stochastic Value Gradient (S2VG): maximum-entropy actor-critic whose policy gradient back-propagates
    through a learned reward model, a learned dynamics model and the state-value function.

    Each gradient step trains the world model on real transitions (eq. 6), then makes ``actor_critic_updates``
    (the paper's m) updates of twin Q (eq. 7, value expansion over ``horizon`` steps), V (eq. 8) and the
    policy (eq. 10-11), each followed by a Polyak update of the target V.

    :param policy: The policy model to use (``MlpPolicy``, ``MultiInputPolicy``)
    :param env: The environment to learn from (if registered in Gym, can be str)
    :param learning_rate: Learning rate of the policy (and of the entropy coefficient when it is learned);
        a float or a schedule of the progress remaining (from 1 to 0)
    :param value_learning_rate: Learning rate of the Q and V networks (float or schedule)
    :param model_learning_rate: Learning rate of the world model (float or schedule)
    :param buffer_size: Size of the replay buffer
    :param learning_starts: How many environment steps to collect before learning starts
    :param batch_size: Minibatch size of each actor-critic update
    :param model_batch_size: Minibatch size of each world-model update
    :param tau: The soft update coefficient of the target V ("Polyak update", between 0 and 1)
    :param gamma: The discount factor
    :param train_freq: Update the model every ``train_freq`` steps, or a tuple like ``(5, "step")``
    :param gradient_steps: How many gradient steps (each: world-model updates, then m actor-critic updates) to do
        after each rollout; ``-1`` means as many as environment steps collected during the rollout
    :param actor_critic_updates: m, the actor-critic updates per gradient step (the paper uses 1 to 5)
    :param model_gradient_steps: World-model updates per gradient step (the paper's schedule; not used with
        ``model_train_freq``)
    :param model_train_freq: None (default): the paper's schedule, ``model_gradient_steps`` world-model updates on a
        fresh batch at every gradient step. N: MBPO's schedule (an option beyond the paper;
        ``sb3_s2vg.model_training``), every N environment steps fit the world model on the whole replay buffer
        less a held-out split, in epochs, until the held-out loss stops improving; the normalisers absorb the new
        transitions once per fit
    :param model_holdout_ratio: With ``model_train_freq``: the fraction of replay-buffer slots held out (fixed per slot)
    :param model_max_epochs: With ``model_train_freq``: most epochs of one fit
    :param model_patience: With ``model_train_freq``: epochs without a 1 % improvement of the held-out loss before
        a fit stops (MBPO: 5)
    :param imagined_ratio: The fraction of each actor-critic batch drawn from imagined transitions instead of the
        replay buffer (an option beyond the paper, which trains on real transitions only: MBPO's model buffer, DHMBPO's
        distribution rollouts; ``sb3_s2vg.imagined_buffer``); 0 (default) is the paper
    :param model_rollout_length: With ``imagined_ratio``: steps of each branched rollout of the policy in the world
        model, from real states
    :param model_rollout_freq: With ``imagined_ratio``: actor-critic updates between two rounds of rollouts
    :param model_rollout_batch_size: With ``imagined_ratio``: real start states of each round of rollouts
    :param imagined_buffer_size: With ``imagined_ratio``: the most recent imagined transitions kept
    :param policy_horizon: H_π, the model steps the policy gradient passes through (``_actor_loss``); ``1`` is the
        paper's eq. 10-11, ``H_π > 1`` the multi-step value gradient of SVG(H) / DHMBPO (an option, not the paper's)
    :param min_q_subset: M, the number of Q networks the minimum of eq. 8's target is taken over, a random subset drawn
        at every update (REDQ, Chen et al. 2021; DHMBPO takes 2 of 5); ``None`` (default) takes all ``n_critics``
        (``policy_kwargs=dict(n_critics=N)``), as the paper's twin Q
    :param horizon: H of the value expansion (eq. 7); ``1`` trains Q on real transitions only, ``H > 1`` rolls
        the world model H - 1 steps forward from the real next state
    :param soft_value_expansion: With ``horizon > 1``: each target of eq. 7 also adds the entropy terms
        -γ^{k-t} α log π(â_k|ŝ_k) of the imagined actions after the one it is for, the soft Bellman equation over H
        steps (an option beyond the paper, whose eq. 7 sums r̂_k only while V_ψ̄(ŝ_H) and eq. 8's targets are soft
        values; DHMBPO's model-based value expansion, 4kubo/erl_lib ``SVGAgent.eval_rollout``, subtracts α log π
        along its rollouts); ``False`` is the paper
    :param on_policy_value_expansion: Train Q on the policy's actions in the model instead of the buffer's: Q(s, â₀)
        with â₀ ~ π(s) on the batch's states s, regressed toward the return of an H-step model rollout from (s, â₀)
        bootstrapped with V_ψ̄ (with ``soft_value_expansion``, the later actions' entropy terms too); only that first
        step is regressed, and the buffer's actions and rewards do not enter Q's loss (an option beyond the paper;
        DHMBPO's critic, 4kubo/erl_lib ``SVGAgent.mb_policy_evaluation`` with ``mve_horizon=1``; with the policy's
        ``value_scaling`` the running range is still taken from the batch's rewards, DHMBPO's from the rollout's).
        Works with any ``horizon``; ``False`` is the paper
    :param action_noise: The action noise type (None by default)
    :param replay_buffer_class: Replay buffer class to use; if ``None``, it will be automatically selected
    :param replay_buffer_kwargs: Keyword arguments to pass to the replay buffer on creation
    :param optimize_memory_usage: Enable a memory efficient variant of the replay buffer
    :param ent_coef: The entropy coefficient α: a float (the paper uses 0.1 to 0.4), or ``"auto"`` to learn it
        as in SAC (``"auto_0.1"`` starts it at 0.1)
    :param target_update_interval: Update the target V every ``target_update_interval`` actor-critic updates
        (``train/n_updates`` counts gradient steps, as SB3 does; ``train/n_actor_critic_updates`` and
        ``train/n_model_updates`` count the two kinds of update)
    :param target_entropy: Target entropy when learning ``ent_coef`` (``"auto"``: minus the action dimension)
    :param model_loss: ``"mse"``, the paper's eq. 6 on reparameterised samples, or ``"nll"``, the Gaussian
        negative log-likelihood
    :param predict_delta: The dynamics model predicts ``s' - s`` rather than ``s'``
    :param normalize_model: Normalise the world model's observation inputs and its targets with running
        statistics, saved with the model
    :param learn_termination: Learn a termination classifier from the replay buffer, so that imagined transitions
        into terminal states do not bootstrap V (for Hopper, Walker2d, ...)
    :param termination_fn: Known termination function ``(obs, action, next_obs) -> done`` on flat observation
        tensors, or its import path (``"sb3_s2vg.termination.hopper_termination"``); it takes precedence over the
        learned classifier (see ``sb3_s2vg.termination``). Without either,
        imagined transitions never terminate, which is right for Pendulum and HalfCheetah.
    :param n_models: Members of an ensemble world model (an option beyond the paper, which names ensembles as future
        work; PETS, MBPO, DHMBPO): each trains on its own bootstrap of every world-model batch; 1 is the paper's model
    :param ensemble_prediction: How the ensemble predicts an imagined step: ``"random"``, one random member per
        sample (the default for an ensemble, as in PETS / MBPO), or ``"mean"``, the members' average
    :param n_elites: Predict with the ``n_elites`` members of lowest held-out error only (MBPO's elites), chosen at
        every ``train`` call from the errors of the last ``HOLDOUT_WINDOW`` transitions before the model trained on
        them; None: all members.
        The world-model options (``predict_delta``, ``normalize_model``, ``learn_termination``, ``termination_fn``,
        ``n_models``, ``ensemble_prediction``) are set here; ``policy_kwargs`` may repeat them only with the same
        value
    :param manual_gradients: Compute each actor-critic update's losses and gradients with the hand-derived forward
        and backward passes of ``sb3_s2vg.manual_gradients`` (same numbers as autograd, about 15 % less time per
        update on CPU) where the configuration allows it (``ManualActorCriticGradients.unsupported_reason``: vector
        observations, ``Box`` or ``Dict``, ReLU networks, no gSDE, a termination function, if any, whose output
        carries no gradient); elsewhere, and with ``False``, autograd
    :param use_sde: Whether to use generalized State Dependent Exploration (gSDE)
    :param sde_sample_freq: Sample a new noise matrix every n steps when using gSDE
    :param use_sde_at_warmup: Whether to use gSDE instead of uniform sampling during the warm up phase
    :param stats_window_size: Window size for the rollout logging
    :param tensorboard_log: The log location for tensorboard (if None, no logging)
    :param policy_kwargs: Additional arguments to be passed to the policy on creation (``net_arch`` as a list, or
        a dict with keys ``pi``, ``qf``, ``vf``, ``dynamics``, ``reward``, ``termination``)
    :param verbose: Verbosity level: 0 for no output, 1 for info messages, 2 for debug messages
    :param seed: Seed for the pseudo random generators
    :param device: Device (cpu, cuda, ...) on which the code should be run
    :param _init_setup_model: Whether or not to build the network at the creation of the instance
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": MlpPolicy,
        "MultiInputPolicy": MultiInputPolicy,
    }
    policy: S2VGPolicy
    actor: Actor
    critic: BatchedContinuousCritic
    value_net: ValueNetwork
    value_target: ValueNetwork
    world_model: WorldModel

    def __init__(
        self,
        policy: str | type[S2VGPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 3e-4,
        value_learning_rate: float | Schedule = 3e-4,
        model_learning_rate: float | Schedule = 3e-4,
        buffer_size: int = 1_000_000,
        learning_starts: int = 100,
        batch_size: int = 256,
        model_batch_size: int = 256,
        tau: float = 0.005,
        gamma: float = 0.99,
        train_freq: int | tuple[int, str] = 1,
        gradient_steps: int = 1,
        actor_critic_updates: int = 5,
        model_gradient_steps: int = 1,
        model_train_freq: int | None = None,
        model_holdout_ratio: float = 0.2,
        model_max_epochs: int = 100,
        model_patience: int = 5,
        imagined_ratio: float = 0.0,
        model_rollout_length: int = 5,
        model_rollout_freq: int = 20,
        model_rollout_batch_size: int = 256,
        imagined_buffer_size: int = 51_200,
        horizon: int = 1,
        policy_horizon: int = 1,
        min_q_subset: int | None = None,
        soft_value_expansion: bool = False,
        on_policy_value_expansion: bool = False,
        action_noise: ActionNoise | None = None,
        replay_buffer_class: type[ReplayBuffer] | None = None,
        replay_buffer_kwargs: dict[str, Any] | None = None,
        optimize_memory_usage: bool = False,
        ent_coef: str | float = 0.2,
        target_update_interval: int = 1,
        target_entropy: str | float = "auto",
        model_loss: str = "mse",
        predict_delta: bool = True,
        normalize_model: bool = True,
        learn_termination: bool = False,
        termination_fn: TerminationFn | str | None = None,
        n_models: int = 1,
        ensemble_prediction: str = "random",
        n_elites: int | None = None,
        manual_gradients: bool = True,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        use_sde_at_warmup: bool = False,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ):
        for name, value in [
            ("horizon", horizon),
            ("policy_horizon", policy_horizon),
            ("n_models", n_models),
            ("actor_critic_updates", actor_critic_updates),
            ("model_gradient_steps", model_gradient_steps),
            ("batch_size", batch_size),
            ("model_batch_size", model_batch_size),
            ("target_update_interval", target_update_interval),
            ("model_max_epochs", model_max_epochs),
            ("model_patience", model_patience),
            ("model_rollout_length", model_rollout_length),
            ("model_rollout_freq", model_rollout_freq),
            ("model_rollout_batch_size", model_rollout_batch_size),
            ("imagined_buffer_size", imagined_buffer_size),
        ]:
            _check_positive_int(name, value)
        for name, rate in [
            ("learning_rate", learning_rate),
            ("value_learning_rate", value_learning_rate),
            ("model_learning_rate", model_learning_rate),
        ]:
            _check_learning_rate(name, rate)
        if model_train_freq is not None:
            _check_positive_int("model_train_freq", model_train_freq)
        if not 0.0 <= imagined_ratio <= 1.0:
            raise ValueError(f"imagined_ratio must be in [0, 1] (0: real transitions only), got {imagined_ratio!r}")
        if not 0.0 < model_holdout_ratio < 1.0:
            raise ValueError(f"model_holdout_ratio must be in (0, 1), got {model_holdout_ratio!r}")
        if not 0.0 < tau <= 1.0:
            raise ValueError(f"tau must be in (0, 1], got {tau!r}")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {gamma!r}")
        if model_loss not in MODEL_LOSSES:
            raise ValueError(f"model_loss must be one of {MODEL_LOSSES}, got {model_loss!r}")
        if ensemble_prediction not in ENSEMBLE_PREDICTIONS:
            raise ValueError(f"ensemble_prediction must be one of {ENSEMBLE_PREDICTIONS}, got {ensemble_prediction!r}")
        if isinstance(termination_fn, str):  # an import path, as in rl-zoo's YAML files
            termination_fn = _import_termination_fn(termination_fn)
        if termination_fn is not None and not callable(termination_fn):
            raise ValueError(f"termination_fn must be callable (obs, action, next_obs) -> done, got {termination_fn!r}")
        _check_ent_coef(ent_coef)
        _check_bool("soft_value_expansion", soft_value_expansion)
        if soft_value_expansion and horizon == 1:
            raise ValueError(
                "soft_value_expansion=True needs horizon > 1: with horizon=1 eq. 7 has no imagined step to add "
                "-α log π to (its target bootstraps the soft V already)"
            )
        _check_bool("on_policy_value_expansion", on_policy_value_expansion)
        if target_entropy != "auto" and not _is_finite_number(target_entropy):
            raise ValueError(f"target_entropy must be 'auto' or a float (e.g. -action_dim), got {target_entropy!r}")

        super().__init__(
            policy,
            env,
            learning_rate,
            buffer_size,
            learning_starts,
            batch_size,
            tau,
            gamma,
            train_freq,
            gradient_steps,
            action_noise,
            replay_buffer_class=replay_buffer_class,
            replay_buffer_kwargs=replay_buffer_kwargs,
            optimize_memory_usage=optimize_memory_usage,
            policy_kwargs=policy_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            device=device,
            seed=seed,
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
            use_sde_at_warmup=use_sde_at_warmup,
            supported_action_spaces=(spaces.Box,),
            support_multi_env=True,
        )
        self.value_learning_rate = value_learning_rate
        self.model_learning_rate = model_learning_rate
        self.model_batch_size = model_batch_size
        self.actor_critic_updates = actor_critic_updates
        self.model_gradient_steps = model_gradient_steps
        self.model_train_freq = model_train_freq
        self.model_holdout_ratio = model_holdout_ratio
        self.model_max_epochs = model_max_epochs
        self.model_patience = model_patience
        self.imagined_ratio = imagined_ratio
        self.model_rollout_length = model_rollout_length
        self.model_rollout_freq = model_rollout_freq
        self.model_rollout_batch_size = model_rollout_batch_size
        self.imagined_buffer_size = imagined_buffer_size
        # With imagined_ratio: the imagined transitions (saved with the model, restored by load before _setup_model)
        self._imagined: ImaginedTransitions | None = None
        self.horizon = horizon
        self.policy_horizon = policy_horizon
        self.min_q_subset = min_q_subset
        self.soft_value_expansion = soft_value_expansion
        self.on_policy_value_expansion = on_policy_value_expansion
        self.ent_coef = ent_coef
        self.target_entropy = target_entropy
        self.target_update_interval = target_update_interval
        self.model_loss = model_loss
        self.predict_delta = predict_delta
        self.normalize_model = normalize_model
        self.learn_termination = learn_termination
        self.termination_fn = termination_fn
        self.n_models = n_models
        self.ensemble_prediction = ensemble_prediction
        self.n_elites = n_elites
        self.manual_gradients = manual_gradients
        self.log_ent_coef: th.Tensor | None = None
        self.ent_coef_optimizer: th.optim.Adam | None = None
        self._n_actor_critic_updates = 0  # m per gradient step (``_n_updates`` counts gradient steps, as in SB3)
        self._n_model_updates = 0
        # Replay-buffer position up to which the world model's held-out error has been measured
        self._holdout_pos = 0
        self._holdout_errors: deque[np.ndarray] = deque(maxlen=HOLDOUT_WINDOW)
        # With model_train_freq: the env step of the last fit, and the buffer position its normalisers reached
        self._last_model_fit: int | None = None
        self._model_fit_pos = 0
        self._termination_warned = False  # warn once about a terminating env without a termination model

        if _init_setup_model:
            self._setup_model()

    def _world_model_options(self) -> dict[str, Any]:
        """
        The world-model options of the constructor, for the policy; ``policy_kwargs`` may repeat one only with
        the same value.

        :raises ValueError: naming both places when they disagree
        """
        options = {name: getattr(self, name) for name in WORLD_MODEL_OPTIONS}
        for name, value in options.items():
            if name in self.policy_kwargs and self.policy_kwargs[name] is not value and self.policy_kwargs[name] != value:
                raise ValueError(
                    f"policy_kwargs[{name!r}]={self.policy_kwargs[name]!r} conflicts with S2VG({name}={value!r}): "
                    f"set world-model options as S2VG's arguments, S2VG({name}=...), not in policy_kwargs"
                )
        return options

    def _setup_model(self) -> None:
        check_observation_space(self.observation_space)
        user_policy_kwargs = self.policy_kwargs
        self.policy_kwargs = {**user_policy_kwargs, **self._world_model_options()}
        super()._setup_model()
        self.policy_kwargs = user_policy_kwargs  # saved as given: the options are saved as S2VG's attributes
        self._create_aliases()
        if self.policy.value_scale is not None and self.gamma >= 1.0:
            raise ValueError(
                f"policy_kwargs value_scaling=True needs gamma < 1 (its range of values is the soft rewards' over "
                f"1 - gamma), got gamma={self.gamma!r}"
            )
        self._check_termination_fn()
        self._warn_if_termination_is_unmodelled()
        if self.min_q_subset is not None:
            _check_positive_int("min_q_subset", self.min_q_subset)
            if self.min_q_subset > self.critic.n_critics:
                raise ValueError(
                    f"min_q_subset={self.min_q_subset} is more than the {self.critic.n_critics} Q networks "
                    "(policy_kwargs n_critics): the minimum is taken over a subset of them"
                )
        self.value_lr_schedule = FloatSchedule(self.value_learning_rate)
        self.model_lr_schedule = FloatSchedule(self.model_learning_rate)
        if self.imagined_ratio > 0 and self._imagined is None:
            self._imagined = ImaginedTransitions(
                self.imagined_buffer_size, self.world_model.flattener, self.world_model.action_dim, self.device
            )

        if self.target_entropy == "auto":
            assert isinstance(self.action_space, spaces.Box)
            self.target_entropy = float(-np.prod(self.action_space.shape).astype(np.float32))
        else:
            self.target_entropy = float(self.target_entropy)

        if isinstance(self.ent_coef, str) and self.ent_coef.startswith("auto"):
            init_value = float(self.ent_coef.split("_")[1]) if "_" in self.ent_coef else 1.0
            self.log_ent_coef = th.log(th.ones(1, device=self.device) * init_value).requires_grad_(True)
            self.ent_coef_optimizer = th.optim.Adam([self.log_ent_coef], lr=self.lr_schedule(1))
        else:
            self.ent_coef_tensor = th.tensor(float(self.ent_coef), device=self.device)

    def _models_termination(self) -> bool:
        return self.termination_fn is not None or self.learn_termination

    def _warn_if_termination_is_unmodelled(self) -> None:
        """Warn when the env is one whose settings (``get_hyperparameters``) model termination and this model does not."""
        if self._models_termination() or self.env is None:
            return
        try:
            env_id = self.env.get_attr("spec")[0].id
        except Exception:  # no spec (a custom env): the first real termination warns instead (_store_transition)
            return
        if terminates(env_id):
            warnings.warn(
                f"{env_id} ends episodes on termination, but this S2VG model has neither termination_fn nor "
                f"learn_termination=True: imagined transitions never end and V bootstraps past falls. Use "
                f"S2VG('MlpPolicy', {env_id!r}, **get_hyperparameters({env_id!r})) for the tested settings.",
                stacklevel=3,
            )
            self._termination_warned = True

    def _check_termination_fn(self) -> None:
        """
        Call ``termination_fn`` once on a batch of two zero transitions, so that a function that fails or returns the
        wrong type or shape is reported here, at construction, rather than in the middle of ``learn``.

        :raises ValueError: naming ``termination_fn``
        """
        world_model = self.world_model
        if world_model.termination_fn is None:
            return
        obs = th.zeros(2, world_model.obs_dim, device=self.device)
        try:
            world_model.known_dones(obs, th.zeros(2, world_model.action_dim, device=self.device), obs)
        except ValueError:
            raise
        except Exception as error:
            raise ValueError(
                f"termination_fn failed on a batch of two (obs, action, next_obs) tensors of shapes {tuple(obs.shape)}, "
                f"(2, {world_model.action_dim}), {tuple(obs.shape)}: {error!r}"
            ) from error

    def _create_aliases(self) -> None:
        self.actor = self.policy.actor
        self.critic = self.policy.critic
        self.value_net = self.policy.value_net
        self.value_target = self.policy.value_target
        self.world_model = self.policy.world_model
        # Parameter lists used on every update (not saved: rebuilt from the policy)
        self._value_parameters: list[th.Tensor] = list(self.value_net.parameters())
        self._value_target_parameters: list[th.Tensor] = list(self.value_target.parameters())
        self._policy_step_frozen_parameters = [*self.world_model.parameters(), *self._value_parameters]
        self._manual_gradients: ManualActorCriticGradients | None = None
        if self.manual_gradients:
            reason = ManualActorCriticGradients.unsupported_reason(
                self.actor, self.critic, self.value_net, self.world_model, self.policy_horizon
            )
            if reason is not None and self.verbose >= 1:
                print(f"S2VG: actor-critic gradients by autograd, the hand-derived ones do not cover {reason}")
            if reason is None:
                self._manual_gradients = ManualActorCriticGradients(self.actor, self.critic, self.value_net, self.world_model)

    def _update_learning_rates(self) -> None:
        """
        Set the policy, value and model learning rates from their schedules and log them.

        :raises ValueError: naming the argument when a schedule returns a value that is not positive and finite
        """
        for name, schedule in [
            ("learning_rate", self.learning_rate),
            ("value_learning_rate", self.value_learning_rate),
            ("model_learning_rate", self.model_learning_rate),
        ]:
            _check_learning_rate(name, schedule, self._current_progress_remaining)
        policy_optimizers = [self.actor.optimizer]
        if self.ent_coef_optimizer is not None:
            policy_optimizers.append(self.ent_coef_optimizer)
        self._update_learning_rate(policy_optimizers)
        value_lr = self.value_lr_schedule(self._current_progress_remaining)
        model_lr = self.model_lr_schedule(self._current_progress_remaining)
        update_learning_rate(self.critic.optimizer, value_lr)
        update_learning_rate(self.value_net.optimizer, value_lr)
        update_learning_rate(self.world_model.optimizer, model_lr)
        self.logger.record("train/value_learning_rate", value_lr)
        self.logger.record("train/model_learning_rate", model_lr)

    def _store_transition(
        self,
        replay_buffer: ReplayBuffer,
        buffer_action: np.ndarray,
        new_obs: np.ndarray | dict[str, np.ndarray],
        reward: np.ndarray,
        dones: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        """
        Store the transition, refusing non-finite rewards or observations before they reach the buffer: the
        observation it starts from (the reset observation at an episode's start), the next observation, the
        reward, and ``infos[i]["terminal_observation"]`` where an episode ended.

        :raises ValueError: naming what was not finite and the env step
        """

        def finite(obs: Any) -> bool:
            parts = obs.values() if isinstance(obs, dict) else [obs]
            return all(np.all(np.isfinite(part)) for part in parts)

        checks = [("observation (the reset observation at an episode's start)", self._last_obs)]
        checks += [("next observation", new_obs), ("reward", reward)]
        checks += [(f"infos[{i}]['terminal_observation']", info["terminal_observation"])
                   for i, (done, info) in enumerate(zip(dones, infos)) if done and "terminal_observation" in info]  # fmt: skip
        for name, value in checks:
            if value is not None and not finite(value):
                raise ValueError(
                    f"The environment returned a non-finite {name} at step {self.num_timesteps}; nothing was stored: "
                    "S2VG's world model cannot learn from NaN/inf. Wrap the env in VecCheckNan to find where it comes from."
                )
        if not self._termination_warned and not self._models_termination():
            if any(done and not info.get("TimeLimit.truncated", False) for done, info in zip(dones, infos)):
                warnings.warn(
                    f"An episode terminated at step {self.num_timesteps}, but this S2VG model has neither "
                    "termination_fn nor learn_termination=True: imagined transitions never end. Set one of them "
                    "(sb3_s2vg.termination has known functions; get_hyperparameters(env_id) the tested settings).",
                    stacklevel=2,
                )
                self._termination_warned = True
        super()._store_transition(replay_buffer, buffer_action, new_obs, reward, dones, infos)

    # ------------------------------------------------------------------ losses, one per equation of the paper

    def _world_model_loss(self, data: ReplayBufferSamples) -> tuple[th.Tensor, ...]:
        """
        Eq. 6: J(ω) = ½ E[(f(s, a) − s')²] and J(φ) = ½ E[(r̂(s, a) − r)²] on real transitions (or their Gaussian
        negative log-likelihood with ``model_loss="nll"``), plus the termination classifier's cross-entropy.
        The running normalisers absorb the batch first.

        :param data: Real transitions, observations of shape (batch, ...) and rewards of shape (batch, 1)
        :return: Dynamics, reward and termination losses (scalars)
        """
        self.world_model.update_normalizers(data.observations, data.next_observations, data.rewards)
        return self.world_model.loss(
            data.observations, data.actions, data.next_observations, data.rewards, data.dones, self.model_loss
        )

    def _imagined_rollout(
        self, data: ReplayBufferSamples
    ) -> tuple[list[PyTorchObs], list[th.Tensor], list[th.Tensor], list[th.Tensor], list[th.Tensor], PyTorchObs]:
        """
        The rollout of eq. 7: the real tuple (ŝ₀, â₀, r̂₀, ŝ₁) from the replay buffer, then H − 1 imagined steps
        with â_k ~ π(ŝ_k), r̂_k and ŝ_{k+1} sampled from the world model. With ``on_policy_value_expansion`` all H
        steps are imagined, from the batch's states: â₀ ~ π(ŝ₀) and r̂₀, ŝ₁ from the world model. No gradient flows.

        :param data: Real transitions (batch,)
        :return: Lists of length H of observations, actions (batch, action_dim), rewards (batch, 1), dones
            (batch, 1) and log-probabilities log π(â_k|ŝ_k) (batch, 1; zeros for a stored â₀), and the final
            observation ŝ_H
        """
        observations: list[PyTorchObs] = []
        actions: list[th.Tensor] = []
        rewards: list[th.Tensor] = []
        dones: list[th.Tensor] = []
        log_probs: list[th.Tensor] = []
        if self.on_policy_value_expansion:
            next_obs, first_imagined = data.observations, 0
        else:
            observations.append(data.observations)
            actions.append(data.actions)
            rewards.append(data.rewards)
            dones.append(data.dones)
            log_probs.append(th.zeros_like(data.rewards))
            next_obs, first_imagined = data.next_observations, 1
        with th.no_grad():
            for _ in range(first_imagined, self.horizon):
                obs = next_obs
                action, log_prob = self._sample_actions(obs)
                prediction = self.world_model(obs, action)
                observations.append(obs)
                actions.append(action)
                rewards.append(prediction.rewards)
                dones.append(prediction.dones if prediction.dones is not None else th.zeros_like(prediction.rewards))
                log_probs.append(log_prob)
                next_obs = prediction.next_observations
        return observations, actions, rewards, dones, log_probs, next_obs

    def _critic_targets(self, data: ReplayBufferSamples) -> CriticRegression:
        """
        The regression data of eq. 7, without gradient: the inputs (ŝ_t, â_t) of the H steps and their targets
        Σ_{k=t}^{H−1} γ^{k−t} r̂_k + γ^{H−t} V_ψ̄(ŝ_H) (with termination masks), weighted by the probability that no
        earlier step terminated. H = 1 is the TD target r + γ(1 − d) V_ψ̄(s') on real transitions. With
        ``soft_value_expansion`` each target also adds the entropy terms −γ^{k−t} α log π(â_k|ŝ_k) of the later
        steps k > t (the soft Bellman equation over H steps; ``value_expansion_targets``), α of this update.
        With ``on_policy_value_expansion``: one row per state, (ŝ₀, â₀ ~ π(ŝ₀)) and the target of that first step of
        an all-imagined rollout (DHMBPO's critic), without weights.

        :param data: Real transitions (batch,)
        :return: The H steps stacked (n = H * batch rows; n = batch with ``on_policy_value_expansion``): observations
            (n, ...), actions (n, action_dim), targets (n, 1) and weights (n, 1), or None for H = 1 and
            ``on_policy_value_expansion`` (all ones)
        """
        if self.horizon == 1 and not self.on_policy_value_expansion:
            with th.no_grad():
                targets = data.rewards + self.gamma * (1.0 - data.dones) * self._target_values(data.next_observations)
            return CriticRegression(data.observations, data.actions, targets, None)
        observations, actions, rewards, dones, log_probs, final_obs = self._imagined_rollout(data)
        with th.no_grad():
            entropy_bonuses = -self._current_ent_coef() * th.stack(log_probs) if self.soft_value_expansion else None
            targets = value_expansion_targets(
                th.stack(rewards), th.stack(dones), self._target_values(final_obs), self.gamma, entropy_bonuses
            )
            if self.on_policy_value_expansion:  # DHMBPO's critic: the first step only, (ŝ₀, â₀ ~ π(ŝ₀))
                return CriticRegression(data.observations, actions[0], targets[0], None)
            weights = alive_weights(th.stack(dones)).flatten(0, 1)
        return CriticRegression(cat_observations(observations), th.cat(actions), targets.flatten(0, 1), weights)

    def _target_values(self, observations: PyTorchObs) -> th.Tensor:
        """
        V_ψ̄ of eq. 7's targets; with the policy's ``value_scaling``, clipped into the running range of values
        (DHMBPO's bounded critic, ``ValueScale.clip``).

        :param observations: Observations (batch, ...)
        :return: Target values of shape (batch, 1)
        """
        values = self.value_target(observations)
        return values if self.policy.value_scale is None else self.policy.value_scale.clip(values)

    def _critic_loss(self, data: ReplayBufferSamples) -> th.Tensor:
        """
        Eq. 7 (value expansion): J(φ) = 1/H Σ_t (Q_φ(ŝ_t, â_t) − (Σ_{k=t}^{H−1} γ^{k−t} r̂_k + γ^{H−t} V_ψ̄(ŝ_H)))²
        for each Q network, with the target V and termination masks; H = 1 is the TD target
        r + γ(1 − d) V_ψ̄(s') on real transitions. Steps after a termination carry no weight. With
        ``on_policy_value_expansion``, Q(ŝ₀, â₀ ~ π(ŝ₀)) toward the first target of an all-imagined rollout (DHMBPO).

        :param data: Real transitions (batch,)
        :return: Scalar loss, ½ Σ_i over the Q networks (as SB3's SAC)
        """
        regression = self._critic_targets(data)
        # (n_critics, n, 1); the sum over critics and the n = H * batch rows, over n, is ½ Σ_i (1/H) Σ_t mean
        squared_errors = (self.critic.stacked(regression.observations, regression.actions) - regression.targets).square()
        if regression.weights is not None:
            squared_errors = regression.weights * squared_errors
        return 0.5 * squared_errors.sum() / regression.targets.shape[0]

    def _value_loss(self, observations: PyTorchObs, actions_pi: th.Tensor, log_prob: th.Tensor, ent_coef: th.Tensor) -> th.Tensor:
        """
        Eq. 8: J(ψ) = E_{s~D}[½ (V_ψ(s) − (min_i Q_φi(s, a) − α log π(a|s)))²] with a ~ π(s), on real states.

        :param observations: Real observations (batch, ...)
        :param actions_pi: Actions sampled from the current policy, detached, shape (batch, action_dim)
        :param log_prob: Their log-probabilities, detached, shape (batch, 1)
        :param ent_coef: α, a scalar tensor
        :return: Scalar loss
        """
        with th.no_grad(), self._without_dropout(self.critic):
            q_values = self.critic.stacked(observations, actions_pi)
            target = min_over_critics(q_values, self._min_q_members()) - ent_coef * log_prob
        return 0.5 * (self.value_net(observations) - target).square().mean()

    def _actor_loss(self, observations: PyTorchObs, actions_pi: th.Tensor, log_prob: th.Tensor, ent_coef: th.Tensor) -> th.Tensor:
        """
        Eq. 10-11: maximise E_{s~D, η, ζ}[r̂(s, a) − α log π(a|s) + γ (1 − d̂) V(f(s, a, ζ))] with
        a = π(s, η; θ), back-propagating through the reward model, the dynamics model and V. The caller
        differentiates only with respect to the actor's parameters.

        With ``policy_horizon`` H_π > 1 (an option; the multi-step value gradient of SVG(H), Heess et al. 2015, and
        of SAC-SVG(H) and DHMBPO): maximise Σ_{k<H_π} γ^k w_k (r̂_k − α log π(a_k|s_k)) + γ^{H_π} w_{H_π} V(ŝ_{H_π})
        along a reparameterised model rollout from the real states, a_k = π(ŝ_k, η_k), ŝ_{k+1} = f(ŝ_k, a_k, ζ_k),
        where w_k = Π_{j<k} (1 − d̂_j) masks what follows a predicted termination. H_π = 1 is eq. 10-11.

        :param observations: Real observations (batch, ...)
        :param actions_pi: Reparameterised actions of the current policy, shape (batch, action_dim)
        :param log_prob: Their log-probabilities, shape (batch, 1)
        :param ent_coef: α, a scalar tensor
        :return: Scalar loss (the negated objective)
        """
        obs, actions, log_probs = observations, actions_pi, log_prob
        objective: th.Tensor | None = None
        alive: th.Tensor | None = None  # Π_{j<k} (1 − d̂_j): the probability that the rollout is still running
        discount = 1.0
        for step in range(self.policy_horizon):
            if step > 0:
                actions, log_probs = self._sample_actions(obs)
            prediction = self.world_model(obs, actions)
            soft_reward = prediction.rewards - ent_coef * log_probs
            if step > 0:
                soft_reward = discount * (soft_reward if alive is None else alive * soft_reward)
            objective = soft_reward if objective is None else objective + soft_reward
            if prediction.dones is not None:
                alive = 1.0 - prediction.dones if alive is None else alive * (1.0 - prediction.dones)
            discount *= self.gamma
            obs = prediction.next_observations
        assert objective is not None
        with self._without_dropout(self.value_net):
            next_values = self.value_net(obs)
        if alive is not None:
            next_values = alive * next_values
        return -(objective + discount * next_values).mean()

    def _without_dropout(self, module: th.nn.Module) -> AbstractContextManager[None]:
        """
        ``module`` (Q or V) in evaluation mode where it serves as a target or as the policy's objective, with the
        policy's ``critic_dropout``; nothing to switch without it.
        """
        return evaluation_mode(module) if self.policy.critic_dropout > 0 else nullcontext()

    def _min_q_members(self) -> th.Tensor | None:
        """
        The Q networks of this update's minimum in eq. 8: a random subset of ``min_q_subset`` of them (drawn from
        torch's generator), or None for all.

        :return: Indices of shape (min_q_subset,), or None
        """
        if self.min_q_subset is None or self.min_q_subset == self.critic.n_critics:
            return None
        return th.randperm(self.critic.n_critics, device=self.device)[: self.min_q_subset]

    def _sample_actions(self, observations: PyTorchObs) -> tuple[th.Tensor, th.Tensor]:
        """
        Reparameterised actions a = tanh(μ + σ η) of the SB3 actor and their log-probabilities, the same numbers
        (and random stream) as ``Actor.action_log_prob`` without building ``torch.distributions`` objects.

        :param observations: Observations (batch, ...)
        :return: Actions of shape (batch, action_dim) in [-1, 1] and log-probabilities of shape (batch, 1)
        """
        if self.use_sde:
            actions, log_prob = self.actor.action_log_prob(observations)
            return actions, log_prob.reshape(-1, 1)
        mean_actions, log_std, _ = self.actor.get_action_dist_params(observations)
        sample = squashed_gaussian_sample(mean_actions, log_std)
        return sample.actions, sample.log_prob

    def _current_ent_coef(self) -> th.Tensor:
        """:return: α as a scalar tensor without gradient: exp(log α) when it is learned, else the constant"""
        return th.exp(self.log_ent_coef.detach()) if self.log_ent_coef is not None else self.ent_coef_tensor

    def _ent_coef_loss(self, log_prob: th.Tensor) -> th.Tensor:
        """
        SAC's temperature loss −log α (log π(a|s) + target entropy), used when ``ent_coef="auto"``.

        :param log_prob: Detached log-probabilities of policy actions, shape (batch, 1)
        :return: Scalar loss
        """
        assert self.log_ent_coef is not None and isinstance(self.target_entropy, float)
        return -(self.log_ent_coef * (log_prob + self.target_entropy)).mean()

    # ------------------------------------------------------------------ updates

    def _train_world_model(self) -> th.Tensor:
        """One world-model step on a fresh real batch. :return: the three losses stacked, shape (3,)"""
        data = self.replay_buffer.sample(self.model_batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
        return optimizer_step(self.world_model.optimizer, self._world_model_loss(data))

    def _slots_written_since(self, position: int) -> np.ndarray:
        """
        :param position: A past value of the replay buffer's ``pos``
        :return: The slots written since, oldest first, shape (n,) (at most the buffer's size; none after exactly
            one wrap around)
        """
        buffer = self.replay_buffer
        assert buffer is not None
        n_new = min((buffer.pos - position) % buffer.buffer_size, buffer.size())
        return np.arange(buffer.pos - n_new, buffer.pos) % buffer.buffer_size

    def _model_rollouts(self, imagined: ImaginedTransitions) -> None:
        """
        MBPO's branched rollouts (DHMBPO's distribution rollouts): ``model_rollout_length`` steps of the current policy
        in the world model from ``model_rollout_batch_size`` real states, without gradient; every imagined transition
        goes into ``imagined``, and a rollout stops after a predicted termination (probability ≥ ½).
        """
        start = self.replay_buffer.sample(self.model_rollout_batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
        obs = start.observations
        with th.no_grad():
            for _ in range(self.model_rollout_length):
                actions, _ = self._sample_actions(obs)
                prediction = self.world_model(obs, actions)
                dones = prediction.dones if prediction.dones is not None else th.zeros_like(prediction.rewards)
                imagined.add(obs, actions, prediction.rewards, prediction.next_observations, dones)
                alive = dones.squeeze(-1) < 0.5
                if not bool(alive.any()):
                    break
                obs = select_observations(prediction.next_observations, alive)

    def _actor_critic_batch(self, batch_size: int) -> ReplayBufferSamples:
        """
        The transitions of one actor-critic update: real ones from the replay buffer, or with ``imagined_ratio`` a
        fraction of imagined ones in their place (after a round of ``_model_rollouts`` every ``model_rollout_freq``
        updates).

        :param batch_size: Transitions in all
        """
        buffer = self.replay_buffer
        assert buffer is not None
        if self._imagined is None:
            return buffer.sample(batch_size, env=self._vec_normalize_env)
        if self._n_actor_critic_updates % self.model_rollout_freq == 0 or self._imagined.size == 0:
            self._model_rollouts(self._imagined)
        n_imagined = round(batch_size * self.imagined_ratio)
        imagined = self._imagined.sample(n_imagined)
        if n_imagined == batch_size:
            return imagined
        return cat_samples(buffer.sample(batch_size - n_imagined, env=self._vec_normalize_env), imagined)

    def _buffer_samples(self, indices: np.ndarray) -> ReplayBufferSamples:
        """
        The transitions in replay-buffer slots ``indices`` (with several envs, each slot is read ``n_envs`` times,
        each time from a random env, as SB3's ``_get_samples`` picks one).

        :param indices: Slot indices, shape (n,)
        """
        buffer = self.replay_buffer
        assert buffer is not None
        return buffer._get_samples(np.repeat(indices, buffer.n_envs), env=self._vec_normalize_env)

    def _fit_world_model(self) -> ModelFit | None:
        """
        With ``model_train_freq``, when it is due: the normalisers absorb the transitions added since the last fit,
        then ``fit_world_model`` trains on the replay buffer less its held-out slots and early-stops on them; an
        ensemble's elites are the members of lowest held-out loss.

        :return: What the fit did, or None when no fit was due
        """
        if self.model_train_freq is None:
            return None
        if self._last_model_fit is not None and self.num_timesteps - self._last_model_fit < self.model_train_freq:
            return None
        self._last_model_fit = self.num_timesteps
        buffer = self.replay_buffer
        assert buffer is not None
        new = self._buffer_samples(self._slots_written_since(self._model_fit_pos))
        self._model_fit_pos = buffer.pos
        self.world_model.update_normalizers(new.observations, new.next_observations, new.rewards)

        indices = np.arange(buffer.size())
        if buffer.optimize_memory_usage and buffer.full:  # the slot about to be overwritten has no next observation
            indices = indices[indices != buffer.pos]
        train_indices, holdout_indices = holdout_split(indices, self.model_holdout_ratio)
        fit = fit_world_model(
            self.world_model,
            self.world_model.optimizer,
            self._buffer_samples(train_indices),
            self._buffer_samples(holdout_indices),
            self.model_batch_size,
            self.model_loss,
            self.model_max_epochs,
            self.model_patience,
        )
        if self.world_model.n_elites < self.world_model.n_models:
            self.world_model.set_elites(fit.member_holdout_losses)
        return fit

    def _actor_critic_gradients(self, data: ReplayBufferSamples) -> ActorCriticLosses:
        """
        Gradients of one actor-critic update of Algorithm 1 (step 3), all taken at the current parameters:
        eq. 7 into the Q networks, eq. 8 into V and eq. 11 into the policy, left in each parameter's ``.grad``
        (and the temperature loss, not yet differentiated, when α is learned).

        :param data: Real transitions (batch,)
        :return: The losses (the temperature loss still attached to its graph)
        """
        if self._manual_gradients is not None:
            return self._manual_actor_critic_gradients(data)
        if self.use_sde:
            self.actor.reset_noise()
        actions_pi, log_prob = self._sample_actions(data.observations)

        ent_coef_loss = self._ent_coef_loss(log_prob.detach()) if self.ent_coef_optimizer is not None else None
        ent_coef = self._current_ent_coef()
        if self.policy.value_scale is not None:  # DHMBPO's scaled critic: the range of values, before eq. 7's targets
            self.policy.value_scale.update(data.rewards - ent_coef * log_prob.detach(), self.gamma)

        critic_loss = self._critic_loss(data)
        value_loss = self._value_loss(data.observations, actions_pi.detach(), log_prob.detach(), ent_coef)
        # The policy gradient of eq. 11 passes through the world model and V but must not reach their parameters:
        # with them frozen, autograd computes no weight gradient there, and one backward serves all three losses
        with frozen_parameters(self._policy_step_frozen_parameters):
            actor_loss = self._actor_loss(data.observations, actions_pi, log_prob, ent_coef)

        for optimizer in (self.critic.optimizer, self.value_net.optimizer, self.actor.optimizer):
            optimizer.zero_grad()
        (critic_loss + value_loss + actor_loss).backward()
        entropy = -log_prob.detach().mean()
        return ActorCriticLosses(critic_loss.detach(), value_loss.detach(), actor_loss.detach(), ent_coef_loss, entropy)

    def _manual_actor_critic_gradients(self, data: ReplayBufferSamples) -> ActorCriticLosses:
        """
        ``_actor_critic_gradients`` by the hand-derived passes of ``ManualActorCriticGradients``, called in the
        autograd path's order (policy noise, the imagined rollout of eq. 7, the world model's noise), so that both
        paths draw the same random numbers.
        """
        manual = self._manual_gradients
        assert manual is not None and self.policy.value_scale is None
        policy = manual.sample_actions(data.observations)
        ent_coef_loss = self._ent_coef_loss(policy.sample.log_prob) if self.ent_coef_optimizer is not None else None
        ent_coef = self._current_ent_coef()

        critic_loss = manual.critic_gradients(*self._critic_targets(data))
        value_loss = manual.value_gradients(policy, ent_coef, self._min_q_members())
        actor_loss = manual.actor_gradients(policy, ent_coef, self.gamma)
        entropy = -policy.sample.log_prob.mean()
        return ActorCriticLosses(critic_loss, value_loss, actor_loss, ent_coef_loss, entropy)

    def _actor_critic_update(self, data: ReplayBufferSamples) -> ActorCriticLosses:
        """
        One actor-critic update of Algorithm 1 (step 3): the gradients of eq. 7, eq. 8 and eq. 11, then one
        step of the Q, V and policy optimizers (and of α when it is learned).

        :param data: Real transitions (batch,)
        :return: The losses of this update
        """
        losses = self._actor_critic_gradients(data)
        for optimizer in (self.critic.optimizer, self.value_net.optimizer, self.actor.optimizer):
            optimizer.step()
        if losses.ent_coef is not None:
            assert self.ent_coef_optimizer is not None
            self.ent_coef_optimizer.zero_grad()
            losses.ent_coef.backward()
            self.ent_coef_optimizer.step()
            losses = losses._replace(ent_coef=losses.ent_coef.detach())
        return losses

    def _update_value_target(self) -> None:
        """Polyak averaging ψ̄ ← (1 − τ) ψ̄ + τ ψ, one fused ``_foreach_lerp_`` over all tensors."""
        with th.no_grad():
            th._foreach_lerp_(self._value_target_parameters, self._value_parameters, self.tau)

    def _holdout_errors_of_new_transitions(self) -> th.Tensor | None:
        """
        One-step errors of the world model on the transitions added to the replay buffer since the last call,
        which it has never been trained on.

        :return: Errors of shape (n_new, 3) (next-observation MSE, normalised MSE, reward MSE), and for an ensemble
            each member's normalised MSE after them (n_new, 3 + n_models), or None
        """
        indices = self._slots_written_since(self._holdout_pos)[-HOLDOUT_WINDOW:]
        self._holdout_pos = self.replay_buffer.pos  # type: ignore[union-attr]
        if len(indices) == 0:
            return None
        data = self._buffer_samples(indices)
        world_model = self.world_model
        errors = th.stack(world_model.prediction_errors(data.observations, data.actions, data.next_observations, data.rewards), 1)
        if world_model.n_models > 1:
            member_errors = world_model.member_errors(data.observations, data.actions, data.next_observations)
            errors = th.cat([errors, member_errors.T], dim=1)
        return errors

    def _update_holdout_errors(self) -> None:
        """
        Add the world model's errors on the transitions it has not trained on yet to the window of the last
        ``HOLDOUT_WINDOW``, and choose the ensemble's elites (``n_elites``) from the window's per-member means.
        """
        new_errors = self._holdout_errors_of_new_transitions()
        if new_errors is None:
            return
        self._holdout_errors.extend(new_errors.cpu().numpy())
        if self.model_train_freq is None and self.world_model.n_elites < self.world_model.n_models:
            self.world_model.set_elites(th.as_tensor(np.mean(self._holdout_errors, axis=0)[3:]))

    def train(self, gradient_steps: int, batch_size: int = 256) -> None:
        self.policy.set_training_mode(True)
        self._update_learning_rates()
        self._update_holdout_errors()

        model_losses, ac_losses, ent_coef_losses = [], [], []
        fit = self._fit_world_model()
        if fit is not None:
            model_losses.append(fit.train_losses)
        for _ in range(gradient_steps):
            for _ in range(self.model_gradient_steps if self.model_train_freq is None else 0):
                model_losses.append(self._train_world_model())
            for _ in range(self.actor_critic_updates):
                data = self._actor_critic_batch(batch_size)
                losses = self._actor_critic_update(data)
                ac_losses.append(th.stack([losses.critic, losses.value, losses.actor, losses.entropy]))
                if losses.ent_coef is not None:
                    ent_coef_losses.append(losses.ent_coef)
                self._n_actor_critic_updates += 1
                if self._n_actor_critic_updates % self.target_update_interval == 0:
                    self._update_value_target()
        # SB3's meaning: gradient steps; the two kinds of update are counted under their own names
        self._n_updates += gradient_steps
        self._n_model_updates += len(model_losses) if fit is None else fit.updates
        self._log_training(model_losses, ac_losses, ent_coef_losses, fit)

    def _log_training(
        self,
        model_losses: list[th.Tensor],
        ac_losses: list[th.Tensor],
        ent_coef_losses: list[th.Tensor],
        fit: ModelFit | None = None,
    ) -> None:
        """
        Record the mean losses of one ``train`` call under ``train/`` (names from ``WorldModelLosses`` and
        ``ActorCriticLosses``), the policy's mean entropy estimate, α, and the world model's held-out error; one
        host-device synchronisation.

        :param model_losses: Per world-model update, the ``WorldModelLosses`` stacked, shape (3,) each
        :param ac_losses: Per actor-critic update, the critic, value and actor losses and the entropy estimate stacked,
            shape (4,) each
        :param ent_coef_losses: Per actor-critic update, α's loss when it is learned (scalars), else empty
        :param fit: The world-model fit of this call (``model_train_freq``), if one ran: its epochs, updates and
            held-out loss are logged as ``train/model_fit_*``
        :raises RuntimeError: when a loss is not finite (training diverged)
        """
        to_log = [th.stack(ac_losses).mean(0), self._current_ent_coef().reshape(1)]
        names = ["critic_loss", "value_loss", "actor_loss", "entropy", "ent_coef"]
        if model_losses:  # none between two fits with model_train_freq
            to_log.insert(0, th.stack(model_losses).mean(0))
            names[:0] = [f"{field}_loss" for field in WorldModelLosses._fields]
        if ent_coef_losses:
            to_log.append(th.stack(ent_coef_losses).mean().reshape(1))
            names.append("ent_coef_loss")
        if self.policy.value_scale is not None:  # value_scaling's running range of values
            to_log.append(th.stack([self.policy.value_scale.lower, self.policy.value_scale.upper]))
            names += ["value_range_lower", "value_range_upper"]
        values = th.cat(to_log).cpu().numpy()
        if not np.all(np.isfinite(values)):
            bad = [name for name, value in zip(names, values) if not np.isfinite(value)]
            raise RuntimeError(
                f"S2VG training diverged: non-finite {bad} after {self._n_actor_critic_updates} actor-critic updates. "
                "Check the observations and rewards for NaN/inf, and consider lower learning rates or normalize_model=True."
            )
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/n_actor_critic_updates", self._n_actor_critic_updates, exclude="tensorboard")
        self.logger.record("train/n_model_updates", self._n_model_updates, exclude="tensorboard")
        for name, value in zip(names, values):
            if name == "termination_loss" and not self.learn_termination:
                continue
            self.logger.record(f"train/{name}", float(value))
        if self._imagined is not None:
            self.logger.record("train/imagined_transitions", self._imagined.size)
        if fit is not None:
            self.logger.record("train/model_fit_epochs", fit.epochs)
            self.logger.record("train/model_fit_updates", fit.updates)
            self.logger.record("train/model_fit_holdout_loss", fit.holdout_loss)
        if self._holdout_errors:
            mean_errors = np.mean(self._holdout_errors, axis=0)
            self.logger.record("train/model_holdout_obs_mse", float(mean_errors[0]))
            self.logger.record("train/model_holdout_obs_nmse", float(mean_errors[1]))
            self.logger.record("train/model_holdout_reward_mse", float(mean_errors[2]))
            for member, error in enumerate(mean_errors[3:]):
                self.logger.record(f"train/model_holdout_obs_nmse_member{member}", float(error))

    def learn(
        self: SelfS2VG,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str = "S2VG",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfS2VG:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )

    def predict_transition(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        action: np.ndarray,
        deterministic: bool = True,
    ) -> tuple[np.ndarray | dict[str, np.ndarray], np.ndarray, np.ndarray | None]:
        """
        The world model's prediction for observations and actions as the environment takes them, in numpy: the
        actions are scaled to [-1, 1] here (``self.world_model`` itself takes tensors of scaled actions).

        :param observation: One observation of the observation space, or a batch of them (batch, ...), as the policy
            sees them (after ``VecNormalize`` if the env uses it)
        :param action: Actions in the env's action space, shape (action_dim,) or (batch, action_dim)
        :param deterministic: The Gaussian heads' means instead of samples
        :return: Next observations (the observation's form), rewards of shape (batch,), and the probability that
            each transition terminates, shape (batch,), or None without a termination model; without the batch
            dimension for a single observation
        :raises ValueError: when the actions lie outside the action space or do not match the observations in number
        """
        obs_tensor, vectorized = self.policy.obs_to_tensor(observation)
        assert isinstance(self.action_space, spaces.Box)
        actions = np.asarray(action, dtype=np.float32).reshape(-1, *self.action_space.shape)
        n_obs = next(iter(obs_tensor.values())).shape[0] if isinstance(obs_tensor, dict) else obs_tensor.shape[0]
        if actions.shape[0] != n_obs:
            raise ValueError(f"action holds {actions.shape[0]} actions for {n_obs} observations")
        if not (np.all(actions >= self.action_space.low) and np.all(actions <= self.action_space.high)):
            raise ValueError(
                f"action lies outside the action space [{self.action_space.low}, {self.action_space.high}]: "
                "predict_transition takes actions as the env does (it scales them itself)"
            )
        scaled = th.as_tensor(self.policy.scale_action(actions), device=self.device)
        with th.no_grad():
            prediction = self.world_model(obs_tensor, scaled, deterministic=deterministic)
        if isinstance(prediction.next_observations, dict):
            next_obs: np.ndarray | dict[str, np.ndarray] = {
                key: value.cpu().numpy() if vectorized else value[0].cpu().numpy()
                for key, value in prediction.next_observations.items()
            }
        else:
            flat = prediction.next_observations.cpu().numpy()
            next_obs = flat if vectorized else flat[0]
        rewards = prediction.rewards.reshape(-1).cpu().numpy()
        dones = None if prediction.dones is None else prediction.dones.reshape(-1).cpu().numpy()
        if not vectorized:
            return next_obs, rewards[:1].reshape(()), None if dones is None else dones.reshape(())
        return next_obs, rewards, dones

    @classmethod
    def load(  # type: ignore[override]
        cls: type[SelfS2VG],
        path: str | pathlib.Path | io.BufferedIOBase,
        env: GymEnv | None = None,
        device: th.device | str = "auto",
        custom_objects: dict[str, Any] | None = None,
        print_system_info: bool = False,
        force_reset: bool = True,
        **kwargs: Any,
    ) -> SelfS2VG:
        """
        SB3's ``load``, after checking that the file holds an S2VG model.

        :raises ValueError: naming the policy class (and the algorithm it belongs to) when the file was saved by
            another algorithm
        """
        _check_saved_policy_class(path)
        return super().load(path, env, device, custom_objects, print_system_info, force_reset, **kwargs)

    def _excluded_save_params(self) -> list[str]:
        return [
            *super()._excluded_save_params(),
            "actor",
            "critic",
            "value_net",
            "value_target",
            "world_model",
            "_value_parameters",
            "_value_target_parameters",
            "_policy_step_frozen_parameters",
            "_manual_gradients",
        ]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts = ["policy", "actor.optimizer", "critic.optimizer", "value_net.optimizer", "world_model.optimizer"]
        if self.ent_coef_optimizer is not None:
            saved_pytorch_variables = ["log_ent_coef"]
            state_dicts.append("ent_coef_optimizer")
        else:
            saved_pytorch_variables = ["ent_coef_tensor"]
        return state_dicts, saved_pytorch_variables


def _check_saved_policy_class(path: str | pathlib.Path | io.BufferedIOBase) -> None:
    """
    :raises ValueError: when the SB3 zip at ``path`` holds a policy that is not an ``S2VGPolicy``, naming it and the
        algorithm it comes from
    """
    if isinstance(path, io.BufferedIOBase):
        position = path.tell()
        archive = zipfile.ZipFile(path)
    else:
        position = None
        path = pathlib.Path(path)
        archive = zipfile.ZipFile(path if path.exists() else path.with_suffix(".zip"))
    try:
        policy_class = json.loads(archive.read("data")).get("policy_class", {})
    except (KeyError, json.JSONDecodeError):
        return  # not an SB3 file: SB3's own loader reports it
    finally:
        if position is not None:
            path.seek(position)  # type: ignore[union-attr]
    module = str(policy_class.get("__module__", ""))
    if module == "sb3_s2vg.policies":
        return
    try:
        saved_class = cloudpickle.loads(base64.b64decode(policy_class[":serialized:"]))
        if isinstance(saved_class, type) and issubclass(saved_class, S2VGPolicy):
            return  # a user's subclass of S2VG's policy
        name = saved_class.__name__
    except Exception:
        name = "an unknown policy class"
    package, _, rest = module.partition(".")
    subpackage = rest.split(".")[0]
    algorithm = None  # SB3's and sb3-contrib's <algo>/policies.py define <Algo>Policy (SACPolicy, CrossQPolicy, ...)
    if package in ("stable_baselines3", "sb3_contrib") and name.endswith("Policy") and name[:-6].lower() == subpackage:
        algorithm = name[:-6]
    raise ValueError(
        f"The file holds {name} (from {module or 'an unknown module'}), the policy of "
        f"{algorithm or 'another algorithm'}, not an S2VG model; load it with "
        f"{algorithm + '.load' if algorithm else 'the algorithm that saved it'}"
    )


@contextmanager
def frozen_parameters(all_parameters: list[th.Tensor]) -> Iterator[None]:
    """Within the context, ``all_parameters`` do not require gradients (inputs still get theirs)."""
    parameters = [param for param in all_parameters if param.requires_grad]
    for param in parameters:
        param.requires_grad_(False)
    try:
        yield
    finally:
        for param in parameters:
            param.requires_grad_(True)


@contextmanager
def evaluation_mode(module: th.nn.Module) -> Iterator[None]:
    """Within the context, ``module`` is in evaluation mode (no dropout); then back in the mode it was in."""
    mode = module.training
    module.train(False)
    try:
        yield
    finally:
        module.train(mode)


def value_expansion_targets(
    rewards: th.Tensor,
    dones: th.Tensor,
    bootstrap_values: th.Tensor,
    gamma: float,
    entropy_bonuses: th.Tensor | None = None,
) -> th.Tensor:
    """
    Targets of eq. 7 for every step of a rollout: G_t = r_t + γ (1 − d_t) G_{t+1} with G_H = V(ŝ_H), that is
    Σ_{k=t}^{H−1} γ^{k−t} r_k + γ^{H−t} V(ŝ_H) when nothing terminates. With ``entropy_bonuses`` b_k = −α log π(â_k|ŝ_k)
    (``soft_value_expansion``): G_t = r_t + γ (1 − d_t) (b_{t+1} + G_{t+1}) with b_H = 0, the soft Bellman equation
    over H steps, in which the entropy of â_t itself belongs to V(ŝ_t), not to the target of Q(ŝ_t, â_t), and V(ŝ_H)
    is already a soft value.

    :param rewards: Shape (H, batch, 1)
    :param dones: Termination indicators or probabilities, shape (H, batch, 1)
    :param bootstrap_values: V(ŝ_H), shape (batch, 1)
    :param gamma: Discount factor
    :param entropy_bonuses: −α log π(â_k|ŝ_k), shape (H, batch, 1) (the entry k = 0 is not used), or None
    :return: Targets of shape (H, batch, 1)
    """
    targets = []
    target = bootstrap_values
    for t in reversed(range(rewards.shape[0])):
        continuation = target if entropy_bonuses is None or t + 1 == rewards.shape[0] else target + entropy_bonuses[t + 1]
        target = rewards[t] + gamma * (1.0 - dones[t]) * continuation
        targets.append(target)
    return th.stack(targets[::-1])


def alive_weights(dones: th.Tensor) -> th.Tensor:
    """
    Weight of each rollout step in eq. 7: the probability that no earlier step terminated, Π_{k<t} (1 − d_k).

    :param dones: Shape (H, batch, 1)
    :return: Shape (H, batch, 1), ones at t = 0
    """
    alive = th.cumprod(1.0 - dones, dim=0)
    return th.cat([th.ones_like(alive[:1]), alive[:-1]], dim=0)
