import os
import subprocess
import sys

import optuna
import pytest
from stable_baselines3.common.env_util import make_vec_env

from sb3_s2vg import S2VG
from sb3_s2vg.zoo import HYPERPARAMS_PATH, SAME_SAMPLER_SEED_ENV, load_hyperparams, main, register

pytest.importorskip("rl_zoo3")

ENVS = ["Pendulum-v1", "InvertedPendulum-v5", "HalfCheetah-v5", "Hopper-v5", "Walker2d-v5"]


@pytest.mark.parametrize("env_id", ENVS)
def test_every_yaml_section_builds_an_s2vg_agent(env_id):
    hyperparams = load_hyperparams(env_id)
    assert hyperparams.pop("n_timesteps") > 0
    model = S2VG(hyperparams.pop("policy"), env_id, **hyperparams)
    assert model.learning_rate == 3e-4  # Table 2: the policy learning rate is 3e-4 everywhere
    if env_id.startswith("Hopper"):
        assert model.termination_fn is not None
    if env_id.startswith(("InvertedPendulum", "Walker2d")):
        assert model.learn_termination and model.world_model.termination is not None


def test_registration_adds_s2vg_to_rl_zoo():
    from rl_zoo3 import ALGOS
    from rl_zoo3.hyperparams_opt import HYPERPARAMS_SAMPLER

    register()
    assert ALGOS["s2vg"] is S2VG
    assert "s2vg" in HYPERPARAMS_SAMPLER


@pytest.mark.slow
def test_zoo_train_then_enjoy(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(["train", "--algo", "s2vg", "--env", "Pendulum-v1", "-n", "300", "-f", "logs", "--seed", "1", "--eval-freq", "-1"])
    model_path = tmp_path / "logs" / "s2vg" / "Pendulum-v1_1" / "Pendulum-v1.zip"
    model = S2VG.load(model_path, env=make_vec_env("Pendulum-v1"))
    assert model.num_timesteps == 300
    assert model.actor_critic_updates == load_hyperparams("Pendulum-v1")["actor_critic_updates"]
    main(["enjoy", "--algo", "s2vg", "--env", "Pendulum-v1", "-f", "logs", "--no-render", "-n", "50"])


@pytest.mark.slow
def test_optimize_from_two_processes_into_one_sqlite_study(tmp_path):
    """Two workers with the same --seed start together: one study, and different trials (per-worker sampler seeds)."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    command = [
        sys.executable, "-m", "sb3_s2vg.zoo", "train", "--algo", "s2vg", "--env", "Pendulum-v1", "-optimize",
        "--n-trials", "1", "-n", "150", "--n-evaluations", "1", "--eval-episodes", "1", "--sampler", "random",
        "--pruner", "none", "--storage", storage, "--study-name", "s2vg_shared", "-f", str(tmp_path / "logs"),
        "--seed", "1",
    ]  # fmt: skip
    env = {key: value for key, value in os.environ.items() if key != SAME_SAMPLER_SEED_ENV}
    workers = [subprocess.Popen(command, cwd=tmp_path, env=env) for _ in range(2)]
    assert [worker.wait(timeout=300) for worker in workers] == [0, 0]
    study = optuna.load_study(study_name="s2vg_shared", storage=storage)
    completed = [trial for trial in study.trials if trial.state == optuna.trial.TrialState.COMPLETE]
    assert len(completed) == 2
    assert {"actor_critic_updates", "model_learning_rate", "ent_coef"} <= set(completed[0].params)
    assert completed[0].params != completed[1].params


def test_hyperparameter_file_is_package_data():
    assert HYPERPARAMS_PATH.exists()
