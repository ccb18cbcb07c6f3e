"""The benchmark scripts that produce the committed results: they run end to end on tiny budgets and write what
the README cites (CSV, summary table, plots), and value_bias.py's batched Pendulum is gymnasium's."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch as th

pytestmark = pytest.mark.slow  # seconds to a minute each; `pytest -m 'not slow'` skips them

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"

pytest.importorskip("matplotlib")


def run_script(name: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / name), *args], capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_compare_writes_curves_summary_and_figures(tmp_path):
    out = tmp_path / "results"
    stdout = run_script(
        "compare.py", "--env", "Pendulum-v1", "--algos", "s2vg", "sac", "--seeds", "0", "--steps", "300",
        "--eval-every", "150", "--eval-episodes", "1", "--hyperparams", "defaults", "--threshold", "-5000",
        "--report-steps", "150", "300", "--out", str(out), "--s2vg-kwargs", "dict(learning_starts=100)",
    )  # fmt: skip
    env_dir = out / "Pendulum-v1"
    for algo in ("s2vg", "sac"):
        rows = read_rows(env_dir / f"{algo}_seed0.csv")
        assert [int(row["step"]) for row in rows] == [150, 300]
        assert all(np.isfinite(float(row["return_mean"])) and float(row["train_seconds"]) > 0 for row in rows)
    summary = json.loads((env_dir / "summary.json").read_text())
    assert set(summary["algos"]) == {"s2vg", "sac"}
    # every Pendulum return is above -5000: the threshold is reached at the first evaluation
    assert summary["algos"]["s2vg"]["steps_to_threshold"] == [150.0]
    assert "| S2VG | 1 |" in stdout and "| SAC (defaults) | 1 |" in stdout
    assert (env_dir / "curves_steps.png").stat().st_size > 0 and (env_dir / "curves_seconds.png").stat().st_size > 0

    run_script("figures.py", "--results", str(out))
    assert (out / "figure1.png").stat().st_size > 0 and (out / "figure2a.png").stat().st_size > 0
    # no MuJoCo runs here: the frontier table says so on every row
    assert "| Hopper-v5 | S2VG [img08-ens5] | 0 | – |" in (out / "frontier.md").read_text()

    # a summary cut at an earlier step, under its own name
    stdout = run_script(
        "compare.py", "--env", "Pendulum-v1", "--summary-only", "--until", "150", "--summary-name", "early",
        "--report-steps", "150", "300", "--out", str(out),
    )  # fmt: skip
    early = json.loads((env_dir / "summary_early.json").read_text())
    assert early["algos"]["s2vg"]["return@150"] == summary["algos"]["s2vg"]["return@150"]
    assert early["algos"]["s2vg"]["return@300"] == [] and "| S2VG | 1 |" in stdout
    assert (env_dir / "curves_steps_early.png").stat().st_size > 0


def test_compare_extends_a_finished_run_exactly(tmp_path):
    """A run's last checkpoint is at its last step: a larger --steps with --resume continues from there exactly."""
    common = [
        "--env", "Pendulum-v1", "--algos", "sac", "--seeds", "0", "--eval-every", "100", "--eval-episodes", "1",
        "--checkpoint-every", "100", "--resume",
        "--baseline-kwargs", "dict(learning_starts=50, batch_size=32, policy_kwargs=dict(net_arch=[16, 16]))",
    ]  # fmt: skip
    run_script("compare.py", *common, "--steps", "200", "--out", str(tmp_path / "extended"))
    stdout = run_script("compare.py", *common, "--steps", "300", "--out", str(tmp_path / "extended"))
    assert "sac_seed0: resumed at step 200" in stdout
    run_script("compare.py", *common, "--steps", "300", "--out", str(tmp_path / "straight"))
    extended, straight = (read_rows(tmp_path / name / "Pendulum-v1" / "sac_seed0.csv") for name in ("extended", "straight"))
    assert [row["step"] for row in extended] == ["100", "200", "300"]
    assert [row["return_mean"] for row in extended] == [row["return_mean"] for row in straight]

    # a finished run whose checkpoint is older than its CSV (the final checkpoint was not kept) is not recomputed
    csv_path = tmp_path / "straight" / "Pendulum-v1" / "sac_seed0.csv"
    csv_path.write_text(csv_path.read_text() + "400,1.0,-1.0,0.0,1.0\n")
    before = csv_path.read_text()
    stdout = run_script("compare.py", *common, "--steps", "400", "--out", str(tmp_path / "straight"))
    assert "already reaches step 400; nothing to run" in stdout and csv_path.read_text() == before
    # extending it past the CSV resumes from the older checkpoint, says so, and rewrites the rows after it
    stdout = run_script("compare.py", *common, "--steps", "500", "--out", str(tmp_path / "straight"))
    assert "warning: the checkpoint (step 300) is behind" in stdout
    rows = read_rows(csv_path)
    assert [row["step"] for row in rows] == ["100", "200", "300", "400", "500"] and rows[3]["return_mean"] != "-1.0"


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path) as file:
        return list(csv.DictReader(file))


def write_curve(path: Path, steps, seconds: float, returns: float) -> None:
    """A compare.py CSV whose training seconds and return are ``seconds`` and ``returns`` times the env step."""
    path.parent.mkdir(exist_ok=True)
    rows = "".join(f"{step},{step * seconds},{step * returns},0,{step * seconds}\n" for step in steps)
    path.write_text("step,train_seconds,return_mean,return_std,cpu_seconds\n" + rows)


def test_summary_cells_name_the_seeds_behind_a_partial_mean(tmp_path):
    """A seed still under way leaves the step's cell to the seeds that got there, and the cell says how many."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from compare import summarize
    finally:
        sys.path.remove(str(BENCHMARKS))
    write_curve(tmp_path / "crossq_seed0.csv", [50, 100], 1.0, 10.0)  # 1,000 at 100
    write_curve(tmp_path / "crossq_seed1.csv", [50, 100], 1.0, 30.0)  # 3,000 at 100
    write_curve(tmp_path / "crossq_seed2.csv", [50], 1.0, 20.0)  # under way: 1,000 at 50
    table = summarize("Hopper-v5", tmp_path, None, [50, 100, 200])
    assert "| CrossQ | 3 | 1000 ± 408 | 2000 ± 1000 (2/3 seeds) | – |" in table


def test_frontier_table_counts_the_seeds_behind_each_mean(tmp_path):
    """Runs still under way count where they have data: the 100k mean is over the seeds that got there."""
    env_dir = tmp_path / "Hopper-v5"
    write_curve(env_dir / "s2vg-img08-ens5_seed0.csv", range(25_000, 100_001, 25_000), seconds=0.1, returns=0.02)
    write_curve(env_dir / "s2vg-img08-ens5_seed1.csv", (25_000, 50_000), seconds=0.2, returns=0.04)
    write_curve(env_dir / "s2vg_seed0.csv", [25_000], seconds=1 / 25_000, returns=5 / 25_000)  # not Hopper's pick
    run_script("figures.py", "--results", str(tmp_path))
    table = (tmp_path / "frontier.md").read_text()
    # 25k: 500 and 1,000; 50k: 1,000 and 2,000; 100k: seed 0 only (2,000 after 10,000 training seconds)
    row = "| Hopper-v5 | S2VG [img08-ens5] | 2 | 750 ± 250 (2) | 1,500 ± 500 (2) | 2,000 ± 0 (1) | 10,000 | 7.5 | 3,000 | 3,399 |"
    assert row in table
    assert "| Hopper-v5 | SAC (defaults) | 0 |" in table and "| Walker2d-v5 | S2VG [img08-ens5-learnedterm] | 0 |" in table
    assert (tmp_path / "frontier_steps.png").stat().st_size > 0 and (tmp_path / "frontier_seconds.png").stat().st_size > 0


def test_wall_clock_to_sac_return_pairs_each_seed(tmp_path):
    """S2VG's first evaluation at or above SAC's 100k / 200k return, per seed, with the ratio of training seconds."""
    env_dir = tmp_path / "Hopper-v5"
    # S2VG: return step / 20 after step / 10 seconds; SAC: return step / 100 after step / 100 seconds, to 200k on seed 0
    write_curve(env_dir / "s2vg-img08-ens5_seed0.csv", range(5_000, 50_001, 5_000), seconds=0.1, returns=0.05)
    write_curve(env_dir / "sac_seed0.csv", (100_000, 200_000), seconds=0.01, returns=0.01)
    write_curve(env_dir / "sac_seed1.csv", [100_000], seconds=0.01, returns=0.01)  # no S2VG seed 1: no row
    run_script("figures.py", "--results", str(tmp_path))
    table = (tmp_path / "frontier.md").read_text()
    # SAC 1,000 at 100k in 1,000 s: S2VG reaches it at 20k after 2,000 s; SAC's 2,000 at 200k: at 40k after 4,000 s
    row = "| Hopper-v5 | 0 | 1,000 in 1,000 s | 20k steps, 2,000 s (2.00×) | 2,000 in 2,000 s | 40k steps, 4,000 s (2.00×) |"
    assert row in table
    assert "| Hopper-v5 | 1 |" not in table
    write_curve(env_dir / "sac_seed0.csv", [100_000], seconds=0.01, returns=0.03)  # a return S2VG never reaches
    run_script("figures.py", "--results", str(tmp_path))
    assert "| Hopper-v5 | 0 | 3,000 in 1,000 s | not reached by 50k (5,000 s) | – | – |" in (tmp_path / "frontier.md").read_text()


def test_wallclock_times_the_runs_configurations_in_one_process(tmp_path):
    """Rates measured in one invocation turn the env steps to SAC's seed-mean return into seconds for both."""
    env_dir = tmp_path / "Hopper-v5"
    write_curve(env_dir / "s2vg-img08-ens5_seed0.csv", range(5_000, 50_001, 5_000), seconds=0.1, returns=0.05)
    write_curve(env_dir / "s2vg-img08-ens5_seed1.csv", range(5_000, 50_001, 5_000), seconds=0.1, returns=0.026)
    write_curve(env_dir / "s2vg-img08-ens5_seed2.csv", range(5_000, 20_001, 5_000), seconds=0.1, returns=0.0)  # under way
    write_curve(env_dir / "sac_seed0.csv", (100_000, 200_000), seconds=0.01, returns=0.01)
    write_curve(env_dir / "sac_seed1.csv", [100_000], seconds=0.01, returns=0.02)
    stdout = run_script(
        "wallclock.py", "--envs", "Hopper-v5", "--algos", "s2vg", "sac", "--rounds", "1", "--warmup", "2",
        "--chunk", "s2vg=8", "sac=20", "--results", str(tmp_path),
    )  # fmt: skip
    results = json.loads((tmp_path / "wallclock.json").read_text())
    rates = results["rates"]["Hopper-v5"]
    assert set(rates) == {"s2vg", "sac"} and all(rate > 0 for rate in rates.values())
    assert results["dense_matmul_flops_per_s"] > 0
    # SAC's seed mean: 1,500 at 100k (2 seeds), 2,000 at 200k (seed 0). S2VG's mean over the two finished seeds (seed 2,
    # still under way, left out): 0.038 x step, 1,330 at 35k and 1,520 at 40k; 2,000 not reached by 50k (1,900)
    first, second = results["reach"]["Hopper-v5"]
    assert (first["sac_return"], first["sac_seeds"], first["s2vg_steps"], first["s2vg_seeds"]) == (1500.0, 2, 40_000, 2)
    # the random warm-up steps (learning_starts: s2vg.yml's 1,000 for Hopper, SAC's default 100) count as free
    assert results["warmup_steps"]["Hopper-v5"] == {"s2vg": 1_000, "sac": 100}
    assert first["s2vg_seconds"] == pytest.approx(39_000 / rates["s2vg"])
    assert first["sac_seconds"] == pytest.approx(99_900 / rates["sac"])
    assert (second["sac_return"], second["s2vg_steps"], second["s2vg_last_step"]) == (2000.0, None, 50_000)
    ratio = first["s2vg_seconds"] / first["sac_seconds"]
    assert f"| Hopper-v5 | 1,500 at 100k (2) | {first['sac_seconds']:,.0f} s | 40k steps (2) |" in stdout
    assert f"| {ratio:.2f}× |" in stdout and "| Hopper-v5 | 2,000 at 200k (1) |" in stdout and "not by 50k (2)" in stdout
    assert "GFLOP/s" in (tmp_path / "wallclock.md").read_text()

    # curves that grew since the timing: the table again with the same rates, nothing timed
    write_curve(env_dir / "sac_seed1.csv", [100_000], seconds=0.01, returns=0.01)  # SAC's 100k mean now 1,000
    stdout = run_script("wallclock.py", "--envs", "Hopper-v5", "--reuse-rates", "--results", str(tmp_path))
    again = json.loads((tmp_path / "wallclock.json").read_text())
    assert again["rates"] == results["rates"] and again["dense_matmul_flops_per_s"] == results["dense_matmul_flops_per_s"]
    assert (again["reach"]["Hopper-v5"][0]["sac_return"], again["reach"]["Hopper-v5"][0]["s2vg_steps"]) == (1000.0, 30_000)
    assert again["timed_runs"] == {"Hopper-v5": "s2vg-img08-ens5"} and "was timed with" not in stdout

    # rates reused after the frontier run changed: the table says which configuration they were timed with
    again["timed_runs"]["Hopper-v5"] = "s2vg-other"
    (tmp_path / "wallclock.json").write_text(json.dumps(again))
    stdout = run_script("wallclock.py", "--envs", "Hopper-v5", "--reuse-rates", "--results", str(tmp_path))
    assert "Hopper-v5: S2VG's rate was timed with the configuration of s2vg-other, not of s2vg-img08-ens5" in stdout
    assert json.loads((tmp_path / "wallclock.json").read_text())["timed_runs"] == {"Hopper-v5": "s2vg-other"}
    assert "| Hopper-v5 | s2vg-other |" in stdout  # the rate's row names the configuration that was timed
    # a wallclock.json from before runs were recorded: the table does not guess which configuration was timed
    del again["timed_runs"]
    (tmp_path / "wallclock.json").write_text(json.dumps(again))
    stdout = run_script("wallclock.py", "--envs", "Hopper-v5", "--reuse-rates", "--results", str(tmp_path))
    assert "| Hopper-v5 | (not recorded) |" in stdout and "timed with the configuration of (not recorded)" in stdout


def test_speed_reports_ratios_and_flops(tmp_path):
    stdout = run_script(
        "speed.py", "--env", "Pendulum-v1", "--hidden", "16", "16", "--batch-size", "16", "--rounds", "1",
        "--repeats", "2", "--learn-envs", "Pendulum-v1", "--learn-steps", "150", "--devices", "cpu",
        "--clock", "cpu", "--out", str(tmp_path),
    )  # fmt: skip
    assert "process CPU time" in stdout
    results = json.loads((tmp_path / "speed.json").read_text())["cpu"]
    assert set(results["seconds"]) == {"sac_step", "s2vg_update", "s2vg_autograd_update", "world_model_update"}
    assert all(seconds > 0 for seconds in results["seconds"].values())
    assert results["flops"]["s2vg_update"] > results["flops"]["world_model_update"] > 0
    assert "| S2VG actor-critic update (hand-derived gradients, the default) |" in stdout
    assert "| S2VG actor-critic update, autograd (manual_gradients=False) |" in stdout and "| Pendulum-v1 | 5 |" in stdout


def test_option_cost_compares_variants_with_the_yaml_settings_and_sac(tmp_path):
    stdout = run_script(
        "option_cost.py", "--env", "Pendulum-v1", "--variants", "hpi2=dict(policy_horizon=2)",
        "ln=dict(policy_kwargs=dict(layer_norm=True))", "--steps", "5", "--rounds", "1", "--out", str(tmp_path),
    )  # fmt: skip
    results = json.loads((tmp_path / "Pendulum-v1.json").read_text())
    assert set(results["rates"]) == {"sac", "paper", "hpi2", "ln"} and results["matmul_gflops"] > 0
    assert all(len(rates) == 1 and rates[0] > 0 for rates in results["rates"].values())
    assert "| hpi2 | `dict(policy_horizon=2)` |" in stdout and "| paper | `(none)` |" in stdout


def test_value_bias_pendulum_copy_matches_gymnasium_and_runs(tmp_path):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from value_bias import check_against_gymnasium
    finally:
        sys.path.remove(str(BENCHMARKS))
    check_against_gymnasium(steps=100)  # raises if the batched dynamics or rewards differ from gymnasium's

    run_script(
        "value_bias.py", "--horizons", "1", "2", "--seeds", "0", "--steps", "200", "--every", "100", "--states", "4",
        "--rollouts", "2", "--mc-horizon", "10", "--out", str(tmp_path),
    )  # fmt: skip
    rows = read_rows(tmp_path / "value_bias_H2_seed0.csv")
    assert [int(row["step"]) for row in rows] == [100, 200]
    for row in rows:
        assert float(row["bias"]) == pytest.approx(float(row["predicted_v"]) - float(row["monte_carlo_v"]), rel=1e-5, abs=1e-4)
    assert (tmp_path / "value_bias.png").stat().st_size > 0


def test_compare_builds_baselines_with_baseline_kwargs():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from compare import make_model
    finally:
        sys.path.remove(str(BENCHMARKS))
    small = dict(policy_kwargs=dict(net_arch=[8, 8]))
    sac_m = make_model("sac_m", "Pendulum-v1", 0, dict(actor_critic_updates=3), small)
    assert sac_m.gradient_steps == 3 and sac_m.policy.actor.latent_pi[0].out_features == 8
    s2vg = make_model("s2vg", "Pendulum-v1", 0, {}, small)  # the baseline arguments do not reach S2VG
    assert s2vg.policy.resolved_net_arch["pi"] == [256, 256]


def test_gradient_drift_reports_both_comparisons():
    stdout = run_script("gradient_drift.py", "--env", "Pendulum-v1", "--hidden", "16", "--updates", "12", "--batch-size", "32")
    rows = [line for line in stdout.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [row.split("|")[1].strip() for row in rows] == ["1", "4", "10", "12"]
    for row in rows:
        manual, perturbed, moved = (float(cell) for cell in row.split("|")[2:5])
        assert 0.0 <= manual < moved and 0.0 < perturbed < moved


class _FixedAction:
    """An agent that always plays one action (``predict`` as SB3's)."""

    def __init__(self, action: np.ndarray) -> None:
        self.action = action

    def predict(self, obs: np.ndarray, deterministic: bool = True) -> tuple[np.ndarray, None]:
        return self.action, None


def test_posture_tells_a_cheetah_on_its_back_from_one_on_its_feet(monkeypatch):
    from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
    from posture import posture

    idle = posture(_FixedAction(np.zeros(6, dtype=np.float32)), "HalfCheetah-v5", episodes=1, seed=0)
    assert idle["on_back"] == 0.0 and abs(idle["pitch_mean"]) < 0.5
    assert idle["length"] == 1000 and abs(idle["x_velocity"]) < 0.1  # HalfCheetah never terminates; idle, it stays put
    # the same cheetah, flipped: rotate the torso's pitch joint by π at every reset
    reset_model = HalfCheetahEnv.reset_model

    def flipped(self):
        reset_model(self)
        qpos, qvel = self.data.qpos.copy(), self.data.qvel.copy()
        qpos[1], qpos[2] = 0.3, np.pi  # qpos: rootx, rootz, rooty (pitch): lifted and upside down
        self.set_state(qpos, qvel)
        return self._get_obs()

    monkeypatch.setattr(HalfCheetahEnv, "reset_model", flipped)
    upside_down = posture(_FixedAction(np.zeros(6, dtype=np.float32)), "HalfCheetah-v5", episodes=1, seed=0)
    assert upside_down["on_back"] > 0.9 and abs(upside_down["pitch_mean"]) > 2.5
    # a Walker2d that does nothing falls: its episodes end early, and two episodes average their lengths
    fallen = posture(_FixedAction(np.zeros(6, dtype=np.float32)), "Walker2d-v5", episodes=2, seed=0)
    assert 0 < fallen["length"] < 1000
    with pytest.raises(ValueError, match="env_id must be one of"):
        posture(_FixedAction(np.zeros(1)), "Pendulum-v1", episodes=1, seed=0)


def test_value_calibration_compares_v_with_the_realised_soft_return():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from value_calibration import BEFORE_END, discounted_soft_returns, run_episode, value_calibration
    finally:
        sys.path.remove(str(BENCHMARKS))
    import gymnasium as gym

    from sb3_s2vg import S2VG

    # soft rewards r - α log π = 0.9, 2.0, 3.2; γ = 0.5; V(s_T) = 4 closes a truncated episode
    returns = discounted_soft_returns(np.array([1.0, 2.0, 3.0]), np.array([0.5, 0.0, -1.0]), alpha=0.2, gamma=0.5, tail=4.0)
    np.testing.assert_allclose(returns, [3.2, 4.6, 5.2])
    np.testing.assert_allclose(discounted_soft_returns(np.ones(2), np.zeros(2), 0.2, 0.5, 0.0), [1.5, 1.0])

    # Pendulum is only truncated (200 steps): the last return is closed with γ V(s_T); nothing to compare before a fall
    pendulum = S2VG("MlpPolicy", "Pendulum-v1", seed=0, ent_coef=0.3, gamma=0.9, policy_kwargs=dict(net_arch=[8]))
    env = gym.make("Pendulum-v1")
    run = run_episode(pendulum, env, seed=0)
    assert not run.terminated and len(run.rewards) == len(run.values) == len(run.returns) == 200
    assert run.alpha == pytest.approx(0.3)
    last_obs = env.unwrapped._get_obs()
    with th.no_grad():
        v_end = float(pendulum.value_net(pendulum.policy.obs_to_tensor(last_obs)[0]))
    assert run.returns[-1] == pytest.approx(run.rewards[-1] - 0.3 * run.log_probs[-1] + 0.9 * v_end, rel=1e-5)
    assert run.returns[-2] == pytest.approx(run.rewards[-2] - 0.3 * run.log_probs[-2] + 0.9 * run.returns[-1], rel=1e-5)
    result = value_calibration(pendulum, "Pendulum-v1", episodes=2, seed=0)
    assert (result["length"], result["terminated"]) == (200, 0.0)
    assert all(np.isnan(result[f"v_before_{n}"]) for n in BEFORE_END)
    np.testing.assert_equal(value_calibration(pendulum, "Pendulum-v1", episodes=2, seed=0), result)  # seeded: the same
    # an untrained hopper falls within a few dozen steps: the last return is its last soft reward, nothing after it
    hopper = S2VG(
        "MlpPolicy",
        "Hopper-v5",
        seed=0,
        termination_fn="sb3_s2vg.termination.hopper_termination",
        policy_kwargs=dict(net_arch=[8]),
    )
    th.manual_seed(0)  # as value_calibration seeds the policy's noise: the same episode below
    fallen = run_episode(hopper, gym.make("Hopper-v5"), seed=0)
    assert fallen.terminated and 10 <= len(fallen.rewards) < 50
    assert fallen.returns[-1] == pytest.approx(fallen.rewards[-1] - fallen.alpha * fallen.log_probs[-1], rel=1e-5)
    summary = value_calibration(hopper, "Hopper-v5", episodes=1, seed=0)
    assert summary["terminated"] == 1.0 and np.isnan(summary["v_before_50"])
    assert (summary["v_before_10"], summary["g_before_10"]) == (fallen.values[-10], fallen.returns[-10])
    # per-step means of α log π and of the soft reward r − α log π, over the steps of all episodes
    assert summary["alpha_log_pi"] == pytest.approx(fallen.alpha * fallen.log_probs.mean(), rel=1e-6)
    assert summary["soft_reward"] == pytest.approx((fallen.rewards - fallen.alpha * fallen.log_probs).mean(), rel=1e-6)
    # the world model's done probability on the episode's transitions: its termination function on the predicted next
    # state, at the termination (the last step) and elsewhere; NaN without a termination model (Pendulum)
    assert fallen.done_probs.shape == fallen.rewards.shape and set(np.unique(fallen.done_probs)) <= {0.0, 1.0}
    assert summary["done_prob_terminal"] == fallen.done_probs[-1]
    assert summary["done_prob_other"] == pytest.approx(fallen.done_probs[:-1].mean())
    assert np.isnan(result["done_prob_terminal"]) and np.isnan(result["done_prob_other"])
    learned = S2VG("MlpPolicy", "Hopper-v5", seed=0, learn_termination=True, policy_kwargs=dict(net_arch=[8]))
    th.manual_seed(0)
    classified = run_episode(learned, gym.make("Hopper-v5"), seed=0)
    obs = learned.policy.obs_to_tensor(gym.make("Hopper-v5").reset(seed=0)[0])[0]
    th.manual_seed(0)
    first_action = learned.actor.action_log_prob(obs)[0].detach()  # the episode's first action (the same noise)
    with th.no_grad():
        expected = th.sigmoid(learned.world_model.termination(learned.world_model.inputs(obs.float(), first_action)))
    assert classified.done_probs[0] == pytest.approx(float(expected), rel=1e-5)  # the classifier's probability


def test_model_quality_scores_trained_world_models_on_the_transitions_after_their_data(tmp_path):
    import gymnasium as gym
    from stable_baselines3.common.buffers import ReplayBuffer

    sys.path.insert(0, str(BENCHMARKS))
    try:
        from exact_checkpoints import save_replay_buffer_compact
        from model_quality import load_transitions, rollout_starts
    finally:
        sys.path.remove(str(BENCHMARKS))
    # 3 Pendulum episodes of 200 random steps, stored as compare.py's checkpoints store a replay buffer
    env = gym.make("Pendulum-v1")
    buffer = ReplayBuffer(1000, env.observation_space, env.action_space)
    rng = np.random.default_rng(0)
    for episode in range(3):
        obs, _ = env.reset(seed=episode)
        for _ in range(200):
            action = rng.uniform(-2, 2, size=(1,)).astype(np.float32)
            next_obs, reward, terminated, truncated, _ = env.step(action)
            buffer.add(obs, next_obs, action, np.array([reward]), np.array([terminated]), [{"TimeLimit.truncated": truncated}])
            obs = next_obs
    save_replay_buffer_compact(buffer, tmp_path / "replay_buffer.pkl.gz")

    data = load_transitions(tmp_path)
    assert data["observations"].shape == (600, 3) and data["timeouts"].sum() == 3
    starts = rollout_starts(data, 300, 600, 5, 1000, rng)
    # no open-loop window crosses the episode end at transition 399 (the 200th of episode 2)
    assert len(starts) == 300 - 5 + 1 - 4 and not any(395 < t <= 399 for t in starts)

    for schedule in ("per-step", "fit"):
        out = tmp_path / f"quality_{schedule}"
        stdout = run_script(
            "model_quality.py", "--env", "Pendulum-v1", "--buffer", str(tmp_path), "--train-steps", "400",
            "--eval-steps", "200", "--horizon", "3", "--starts", "50", "--schedule", schedule, "--out", str(out),
            "--variants", "untrained=dict(model_learning_rate=1e-12)", "ens2=dict(n_models=2)",
        )  # fmt: skip
        results = json.loads(out.with_suffix(".json").read_text())["results"]
        assert set(results) == {"paper", "untrained", "ens2"} and "| ens2 |" in stdout
        for result in results.values():
            assert result["updates"] > 0 and len(result["state"]) == 3 and len(result["reward_rmse"]) == 3
        # the model the yaml's settings train predicts the next transitions better than one that did not learn
        assert results["paper"]["one_step"] < 0.5 * results["untrained"]["one_step"]
        assert results["paper"]["state"][0] < results["untrained"]["state"][0]
