"""Transition data sets and world-model training, on a linear system written here (no SITL)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from dreamlink.learning.train import TrainConfig, load_checkpoint, save_checkpoint, train_world_model
from dreamlink.learning.transitions import TransitionError, TransitionSet
from dreamlink.learning.world_model import EnsembleWorldModel, WorldModelConfig
from dreamlink.spec import Component, VehicleSpec

# A damped mass on a spring pushed by a force, plus a drifting bias state: x' = A x + B u.
LINEAR = VehicleSpec(
    name="linear",
    state=(
        Component("pos_m", "m", -5.0, 5.0),
        Component("vel_mps", "m/s", -5.0, 5.0),
        Component("bias_m", "m", -1.0, 1.0),
    ),
    action=(Component("force_n", "N", -1.0, 1.0),),
    control_period_s=0.05,
)
_A = np.array([[1.0, 0.05, 0.0], [-0.1, 0.97, 0.0], [0.0, 0.0, 0.99]])
_B = np.array([[0.0], [0.05], [0.01]])

SMALL = WorldModelConfig(hidden=32, layers=2, ensemble_size=3)


def linear_transitions(n_episodes: int, steps: int, seed: int) -> TransitionSet:
    rng = np.random.default_rng(seed)
    states, actions, nexts, episodes = [], [], [], []
    for ep in range(n_episodes):
        x = rng.uniform(-1.0, 1.0, size=3)
        for _ in range(steps):
            u = rng.uniform(-1.0, 1.0, size=1)
            x_next = _A @ x + _B @ u
            states.append(x)
            actions.append(u)
            nexts.append(x_next)
            episodes.append(ep)
            x = x_next
    return TransitionSet(
        LINEAR, np.array(states), np.array(actions), np.array(nexts), np.array(episodes), meta={"seed": seed}
    )


@pytest.fixture(scope="module")
def data() -> TransitionSet:
    return linear_transitions(n_episodes=40, steps=50, seed=1)


def test_save_load_round_trip(tmp_path, data):
    path = data.save(tmp_path / "linear")  # suffix added
    assert path.name == "linear.npz"
    back = TransitionSet.load(path)
    assert back.spec == LINEAR
    assert back.meta == {"seed": 1}
    for field in ("state", "action", "next_state", "episode"):
        np.testing.assert_array_equal(getattr(back, field), getattr(data, field))
    assert back.state.dtype == np.float32 and back.episode.dtype == np.int64
    assert len(back) == 2000


def _npz_without(tmp_path, data, drop=None, **replace):
    path = data.save(tmp_path / "good.npz")
    with np.load(path) as z:
        fields = {k: z[k] for k in z.files if k != drop}
    fields.update(replace)
    bad = tmp_path / "bad.npz"
    np.savez(bad, **fields)
    return bad


def test_missing_field_names_file_and_field(tmp_path, data):
    bad = _npz_without(tmp_path, data, drop="action")
    with pytest.raises(TransitionError, match=r"bad\.npz.*'action' missing"):
        TransitionSet.load(bad)


def test_wrong_shape_names_file_field_and_expected_shape(tmp_path, data):
    bad = _npz_without(tmp_path, data, next_state=data.next_state[:, :2])
    with pytest.raises(TransitionError, match=r"bad\.npz.*'next_state' has shape \[2000, 2\], expected \[N,3\]"):
        TransitionSet.load(bad)


def test_bad_spec_json_is_refused(tmp_path, data):
    bad = _npz_without(tmp_path, data, spec=np.array('{"name": "linear"}'))
    with pytest.raises(TransitionError, match=r"bad\.npz: field 'spec'"):
        TransitionSet.load(bad)


def test_truncated_file_is_refused(tmp_path, data):
    path = data.save(tmp_path / "cut.npz")
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(TransitionError, match=r"cut\.npz: not a readable \.npz"):
        TransitionSet.load(path)


def test_constructor_checks_shapes_against_spec(data):
    with pytest.raises(TransitionError, match=r"'action' has shape \[2000, 2\], expected \[N,1\]"):
        TransitionSet(LINEAR, data.state, np.zeros((2000, 2)), data.next_state, data.episode)


def test_split_by_episode_keeps_episodes_whole(data):
    train, hold = data.split_by_episode(0.25, seed=3)
    assert len(train) + len(hold) == len(data)
    assert set(np.unique(train.episode)).isdisjoint(np.unique(hold.episode))
    assert np.unique(hold.episode).size == 10
    again, _ = data.split_by_episode(0.25, seed=3)
    np.testing.assert_array_equal(again.episode, train.episode)


def test_episodes_give_rollout_sequences_and_cut_at_gaps(data):
    eps = data.episodes()
    assert len(eps) == 40
    states, actions = eps[0]
    assert states.shape == (51, 3) and actions.shape == (50, 1)
    np.testing.assert_allclose(states[1:], states[:-1] @ _A.T + actions @ _B.T, atol=1e-5)
    gap = data.subset(np.r_[0:20, 21:50])  # drop one row of episode 0
    assert [a.shape[0] for _, a in gap.episodes()] == [20, 29]


def test_concat_keeps_episodes_apart(data):
    other = linear_transitions(n_episodes=5, steps=10, seed=2)
    both = TransitionSet.concat([data, other])
    assert len(both) == len(data) + len(other)
    assert both.n_episodes == 45
    assert both.meta == {"sources": [{"seed": 1}, {"seed": 2}]}


def test_training_beats_predict_no_change(data):
    epochs_seen = []
    result = train_world_model(
        data, SMALL, TrainConfig(epochs=15, batch_size=128, lr=3e-3, holdout_fraction=0.2),
        progress=lambda epoch, total, loss: epochs_seen.append((epoch, total)),
    )
    print("holdout rmse", result.holdout_one_step_rmse, "baseline", result.holdout_baseline_rmse)
    assert epochs_seen == [(e, 15) for e in range(1, 16)]
    assert result.n_train + result.n_holdout == len(data) and result.n_holdout == 400
    for name in LINEAR.state_names:
        assert result.holdout_one_step_rmse[name] < 0.2 * result.holdout_baseline_rmse[name], name
    assert result.loss_history[-1] < result.loss_history[0]
    out = result.model(torch.zeros(7, 3), torch.zeros(7, 1))
    assert out.shape == (3, 7, 3)


def test_multi_step_loss_trains(data):
    result = train_world_model(data, SMALL, TrainConfig(epochs=8, batch_size=128, lr=3e-3, multi_step=3))
    for name in LINEAR.state_names:
        assert result.holdout_one_step_rmse[name] < 0.3 * result.holdout_baseline_rmse[name], name


def test_training_is_deterministic_for_a_seed(data):
    cfg = TrainConfig(epochs=2, batch_size=256)
    a = train_world_model(data, SMALL, cfg).model.state_dict()
    b = train_world_model(data, SMALL, cfg).model.state_dict()
    c = train_world_model(data, SMALL, TrainConfig(epochs=2, batch_size=256, seed=1)).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["weights.0"], c["weights.0"])


def test_normalisation_lives_in_the_module(data):
    model = EnsembleWorldModel(LINEAR, SMALL)
    model.set_normalisation(data.state, data.action, data.next_state - data.state)
    np.testing.assert_allclose(model.state_mean.numpy(), data.state.mean(0), atol=1e-5)
    assert "delta_std" in model.state_dict()


def test_checkpoint_round_trip(tmp_path, data):
    model = train_world_model(data, SMALL, TrainConfig(epochs=1)).model
    back = load_checkpoint(save_checkpoint(model, tmp_path / "wm.pt"))
    s, a = torch.from_numpy(data.state[:9]), torch.from_numpy(data.action[:9])
    assert back.config == SMALL and back.spec == LINEAR
    assert torch.equal(back(s, a), model(s, a))
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"other\.pt: not a dreamlink world-model checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_learning_package_imports_without_torch():
    # The data collector runs where torch is absent: block it and import what the collector uses.
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import dreamlink.learning as L\n"
        "from dreamlink.learning.transitions import TransitionSet\n"
        "assert L.TransitionSet is TransitionSet\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_torch_free_activation_names_are_the_models():
    # The CLI offers dreamlink.learning.ACTIVATIONS without importing torch; each must build a model, and no other.
    from dreamlink.learning import ACTIVATIONS
    from dreamlink.learning.world_model import _ACTIVATIONS

    assert tuple(_ACTIVATIONS) == ACTIVATIONS
    spec = VehicleSpec("toy", (Component("x", "m", -1, 1),), (Component("u", "", -1, 1),), 0.1)
    for name in ACTIVATIONS:
        EnsembleWorldModel(spec, WorldModelConfig(hidden=4, activation=name))
    with pytest.raises(ValueError, match=r"WorldModelConfig\.activation"):
        WorldModelConfig(activation="swish")
