"""Evaluation: ridge probe, R^2, baselines from env metadata, ``lejepa eval`` on a tiny
BouncingBalls run. Other envs (gymnasium's own, a third party's, old files): test_eval_envs.py."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from lejepa_core.envinfo import EnvInfo
from lejepa_core.eval.probe import r2_score, ridge_fit, ridge_predict
from lejepa_core.eval.state import constant_velocity, constant_velocity_pairs, state_feature_names
from tests.conftest import tiny_recipe


def test_ridge_probe_recovers_linear_map():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 16, generator=g)
    true_w, true_b = torch.randn(16, 5, generator=g), torch.randn(5, generator=g)
    y = x @ true_w + true_b + 0.01 * torch.randn(2000, 5, generator=g)
    weight, bias = ridge_fit(x[:1500], y[:1500], alpha=1e-6)
    assert r2_score(ridge_predict(x[1500:], weight, bias), y[1500:]) > 0.9999
    torch.testing.assert_close(weight.float(), true_w, atol=2e-3, rtol=0)
    # unrelated targets explain nothing
    noise = torch.randn(2000, 3, generator=g)
    w2, b2 = ridge_fit(x[:1500], noise[:1500])
    assert r2_score(ridge_predict(x[1500:], w2, b2), noise[1500:]) < 0.05


def test_r2_score_formula():
    target = torch.tensor([[1.0], [2.0], [3.0]])
    assert r2_score(target, target) == pytest.approx(1.0)
    assert r2_score(torch.full_like(target, 2.0), target) == pytest.approx(0.0)
    assert r2_score(target + 1.0, target) == pytest.approx(1.0 - 3.0 / 2.0)


def test_constant_velocity_baseline_formula():
    env = EnvInfo(feature_names=("x", "y", "vx", "vy"), dt=0.1, derivatives={"x": "vx", "y": "vy"})
    pairs = constant_velocity_pairs(env, env.state_names())
    assert pairs == [(0, 2), (1, 3)]
    state = torch.tensor([[[0.5, 0.2, 0.1, -0.3], [0.1, 0.9, 0.0, 0.2]]])  # [B=1, N=2, 4]
    out = constant_velocity(state, torch.tensor([4]), env.dt, pairs)
    expected = torch.tensor([[[0.5 + 0.04, 0.2 - 0.12, 0.1, -0.3], [0.1, 0.9 + 0.08, 0.0, 0.2]]])
    torch.testing.assert_close(out, expected)
    assert torch.equal(state[..., 0], torch.tensor([[0.5, 0.1]]))  # input untouched


def test_constant_velocity_needs_dt_and_derivatives():
    names = ("x", "y", "vx", "vy")
    assert constant_velocity_pairs(EnvInfo(derivatives={"x": "vx"}), names) == []  # no dt
    assert constant_velocity_pairs(EnvInfo(dt=0.1), names) == []  # no derivatives
    # derivatives of features the state does not have are ignored
    assert constant_velocity_pairs(EnvInfo(dt=0.1, derivatives={"q": "vq"}), names) == []


def test_groups_and_names_come_from_the_env():
    balls = EnvInfo(
        feature_names=("x", "y", "vx", "vy"),
        feature_groups={"positions": ["x", "y"], "velocities": ["vx", "vy"]},
    )
    assert balls.group_indices(state_feature_names(balls, 4)) == {
        "positions": [0, 1],
        "velocities": [2, 3],
    }
    bare = EnvInfo()  # gymnasium's own envs publish no names
    assert state_feature_names(bare, 3) == ("f0", "f1", "f2")
    assert bare.group_indices(state_feature_names(bare, 3)) == {"all": [0, 1, 2]}
    # names that do not fit the state's last axis are not used
    assert state_feature_names(balls, 3) == ("f0", "f1", "f2")


def test_eval_command_writes_eval_json(tmp_path, tiny_data):
    from lejepa_core.cli import main
    from lejepa_core.training.loop import train

    recipe = tiny_recipe(tmp_path, tiny_data, ("train.epochs=1",))
    train(recipe, out=tmp_path / "run")
    result = CliRunner().invoke(
        main,
        ["eval", str(tmp_path / "run"), "--batches", "2", "--device", "cpu"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "probe R^2" in result.output and "nan" not in result.output
    assert "per feature group (dt=0.1)" in " ".join(result.output.split())
    assert "positions" in result.output and "velocities" in result.output
    assert "constant velocity" in result.output
    report = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert report["kind"] == "state" and set(report["r2"]) == {"overall", "positions", "velocities"}
    assert report["groups"] == {"positions": ["x", "y"], "velocities": ["vx", "vy"]}
    assert report["dt"] == 0.1
    assert [row["k"] for row in report["per_k"]] == [1, 2, 4]
    assert report["estimators"] == [
        "model",
        "rollout",
        "copy_last",
        "constant_velocity",
        "probe_floor",
    ]
    for key in (
        "model/mae_positions",
        "rollout/mae_velocities",
        "copy_last/mae_velocities",
        "constant_velocity/mae_positions",
        "probe_floor/mae",
        "probe_floor/mae_positions",
        "probe_floor/mae_velocities",
    ):
        assert all(key in row for row in report["per_k"]), key
    first = report["per_k"][0]  # k = 1: the rollout is one step, the direct prediction
    assert first["rollout/mae"] == first["model/mae"]
    latent = report["latent"]
    assert latent["rollout_horizon"] == 1 and latent["rollout_note"] is None
    assert latent["target_std"] > 0
    for k in (1, 2, 4):
        for name in ("model", "rollout", "copy_last"):
            assert latent[f"{name}/err_signal/k{k}"] >= 0
    assert latent["rollout/err_signal/k1"] == latent["model/err_signal/k1"]
    assert report["probe"]["batches"] == 2 and report["probe"]["seed"] == 1234
    text = " ".join(result.output.split())
    assert "probe floor" in text and "rollout" in text and "latent err/σ" in text
    missing = CliRunner().invoke(main, ["eval", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "not a run directory" in missing.output


def test_probe_floor_is_the_probe_on_the_true_target_latents(tmp_path, tiny_data):
    """probe_floor/mae_<group> = mean |probe(z_target) - state| of the per-k samples, and the
    decoded figures of eval.json are reproduced from the recorded probe fit and samples."""
    from lejepa_core.eval.evaluate import eval_samples, evaluate_run
    from lejepa_core.eval.load import load_run
    from lejepa_core.training.loop import train

    recipe = tiny_recipe(tmp_path, tiny_data, ("train.epochs=1", "train.steps_per_epoch=2"))
    run_dir = train(recipe, out=tmp_path / "run").run_dir
    result = evaluate_run(run_dir, device="cpu", batches=2)
    run = load_run(run_dir, device="cpu")
    try:
        probe = run.fit_probe(batches=result["probe"]["batches"], seed=result["probe"]["seed"])
        _, per_k = eval_samples(run, batches=2)
    finally:
        run.data.close()
    positions = [0, 1]  # x, y of every ball
    for row in result["per_k"]:
        samples = per_k[row["k"]]
        truth = samples.target_state.float()[..., positions]
        floor = (probe.decode(samples.z_target)[..., positions] - truth).abs().mean()
        direct = (probe.decode(samples.z_hat)[..., positions] - truth).abs().mean()
        assert row["probe_floor/mae_positions"] == pytest.approx(float(floor), rel=1e-6)
        assert row["model/mae_positions"] == pytest.approx(float(direct), rel=1e-6)
