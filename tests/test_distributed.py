"""Multi-process training on CPU: two ranks (gloo on 127.0.0.1) against one process.

Starting processes is the slow part (a fresh interpreter re-imports torch: ~10 s on a busy
machine), so ONE pair of forked worker processes runs every scenario in sequence, under the
environment torchrun would give them (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT):

A. ``longseq train`` (the CLI entry point; the trainer joins the process group itself): DDP,
   global batch 4 with 2 accumulated micro-batches, 6 steps, checkpoints at 3 and 6; the step-3
   checkpoint is kept aside.
B. A process group the caller made (Python API): FSDP from scratch, rank 1 starting from other
   initial weights (rank 0's must win), global batch 8; then FSDP resumed from A's step-3 (DDP)
   checkpoint.
C. Failure: rank 1 hangs in step 2; rank 0 must fail within ``dist_timeout`` (3 s), not hang.

The tests compare the outputs with single-process runs made in this process. The training split
keeps 1 to 3 targets per example, so ranks hold different numbers of target tokens. Tolerances:
losses agree to 1e-6 relative (float32 with another summation order over the global batch: the
measured gap is 1-3 ulps, <= 6e-6 on losses near 29); evaluation counts exactly.
"""

import json
import math
import multiprocessing
import os
import random
import shutil
import socket
import time
import traceback
from datetime import timedelta

import pytest
import torch

import longseq
from longseq.optim import param_groups
from longseq.tasks.base import IGNORE
from longseq.train import TrainConfig, build_model, evaluate, train
from longseq.train import distributed as D

LOSS_REL, LOSS_ABS = 1e-6, 1e-6
TASK_OPTIONS = dict(seq_len=24, num_kv_pairs=3, vocab_size=64, n_train=96, n_val=20, n_test=20)
D_MODEL = 32
ACCUM = dict(batch_size=4, grad_accum=2)  # scenario A: 2 micro-batches of 4 (2 per rank) per step


def uneven(task):
    """Keep 1, 2 or 3 of each training example's targets: the ranks' shares of a global batch then
    hold different numbers of target tokens, which the loss normalisation must account for."""
    t = task.train.targets.clone()
    for i in range(len(t)):
        t[i, (t[i] != IGNORE).nonzero().flatten()[1 + i % 3 :]] = IGNORE
    task.train.targets = t
    return task


def tiny_task():
    return uneven(longseq.tasks.build("mqar", **TASK_OPTIONS))


def close(a, b):
    return a == pytest.approx(b, rel=LOSS_REL, abs=LOSS_ABS)


def cfg(**kw):
    base = dict(
        steps=6,
        batch_size=8,
        lr=3e-3,
        warmup=2,
        eval_every=3,
        log_every=1,
        checkpoint_every=3,
        progress=False,
        seed=0,
        dist_timeout=60,
    )
    return TrainConfig.from_dict({**base, **kw})


def records(run_dir, split):
    recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in recs if r["split"] == split]


def losses(run_dir):
    return {r["step"]: r["loss"] for r in records(run_dir, "train")}


def probe(task):
    return task.test.inputs[:4]


# --- the worker (one per rank) -----------------------------------------------------------------------


def _worker(rank: int, ports: list[int], root: str) -> None:
    from pathlib import Path

    import torch.distributed as dist

    import longseq.train.trainer as tr
    from longseq.cli import main

    torch.set_num_threads(1)
    root = Path(root)

    def mark(stage):  # where each rank got to, for the failure message
        with open(root / f"progress-{rank}.txt", "a") as f:
            f.write(stage + "\n")

    os.environ.update(
        MASTER_ADDR="127.0.0.1", RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2"
    )
    try:
        # A: the CLI under DDP; the trainer creates (and destroys) the process group.
        mark("A")
        os.environ["MASTER_PORT"] = str(ports[0])
        real_save = tr._save_checkpoint

        def save_and_keep(path, model, opt, sched, step, c, **kw):
            real_save(path, model, opt, sched, step, c, **kw)
            if step == 3 and rank == 0:
                shutil.copy(path, path.with_name("checkpoint-3.pt"))

        tr._save_checkpoint = save_and_keep
        real_build = longseq.tasks.build
        longseq.tasks.build = lambda *a, **k: uneven(real_build(*a, **k))  # what the CLI builds
        torch.manual_seed(rank)  # different initial weights: DDP must start from rank 0's
        args = [
            "train",
            "--task",
            "mqar",
            "--mixer",
            "softmax",
            "--d-model",
            str(D_MODEL),
            "--steps",
            "6",
            "--batch-size",
            "4",
            "--grad-accum",
            "2",
            "--lr",
            "3e-3",
            "--warmup",
            "2",
            "--eval-every",
            "3",
            "--log-every",
            "1",
            "--checkpoint-every",
            "3",
            "--no-progress",
            "--dist-timeout",
            "60",
            "--out",
            str(root / "ddp"),
        ]
        for k, v in TASK_OPTIONS.items():
            args += ["--task-option", f"{k}={v}"]
        assert main(args) == 0
        tr._save_checkpoint, longseq.tasks.build = real_save, real_build
        assert not dist.is_initialized()

        # B: the caller's process group, the Python API, FSDP.
        mark("B")
        os.environ["MASTER_PORT"] = str(ports[1])
        dist.init_process_group("gloo", timeout=timedelta(seconds=60))
        task = tiny_task()
        torch.manual_seed(rank)
        model = build_model(task, "softmax", d_model=D_MODEL)
        train(model, task, cfg(fsdp=True, eval_batch_size=7), root / "fsdp")  # 3 eval batches: uneven
        with torch.no_grad():
            out = model(probe(task))  # a sharded forward (all ranks)
        if rank == 0:
            torch.save(out, root / "fsdp_outputs.pt")
            (root / "fsdp_resume").mkdir()
            shutil.copy(root / "ddp" / "checkpoint-3.pt", root / "fsdp_resume" / "checkpoint.pt")
            shutil.copy(root / "ddp" / "metrics.jsonl", root / "fsdp_resume" / "metrics.jsonl")
        dist.barrier()
        torch.manual_seed(100 + rank)
        train(
            build_model(task, "softmax", d_model=D_MODEL),
            task,
            cfg(fsdp=True, eval_batch_size=6, **ACCUM),
            root / "fsdp_resume",
            resume=True,
            allow_changes=["eval_batch_size"],
        )  # from the DDP run
        assert dist.is_initialized()  # not the trainer's group: left alone
        dist.destroy_process_group()

        # C: rank 1 hangs at step 2; rank 0 must give up after dist_timeout.
        mark("C")
        os.environ["MASTER_PORT"] = str(ports[2])
        if rank == 1:
            real_batch, calls = task.train.batch, []

            def hang(idx):
                calls.append(1)
                if len(calls) == 2:
                    time.sleep(600)
                return real_batch(idx)

            task.train.batch = hang
        t0 = time.perf_counter()
        try:
            train(build_model(task, "softmax", d_model=D_MODEL), task, cfg(dist_timeout=3), None)
            result = {"raised": None}
        except Exception as e:
            result = {"raised": type(e).__name__, "message": str(e)[:500]}
        result["seconds"] = time.perf_counter() - t0
        (root / f"failure-{rank}.json").write_text(json.dumps(result))
    except BaseException:
        (root / f"error-{rank}.txt").write_text(traceback.format_exc())
        raise


def _free_ports(n: int) -> list[int]:
    """``n`` ports that are free now, drawn BELOW the kernel's ephemeral range: gloo's own
    connections (scenario A) take ephemeral ports, and one of them could otherwise land on a
    port picked for scenario B or C before that scenario binds it."""
    try:
        low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng, ports = random.Random(), []
    while len(ports) < n:
        port = rng.randrange(max(1024, low - 12000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        if port not in ports:
            ports.append(port)
    return ports


def _run_two_ranks(root):
    """Run the worker on 2 forked processes in ``root``; ``None`` when rank 0 finished, else why not."""
    mp = multiprocessing.get_context("fork")  # no re-import of torch in the children
    ports = _free_ports(3)
    procs = [mp.Process(target=_worker, args=(r, ports, str(root))) for r in range(2)]
    for p in procs:
        p.start()
    procs[0].join(timeout=240)
    time.sleep(0.5)
    for p in procs:  # rank 1 is asleep in scenario C (or anything is stuck)
        if p.is_alive():
            p.kill()
        p.join()
    if procs[0].exitcode == 0 and not any((root / f"error-{r}.txt").exists() for r in range(2)):
        return None
    report = []
    for r in range(2):
        stages = (root / f"progress-{r}.txt").read_text().split() if (root / f"progress-{r}.txt").exists() else []
        error = (root / f"error-{r}.txt").read_text() if (root / f"error-{r}.txt").exists() else "no exception"
        report.append(f"rank {r}: exit code {procs[r].exitcode}, reached {stages or 'nothing'}:\n{error}")
    return "\n".join(report)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """The two-rank run's output directory. A rendezvous can time out when the other rank never
    arrives (seen once on the loaded 2-core CI machine under pytest-xdist: rank 1 vanished without
    an exception between scenarios A and B); such a run is repeated once with fresh ports, and the
    failure message names where each rank got to. An exception in a rank fails at once."""
    root = tmp_path_factory.mktemp("dist")
    why = _run_two_ranks(root)
    if why is not None and not (root / "error-1.txt").exists() and "DistStoreError" in why:
        print("two-rank run retried after a rendezvous timeout:\n" + why)
        root = tmp_path_factory.mktemp("dist-retry")
        why = _run_two_ranks(root)
    if why is not None:
        pytest.fail(why)
    return root


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """Single-process references from rank 0's initial weights: batch 8 (``/plain``) and 2
    accumulated micro-batches of 4 (``/accum``)."""
    root = tmp_path_factory.mktemp("single")
    task = tiny_task()
    for name, kw in (("plain", {}), ("accum", ACCUM)):
        torch.manual_seed(0)
        train(build_model(task, "softmax", d_model=D_MODEL), task, cfg(**kw), root / name)
    return root


def test_ddp_matches_single_process_loss_curve(two_ranks, single):
    ddp, ref = losses(two_ranks / "ddp"), losses(single / "accum")
    assert sorted(ddp) == [1, 2, 3, 4, 5, 6]  # rank 0 alone logged: every step once
    assert all(close(ddp[s], ref[s]) for s in ref), (ddp, ref)
    # evaluation sums over both ranks' batches, not an average of averages
    for a, b in zip(records(two_ranks / "ddp", "validation"), records(single / "accum", "validation")):
        assert a["count"] == b["count"] == 20 * 3 and close(a["loss"], b["loss"])
    cfg_record = json.loads((two_ranks / "ddp" / "config.json").read_text())
    assert cfg_record["distributed"] == {"world_size": 2, "strategy": "ddp"}


def test_resume_two_rank_checkpoint_on_one_process(two_ranks, tmp_path):
    run = tmp_path / "resumed"
    run.mkdir()
    shutil.copy(two_ranks / "ddp" / "checkpoint-3.pt", run / "checkpoint.pt")
    ck = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ck["step"] == 3 and len(ck["rng_ranks"]) == 2 and not any(k.startswith("module.") for k in ck["model"])
    task = tiny_task()
    torch.manual_seed(123)  # the checkpoint overrides this initialisation
    train(build_model(task, "softmax", d_model=D_MODEL), task, cfg(**ACCUM), run, resume=True)
    got, ddp = losses(run), losses(two_ranks / "ddp")
    assert sorted(got) == [4, 5, 6]
    assert all(close(got[s], ddp[s]) for s in got), (got, ddp)


def test_fsdp_trains_and_saves_plain_state(two_ranks, single):
    fsdp, ref = losses(two_ranks / "fsdp"), losses(single / "plain")
    assert all(close(fsdp[s], ref[s]) for s in ref), (fsdp, ref)
    for a, b in zip(records(two_ranks / "fsdp", "validation"), records(single / "plain", "validation")):
        assert a["count"] == b["count"] and close(a["loss"], b["loss"])
    task = tiny_task()
    expected = torch.load(two_ranks / "fsdp_outputs.pt", weights_only=True)
    # the final model and the checkpoint load into single-process models with the same outputs
    saved = longseq.load(two_ranks / "fsdp" / "model")
    ck = torch.load(two_ranks / "fsdp" / "checkpoint.pt", weights_only=True)
    plain = build_model(task, "softmax", d_model=D_MODEL)
    plain.load_state_dict(ck["model"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers' reduction order
    try:
        with torch.no_grad():
            for m in (saved, plain):
                assert torch.equal(m.eval()(probe(task)), expected)  # bit-identical
    finally:
        torch.set_num_threads(threads)
    # ... and so does the gathered optimizer state (full tensors, one entry per parameter)
    opt = torch.optim.AdamW(param_groups(plain, 3e-3, 0.1), lr=3e-3)
    opt.load_state_dict(ck["optimizer"])
    params = [p for g in opt.param_groups for p in g["params"]]
    assert len(ck["optimizer"]["state"]) == len(params)
    assert all(opt.state[p]["exp_avg"].shape == p.shape for p in params)
    assert json.loads((two_ranks / "fsdp" / "config.json").read_text())["distributed"]["strategy"] == "fsdp"
    assert json.loads((two_ranks / "fsdp" / "final.json").read_text())["num_parameters"] == plain.num_parameters()


def test_fsdp_resumes_a_ddp_checkpoint(two_ranks):
    got, ddp = losses(two_ranks / "fsdp_resume"), losses(two_ranks / "ddp")
    assert sorted(got) == [1, 2, 3, 4, 5, 6]  # 1-3 kept from the copied metrics
    assert all(close(got[s], ddp[s]) for s in (4, 5, 6)), (got, ddp)
    for a, b in zip(records(two_ranks / "fsdp_resume", "validation"), records(two_ranks / "ddp", "validation")):
        assert a["count"] == b["count"] and close(a["loss"], b["loss"])


def test_a_hung_rank_makes_the_others_fail_within_the_timeout(two_ranks):
    r0 = json.loads((two_ranks / "failure-0.json").read_text())
    assert r0["raised"] is not None, r0
    assert r0["seconds"] < 3 + 30, r0  # dist_timeout 3 s, not a hang


def test_split_of_the_global_batch():
    idx = torch.arange(10, 18)
    parts = [D.shard(idx, D.DistContext(rank=r, world=4)) for r in range(4)]
    assert torch.equal(torch.cat(parts), idx) and all(len(p) == 2 for p in parts)
    assert torch.equal(D.shard(idx, D.DistContext()), idx)
    with pytest.raises(ValueError, match="divisible by the number of processes"):
        D.rank_batch(10, 4)
    assert D.rank_seed(7, 0) == 7 and D.rank_seed(7, 1) != 7


def test_single_process_ignores_the_distributed_settings():
    task = tiny_task()
    torch.manual_seed(0)
    a = build_model(task, "softmax", d_model=16)
    torch.manual_seed(0)
    b = build_model(task, "softmax", d_model=16)
    ra = train(a, task, cfg(steps=2, eval_every=2))
    rb = train(b, task, cfg(steps=2, eval_every=2, fsdp=True, dist_timeout=5))
    assert ra == rb
    assert evaluate(a, task.test)["count"] == ra["test"]["count"]
    with pytest.raises(ValueError, match="dist_timeout"):
        cfg(dist_timeout=0).validate()
    assert math.isfinite(ra["test"]["loss"])
