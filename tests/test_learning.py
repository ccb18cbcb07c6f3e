import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor

from sb3_s2vg import S2VG

pytestmark = pytest.mark.slow  # seconds to a minute each; `pytest -m 'not slow'` skips them


def test_short_pendulum_run_beats_a_random_policy_by_a_clear_margin():
    eval_env = Monitor(gym.make("Pendulum-v1"))
    eval_env.reset(seed=100)
    eval_env.action_space.seed(100)
    random_returns = []
    for _ in range(10):
        eval_env.reset()
        done, episode_return = False, 0.0
        while not done:
            _, reward, terminated, truncated, _ = eval_env.step(eval_env.action_space.sample())
            episode_return += reward
            done = terminated or truncated
        random_returns.append(episode_return)
    # Smaller networks than the paper's, for a quick test; paper's m = 5, alpha = 0.2, H = 1
    model = S2VG("MlpPolicy", "Pendulum-v1", policy_kwargs=dict(net_arch=[64, 64]), seed=0)
    model.learn(1200)
    mean_return, _ = evaluate_policy(model, eval_env, n_eval_episodes=10, deterministic=True)
    assert np.mean(random_returns) < -900
    assert mean_return > np.mean(random_returns) + 600, (mean_return, np.mean(random_returns))
