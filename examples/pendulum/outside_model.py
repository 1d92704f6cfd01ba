"""A pendulum world model and policy made the way a user would, outside dreamlink: Gymnasium for data, plain
torch for fitting, plain `torch.onnx.export` for the files. Nothing here imports dreamlink; the only thing it
owes dreamlink is the ONNX contract (inputs `state [B,3]`, `action [B,1]` -> `next_state [B,3]`; a policy
`state [B,3]` -> `action [B,1]`), in the vehicle file's units (cos, sin, rate; torque in N m).

    python examples/pendulum/outside_model.py --out runs/pendulum-outside
    dreamlink bundle runs/pendulum-outside/model.onnx --vehicle examples/pendulum/pendulum.toml --out B
    dreamlink bundle --policy runs/pendulum-outside/policy.onnx --vehicle examples/pendulum/pendulum.toml --out P

The policy is fitted by behaviour cloning of a textbook swing-up controller (energy pumping far from the top,
a PD law near it): any small network the user fits would do.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import gymnasium
import numpy as np
import torch
from torch import nn

MAX_TORQUE_NM = 2.0


def collect(steps: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random torques from random starts (Pendulum-v1's own reset draws the whole circle)."""
    env = gymnasium.make("Pendulum-v1")
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    xs, us, nxs = [], [], []
    u = np.zeros(1, np.float32)
    for t in range(steps):
        if t % 200 == 0:
            obs, _ = env.reset(seed=int(rng.integers(2**31)))
        if t % 3 == 0:
            u = rng.uniform(-MAX_TORQUE_NM, MAX_TORQUE_NM, 1).astype(np.float32)
        nxt, *_ = env.step(u)
        xs.append(obs)
        us.append(u)
        nxs.append(nxt)
        obs = nxt
    return np.array(xs, np.float32), np.array(us, np.float32), np.array(nxs, np.float32)


class WorldModel(nn.Module):
    """next_state = state + MLP(normalised state, action) * delta scale: normalisation inside, raw units out."""

    def __init__(self, x: np.ndarray, u: np.ndarray, dx: np.ndarray) -> None:
        super().__init__()
        inp = np.concatenate([x, u], axis=1)
        self.register_buffer("mu", torch.tensor(inp.mean(0)))
        self.register_buffer("sd", torch.tensor(inp.std(0) + 1e-6))
        self.register_buffer("dsd", torch.tensor(dx.std(0) + 1e-6))
        self.net = nn.Sequential(nn.Linear(4, 128), nn.SiLU(), nn.Linear(128, 128), nn.SiLU(), nn.Linear(128, 3))

    def forward(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        z = (torch.cat([state, action], dim=-1) - self.mu) / self.sd
        return state + self.net(z) * self.dsd


def expert(obs: np.ndarray) -> np.ndarray:
    """Energy pumping until near the top, then PD (Pendulum-v1: theta'' = 15 sin(theta) + 3 u)."""
    cos, sin, rate = obs[:, 0], obs[:, 1], obs[:, 2]
    theta = np.arctan2(sin, cos)
    energy = 0.5 * rate**2 + 15.0 * (cos - 1.0)  # 0 at rest upright
    pump = np.sign(rate * -energy + 1e-9) * MAX_TORQUE_NM
    pd = -20.0 * theta - 5.0 * rate
    near_top = (np.abs(theta) < 0.6) & (np.abs(rate) < 4.0)
    return np.clip(np.where(near_top, pd, pump), -MAX_TORQUE_NM, MAX_TORQUE_NM)[:, None].astype(np.float32)


class Policy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 1))

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return self.net(state)


def fit(model: nn.Module, inputs: tuple[torch.Tensor, ...], target: torch.Tensor, epochs: int, scale: torch.Tensor,
        seed: int) -> float:
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    n = len(target)
    loss = torch.tensor(0.0)
    for _ in range(epochs):
        for idx in torch.randperm(n).split(512):
            pred = model(*(x[idx] for x in inputs))
            loss = (((pred - target[idx]) / scale) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return float(loss)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("runs/pendulum-outside"))
    p.add_argument("--steps", type=int, default=30000)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    x, u, nx = collect(args.steps, args.seed)
    model = WorldModel(x, u, nx - x)
    X, U, NX = map(torch.tensor, (x, u, nx))
    loss = fit(model, (X, U), NX, args.epochs, model.dsd, args.seed)
    print(f"world model: {len(x)} transitions, final loss {loss:.4g}")
    ex = (torch.zeros(1, 3), torch.zeros(1, 1))
    # torch 2.13's exporter; external_data=True keeps the weights in model.onnx.data beside model.onnx
    torch.onnx.export(model.eval(), ex, args.out / "model.onnx", input_names=["state", "action"],
                      output_names=["next_state"], dynamic_axes={"state": {0: "B"}, "action": {0: "B"},
                                                                 "next_state": {0: "B"}},
                      opset_version=18, external_data=True)
    rng = np.random.default_rng(args.seed + 1)
    theta = rng.uniform(-np.pi, np.pi, 50000)
    rate = rng.uniform(-8.0, 8.0, 50000)
    states = np.stack([np.cos(theta), np.sin(theta), rate], axis=1).astype(np.float32)
    policy = Policy()
    loss = fit(policy, (torch.tensor(states),), torch.tensor(expert(states)), args.epochs, torch.tensor(1.0),
               args.seed)
    print(f"policy: behaviour cloning of the swing-up controller on {len(states)} states, final loss {loss:.4g}")
    torch.onnx.export(policy.eval(), (torch.zeros(1, 3),), args.out / "policy.onnx", input_names=["state"],
                      output_names=["action"], dynamic_axes={"state": {0: "B"}, "action": {0: "B"}},
                      opset_version=18, external_data=True)
    print(f"wrote {args.out / 'model.onnx'} and {args.out / 'policy.onnx'} (weights in .onnx.data side files)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
