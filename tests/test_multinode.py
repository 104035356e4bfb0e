"""launcher=multinode: the rendezvous from the config or from SLURM, and a real two-node job
(two launchers meeting on 127.0.0.1, as two machines would on their network)."""
import glob
import json
import os
import socket
import subprocess
import sys

import pytest

from bench.cluster import RendezvousError, nccl_transports, resolve, slurm_port
from bench.config import LauncherConfig, LauncherKind
from conftest import ROOT, launch_job, plan


def multi(**kw) -> LauncherConfig:
    return LauncherConfig(**{"name": LauncherKind.multinode, "nodes": 2, "rdzv_endpoint": "10.0.0.1:29500",
                             "join_timeout_s": 60.0, **kw})


def test_rendezvous_from_the_config():
    assert resolve(LauncherConfig()).backend == "local"
    r = resolve(multi(), env={})
    assert (r.nodes, r.node_rank, r.endpoint, r.backend, r.source) == (2, None, "10.0.0.1:29500", "c10d", "config")
    assert r.join_timeout_s == 60.0
    r = resolve(multi(node_rank=1), env={})
    assert (r.node_rank, r.backend) == (1, "static")
    for bad, msg in [({"rdzv_endpoint": None}, "needs launcher.rdzv_endpoint=HOST:PORT"),
                     ({"rdzv_endpoint": "nohost"}, "is not HOST:PORT"),
                     ({"rdzv_endpoint": "h:99999"}, "is not HOST:PORT"),
                     ({"node_rank": 2}, "launcher.node_rank=2 is outside 0..1"),
                     ({"nodes": 0}, "launcher.nodes=0: need at least 1")]:
        with pytest.raises(RendezvousError, match=msg.replace(".", r"\.")):
            resolve(multi(**bad), env={})


def test_rendezvous_from_a_slurm_job():
    env = {"SLURM_JOB_ID": "123456", "SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_JOB_NUM_NODES": "2",
           "SLURM_NODEID": "1"}
    hosts = {"gpu[07-08]": ["gpu07", "gpu08"]}.__getitem__  # what `scontrol show hostnames` prints
    r = resolve(multi(rdzv_endpoint=None), env=env, hostnames=hosts)
    assert (r.nodes, r.node_rank, r.endpoint, r.backend, r.source) == (2, 1, "gpu07:23456", "static", "slurm")
    assert slurm_port("123456") == 20000 + 123456 % 12000 and slurm_port("99999_3") == 20000 + 999993 % 12000
    with pytest.raises(RendezvousError, match="launcher.nodes=4 but this SLURM job has 2 nodes"):
        resolve(multi(nodes=4, rdzv_endpoint=None), env=env, hostnames=hosts)


def test_nccl_transport_lines():
    lines = ["gpu07:1:1 [0] NCCL INFO Channel 00/0 : 0[0] -> 1[1] via P2P/CUMEM/read\n",
             "gpu07:1:1 [0] NCCL INFO Channel 01/0 : 1[1] -> 2[0] [send] via NET/IB/0\n",
             "gpu07:1:1 [0] NCCL INFO Using network IB\n"]
    assert nccl_transports(lines) == "nccl: NET/IB, P2P/CUMEM/read; network IB"
    assert nccl_transports(["NCCL INFO cudaDriverVersion 12040"]) is None


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("rendezvous", ["c10d", "static"])
def test_two_nodes_on_one_machine_match_two_devices_on_one(tmp_path, rendezvous):
    base = ["size=tiny", "strategy=dp", "seq_len=32", "warmup_steps=1", "steps=3", "accelerator=cpu"]
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": ROOT}
    nodes = []
    for n in range(2):  # the same command on both "nodes"; static also gives each its rank
        extra = [f"launcher.node_rank={n}"] if rendezvous == "static" else []
        cmd = [sys.executable, "-m", "bench.run", *base, "devices=1", "launcher=multinode",
               f"launcher.rdzv_endpoint=127.0.0.1:{port}", *extra]
        nodes.append(subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    outs = [p.communicate(timeout=300)[0] for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], outs
    [res] = glob.glob(str(tmp_path / "results" / "*" / "*" / "result.json"))  # one result for the job
    assert len(glob.glob(str(tmp_path / "results" / "*" / "*" / "node.*.json"))) == 1
    r = json.load(open(res))
    assert r["status"] == "ok" and r["degrees"]["nodes"] == 2 and r["degrees"]["devices_per_node"] == 1
    assert r["spec"]["devices"] == 2 and r["metrics"]["interconnect"] == "loopback/gloo (one host)"
    assert r["spec"]["rendezvous"]["backend"] == rendezvous
    for out in outs:  # a clean end on both nodes: the store's host left last, nobody saw it go
        assert "frame #" not in out and "Traceback" not in out and "failed to shutdown" not in out, out
    ref = launch_job(plan(*base, "devices=2"), tmp_path / "ref")
    assert ref.status == "ok"
    assert r["metrics"]["loss"] == pytest.approx(ref.metrics["loss"], abs=1e-6)


def test_slurm_launcher_conf_composes_without_slurm():
    from hydra import compose
    from omegaconf import OmegaConf

    from bench.config import composing
    with composing():
        cfg = compose("config", overrides=["hydra/launcher=slurm", "launcher=multinode", "launcher.nodes=4",
                                           "hydra.launcher.partition=gpu"], return_hydra_config=True)
    la = cfg.hydra.launcher
    assert la._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (la.nodes, la.tasks_per_node, la.partition, la.gpus_per_node) == (4, 1, "gpu", 8)
    assert OmegaConf.select(cfg, "hydra.launcher.array_parallelism") == 8


@pytest.mark.slow
def test_sweep_through_the_submitit_plugin(cli, tmp_path):
    """hydra/launcher=submitit_local: the real plugin runs each point as its own process (all
    at once; the per-core claims make them take turns), the callback reports in the submitter."""
    r = cli("-m", "hydra/launcher=submitit_local", "size=tiny", "strategy=single,dp", "steps=2", "seq_len=32",
            "accelerator=cpu")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "2 runs: 2 ok" in r.stdout and "report: reports/" in r.stdout
    [sweep] = glob.glob(str(tmp_path / "results" / "*"))
    assert len(glob.glob(os.path.join(sweep, "*", "result.json"))) == 2
    logs = glob.glob(os.path.join(sweep, ".submitit", "*", "*_log.out"))
    assert len(logs) == 2 and all("-> ok:" in open(f).read() for f in logs)


def test_slurm_sweep_plans_on_the_nodes_not_the_login_node():
    # the submitting host has no SLURM job, GPUs or enough cores: preflight must not judge the
    # points by it (they are planned in the job), only compose them and check the folders
    from bench.run import preflight
    n = preflight(["hydra/launcher=slurm", "launcher=multinode", "launcher.nodes=2", "accelerator=cuda",
                   "devices=8", "size=tiny,mini"], multirun=True)
    assert n == 2


def test_scontrol_failure_is_a_clear_error():
    def broken(nodelist):
        raise FileNotFoundError("scontrol")
    env = {"SLURM_JOB_ID": "1", "SLURM_JOB_NODELIST": "gpu[1-2]", "SLURM_JOB_NUM_NODES": "2", "SLURM_NODEID": "0"}
    with pytest.raises(RendezvousError, match="cannot read node 0 of SLURM_JOB_NODELIST=gpu\\[1-2\\]"):
        resolve(multi(rdzv_endpoint=None), env=env, hostnames=broken)
