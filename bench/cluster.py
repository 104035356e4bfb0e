"""Where the nodes of a job meet: the rendezvous of `launcher=multinode`, from the config or
from the SLURM job it runs in. Pure functions of the config and the environment, so that
`plan` can check them before anything starts; torch elastic does the rest (launch.py).
"""
from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Mapping

from bench.config import LauncherConfig, LauncherKind
from bench.spec import Rendezvous


class RendezvousError(ValueError):
    """The multi-node settings cannot work; the message says what to change."""


def _scontrol_hostnames(nodelist: str) -> list[str]:
    out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                         check=True, timeout=30)
    return out.stdout.split()


def slurm_port(job_id: str) -> int:
    """A port every node of one SLURM job derives alike and other jobs (array elements that
    may share a node) almost never share: 20000 + job id mod 12000."""
    return 20000 + int(re.sub(r"\D", "", job_id) or 0) % 12000  # below Linux's ephemeral range (32768+)


def from_slurm(env: Mapping[str, str], hostnames: Callable[[str], list[str]] = _scontrol_hostnames
               ) -> tuple[int, int, str] | None:
    """(nodes, this node's rank, node 0's host:port) inside a SLURM job, else None."""
    if "SLURM_JOB_ID" not in env or "SLURM_JOB_NODELIST" not in env:
        return None
    nodes = int(env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES") or 1)
    node_rank = int(env.get("SLURM_NODEID", 0))
    try:
        first = hostnames(env["SLURM_JOB_NODELIST"])[0]
    except (OSError, IndexError, subprocess.SubprocessError) as e:
        raise RendezvousError(f"cannot read node 0 of SLURM_JOB_NODELIST={env['SLURM_JOB_NODELIST']} "
                              f"({type(e).__name__}); set launcher.rdzv_endpoint=HOST:PORT") from None
    return nodes, node_rank, f"{first}:{slurm_port(env['SLURM_JOB_ID'])}"


def resolve(launcher: LauncherConfig, env: Mapping[str, str] = os.environ,
            hostnames: Callable[[str], list[str]] = _scontrol_hostnames) -> Rendezvous:
    """Where this node's ranks meet: a private one-machine rendezvous for `launcher=local`,
    node 0's store from the config or the SLURM job for `launcher=multinode`."""
    if launcher.name is LauncherKind.local:
        if launcher.nodes != 1:
            raise RendezvousError(f"launcher.nodes={launcher.nodes} needs launcher=multinode")
        for name in ("node_rank", "rdzv_endpoint"):  # meaningless on one machine: say so, do not ignore
            if getattr(launcher, name) is not None:
                raise RendezvousError(f"launcher.{name}={getattr(launcher, name)} needs launcher=multinode")
        return Rendezvous()
    nodes, rank, endpoint = launcher.nodes, launcher.node_rank, launcher.rdzv_endpoint
    source = "config"
    if endpoint is None:
        slurm = from_slurm(env, hostnames)
        if slurm is None:
            raise RendezvousError("launcher=multinode needs launcher.rdzv_endpoint=HOST:PORT (node 0's address, "
                                  "the same on every node), or to run inside a SLURM job")
        if slurm[0] != nodes:
            raise RendezvousError(f"launcher.nodes={nodes} but this SLURM job has {slurm[0]} nodes; "
                                  f"set launcher.nodes={slurm[0]}")
        _, rank, endpoint = slurm
        source = "slurm"
    if nodes < 1:
        raise RendezvousError(f"launcher.nodes={nodes}: need at least 1")
    host, _, port = endpoint.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise RendezvousError(f"launcher.rdzv_endpoint={endpoint} is not HOST:PORT; e.g. "
                              "launcher.rdzv_endpoint=node0.cluster:29500")
    if rank is not None and not 0 <= rank < nodes:
        raise RendezvousError(f"launcher.node_rank={rank} is outside 0..{nodes - 1}")
    return Rendezvous(backend="c10d" if rank is None else "static", nodes=nodes, endpoint=endpoint,
                      node_rank=rank, join_timeout_s=launcher.join_timeout_s, source=source)


def is_local_host(host: str) -> bool:
    """Whether `host` names this machine (loopback or one of its own addresses)."""
    import socket
    if host in ("localhost", "127.0.0.1", "::1") or host.startswith("127."):
        return True
    try:
        mine = {socket.gethostname(), socket.getfqdn()}
        mine |= {a[4][0] for a in socket.getaddrinfo(socket.gethostname(), None)}
        return host in mine or socket.gethostbyname(host) in mine
    except OSError:
        return False


def nccl_transports(lines: list[str]) -> str | None:
    """What NCCL said it uses, from its INFO log lines: the channel transports ('via P2P/CUMEM',
    'via NET/IB/0', 'via SHM') and the network plugin ('Using network IB'); None when silent."""
    via = sorted({re.sub(r"/\d+$", "", m) for line in lines for m in re.findall(r"\bvia (\S+)", line)})
    net = sorted({m for line in lines for m in re.findall(r"Using network (\S+)", line)})
    if not via and not net:
        return None
    return "nccl: " + ", ".join(via or ["no inter-rank channels"]) + (f"; network {', '.join(net)}" if net else "")
