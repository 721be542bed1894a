"""PDE solvers and random fields behind the operator tasks: closed-form solutions, convergence under
refinement, spectra of the Gaussian random fields, determinism per seed, and the regression tasks."""

import numpy as np
import pytest
import torch

from longseq import tasks
from longseq.tasks import pde


# ----------------------------------------------------------------------------- Burgers
def test_burgers_matches_cole_hopf():
    n = 256
    x = np.arange(n) / n
    u0 = pde.burgers_cole_hopf(x, 0.0)[None]
    u1 = pde.burgers_etdrk4(u0, nu=0.1, t_end=1.0, dt=1e-2)
    assert np.abs(u1[0] - pde.burgers_cole_hopf(x, 1.0)).max() < 1e-8
    # a steeper profile (nu 0.02, second harmonic) still matches at t = 0.3
    u0 = pde.burgers_cole_hopf(x, 0.0, nu=0.02, c=1.5, k=2)[None]
    u1 = pde.burgers_etdrk4(u0, nu=0.02, t_end=0.3, dt=1e-3)
    assert np.abs(u1[0] - pde.burgers_cole_hopf(x, 0.3, nu=0.02, c=1.5, k=2)).max() < 1e-7


def test_burgers_time_convergence_fourth_order():
    n = 128
    x = np.arange(n) / n
    u0 = pde.burgers_cole_hopf(x, 0.0, nu=0.05, c=1.3)[None]
    exact = pde.burgers_cole_hopf(x, 0.5, nu=0.05, c=1.3)
    err = [np.abs(pde.burgers_etdrk4(u0, nu=0.05, t_end=0.5, dt=dt)[0] - exact).max() for dt in (0.05, 0.025)]
    assert err[1] < err[0] / 10  # ETDRK4: ~16x per halving


def test_burgers_grf_data_converge_in_space_and_time():
    """A paper-measure initial condition at n = 1024 and its subsample at 512 give the same u(., 1) at the
    shared points (the truncated modes carry ~1e-5 of the field and diffuse within t << 1); halving dt
    from 1e-2 changes u(., 1) by < 1e-6."""
    rng = np.random.default_rng(0)
    u0 = pde.grf_periodic_1d(2, 1024, rng)
    fine = pde.burgers_etdrk4(u0, dt=1e-2)
    coarse = pde.burgers_etdrk4(u0[:, ::2], dt=1e-2)
    assert np.abs(fine[:, ::2] - coarse).max() < 1e-4 * np.abs(fine).max()
    half = pde.burgers_etdrk4(u0, dt=5e-3)
    assert np.abs(fine - half).max() < 1e-6


def test_burgers_bad_input():
    with pytest.raises(ValueError, match="even"):
        pde.burgers_etdrk4(np.zeros((1, 7)))
    with pytest.raises(ValueError, match="nu"):
        pde.burgers_etdrk4(np.zeros((1, 8)), nu=0.0)


# ----------------------------------------------------------------------------- random fields
def test_grf_1d_spectrum_matches_specification():
    """KL coefficients recovered from the samples by the FFT have variance lambda_k = 625 (4 pi^2 k^2 + 25)^-2."""
    rng = np.random.default_rng(1)
    num, n = 4000, 64
    u = pde.grf_periodic_1d(num, n, rng)
    c = np.fft.rfft(u, axis=-1) / n  # u = c_0 + sum_k 2 Re(c_k e^{2 pi i k x})
    lam = pde.grf_periodic_1d_variance(n)
    var = np.empty(n // 2)
    var[0] = np.var(c[:, 0].real)
    # sqrt(2 lam)(xi cos + eta sin) has c_k = sqrt(lam / 2)(xi - i eta): E|c_k|^2 = lam_k
    var[1:] = np.mean(np.abs(c[:, 1 : n // 2]) ** 2, axis=0)
    tol = 4 * np.sqrt(2 / num)  # 4 standard errors of a variance estimate
    assert np.all(np.abs(var / lam - 1) < tol), np.abs(var / lam - 1).max()
    assert np.isclose(lam[0], 1.0) and np.isclose(lam[1], 625 / (4 * np.pi**2 + 25) ** 2)


def test_grf_2d_pointwise_variance_matches_specification():
    rng = np.random.default_rng(2)
    num, s = 3000, 9
    z = pde.grf_neumann_2d(num, s, rng, k_max=s)
    phi = pde.neumann_basis(s, s)
    lam = pde.grf_neumann_2d_variance(s)
    expect = np.einsum("ik,kl,jl->ij", phi**2, lam, phi**2)  # Var z(x_i, y_j) = sum lam_kl phi_k(x)^2 phi_l(y)^2
    got = z.var(axis=0)
    assert np.abs(got / expect - 1).max() < 4 * np.sqrt(2 / num)
    a = pde.darcy_coefficient(z)
    assert set(np.unique(a)) == {3.0, 12.0}


# ----------------------------------------------------------------------------- Darcy
def _manufactured(s):
    x = np.linspace(0, 1, s)
    X, Y = np.meshgrid(x, x, indexing="ij")
    u = np.sin(np.pi * X) * np.sin(np.pi * Y)
    a = 1 + X + Y**2
    ux, uy = np.pi * np.cos(np.pi * X) * np.sin(np.pi * Y), np.pi * np.sin(np.pi * X) * np.cos(np.pi * Y)
    f = -(1.0 * ux + 2 * Y * uy) + 2 * np.pi**2 * a * u  # -div(a grad u)
    return a[None], f[None], u[None]


def test_darcy_manufactured_solution_second_order():
    errs = []
    for s in (17, 33, 65):
        a, f, u = _manufactured(s)
        errs.append(np.abs(pde.darcy_solve(a, f) - u).max())
    assert errs[-1] < 2e-3
    assert 3.5 < errs[0] / errs[1] < 4.5 and 3.5 < errs[1] / errs[2] < 4.5  # O(h^2)


def test_darcy_solver_residual_and_boundary():
    rng = np.random.default_rng(3)
    a = pde.darcy_coefficient(pde.grf_neumann_2d(5, 41, rng))
    u, iters = pde.darcy_solve(a, return_iters=True, batch=2)
    assert max(iters) < 60  # condition number <= 4 whatever the grid
    r = pde.darcy_operator(a, u[:, 1:-1, 1:-1], 1 / 40) - 1.0
    assert np.abs(r).max() < 1e-7
    assert (u[:, 0] == 0).all() and (u[:, -1] == 0).all() and (u[:, :, 0] == 0).all() and (u[:, :, -1] == 0).all()
    assert (u[:, 1:-1, 1:-1] > 0).all()  # maximum principle: f = 1 > 0


def test_darcy_refinement_piecewise_constant():
    """The same continuous coefficient field on nested grids: solutions at shared nodes approach each
    other as the grid is refined (first-order-ish for a discontinuous a)."""
    rng = np.random.default_rng(4)
    K = 12
    xi = rng.standard_normal((1, K, K)) * np.sqrt(pde.grf_neumann_2d_variance(K))
    sols = {}
    for s in (33, 65, 129):
        phi = pde.neumann_basis(s, K)
        z = np.einsum("ik,nkl,jl->nij", phi, xi, phi)
        sols[s] = pde.darcy_solve(pde.darcy_coefficient(z))
    d1 = np.linalg.norm(sols[33] - sols[65][:, ::2, ::2]) / np.linalg.norm(sols[65][:, ::2, ::2])
    d2 = np.linalg.norm(sols[65] - sols[129][:, ::2, ::2]) / np.linalg.norm(sols[129][:, ::2, ::2])
    assert d2 < d1 and d2 < 0.02


def test_darcy_bad_input():
    with pytest.raises(ValueError, match="positive"):
        pde.darcy_solve(np.zeros((1, 5, 5)))
    with pytest.raises(ValueError, match="s >= 3"):
        pde.darcy_solve(np.ones((1, 2, 2)))


# ----------------------------------------------------------------------------- tasks
@pytest.mark.parametrize("name", ["burgers", "darcy"])
def test_tasks_deterministic_per_seed_and_resolutions(name, tmp_path, monkeypatch):
    monkeypatch.setenv("LONGSEQ_DATA", str(tmp_path))
    t1 = tasks.build(name, preset="tiny", seed=0)
    t2 = tasks.build(name, preset="tiny", seed=0, cache=False)
    t3 = tasks.build(name, preset="tiny", seed=1, cache=False)
    assert t1.meta.kind == "regression" and t1.meta.metric == "rel_l2"
    assert torch.equal(t1.train.inputs, t2.train.inputs) and torch.equal(t1.test.targets, t2.test.targets)
    assert not torch.equal(t1.train.inputs, t3.train.inputs)
    native = t1.meta.extra["native"]
    full = t1.split_at("test", native)
    res = t1.meta.extra["resolution"]
    coarse = t1.split_at("test", res)
    step = native // res if name == "burgers" else (native - 1) // (res - 1)
    idx = (slice(None), slice(None, None, step)) + ((slice(None, None, step),) if name == "darcy" else ())
    assert torch.equal(coarse.inputs, full.inputs[idx]) and torch.equal(coarse.targets, full.targets[idx])
    assert torch.equal(coarse.inputs, t1.test.inputs)
    with pytest.raises(ValueError, match="resolution"):
        t1.split_at("test", native + 1)
    with pytest.raises(ValueError, match="not a subsampling"):
        tasks.build(name, preset="tiny", resolution=native + 1, cache=False)


def test_regression_training_through_the_trainer(tmp_path, monkeypatch):
    monkeypatch.setenv("LONGSEQ_DATA", str(tmp_path / "data"))
    from longseq.train import TrainConfig, build_model, train
    from longseq.train.trainer import evaluate

    task = tasks.build("burgers", preset="tiny")
    torch.manual_seed(0)
    model = build_model(task, "fno", mixer_options={"modes": 8}, d_model=16)
    before = evaluate(model, task.train, metric="rel_l2")
    final = train(
        model, task, TrainConfig.from_dict({**task.train_defaults, "steps": 100, "progress": False}), tmp_path / "run"
    )
    after = evaluate(model, task.train, metric="rel_l2")
    assert after["rel_l2"] < 0.8 * before["rel_l2"]  # it starts fitting the 16 training functions
    with torch.no_grad():
        direct = float(model.loss(model(task.train.inputs), task.train.targets))
    assert np.isclose(after["rel_l2"], direct, rtol=1e-5)
    assert "accuracy" not in final["test"]
    assert (tmp_path / "run" / "model" / "config.json").exists()
    with pytest.raises(ValueError, match="do not apply"):
        build_model(task, "fno", num_heads=4)
    with pytest.raises(ValueError, match="operator"):
        build_model(task, "softmax")
