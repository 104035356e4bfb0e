"""What a message costs on a link: from a probe's measurements (bench/probe.py) or from a
named profile whose every figure carries its source (conf/cluster/*.yaml).

`Link.time_s(op, size_bytes, ranks)`:
* a measured link at the probe's own rank count and within its sizes: the probe's curve,
  made monotone in size (`monotone`: a larger message never costs less; the probe's small
  sizes are noisy here) and interpolated in log-log;
* at another rank count: the same busbw regime, i.e. the measured curve read at the same bus
  bytes (S x busbw factor), plus the extra ring hops' latency (a ring all-reduce takes 2(n-1)
  hops, all-gather and reduce-scatter n-1, a send 1; alpha per hop = the fitted alpha / the
  measured hops). NCCL switches to trees at scale (latency ~ log n): the ring is the
  conservative choice;
* beyond the largest size: linear from the largest measured point at the bandwidth of the
  top sizes;
* a profile link: alpha x hops(n)/hops(2) + S x factor / beta (alpha-beta in busbw terms,
  REFERENCE.md; alpha as for two ranks).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

from bench.probe import bus_factor, fit_alpha_beta


def hops(op: str, n: int) -> int:
    """Latency steps of a ring: all-reduce 2(n-1), all-gather/reduce-scatter n-1, send 1."""
    if n <= 1:
        return 0
    return {"all_reduce": 2 * (n - 1), "all_gather": n - 1, "reduce_scatter": n - 1}.get(op, 1)


def monotone(values: list[float]) -> list[float]:
    """The lower non-decreasing envelope of `values` (times by increasing size): each the least
    of itself and every later one. A larger message never costs less, and a probe's noise is
    one-sided (a rank descheduled, never one sped up): a small size slower than a larger one
    is noise, so it takes the larger one's time."""
    out, low = [], math.inf
    for v in reversed(values):
        low = min(low, v)
        out.append(low)
    return out[::-1]


@dataclass
class Link:
    """A link's cost model. `curves`: op -> (sizes, times) measured at `ranks` (a probe), or
    empty for a profile (`alpha_s`, `beta_bytes_per_s`). `source`: where the figures come from."""
    name: str
    source: str
    ranks: int = 2
    curves: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)
    alpha_s: float = 0.0
    beta_bytes_per_s: float = 0.0
    alpha_hop_s: dict[str, float] = field(default_factory=dict)
    top_beta: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_probe(cls, record: dict[str, Any], scope: str = "world") -> Link:
        rows = [r for r in record["metrics"]["probe"]["rows"] if r["scope"] == scope]
        if not rows:
            raise ValueError(f"{record.get('path', 'probe')}: no {scope} rows")
        n = rows[0]["ranks"]
        link = cls(name=f"probe {record.get('hardware_label')} ({scope}, {n} ranks)",
                   source=f"bench.probe {record.get('path', '')} ({record.get('started_at', '')})", ranks=n)
        for op in sorted({r["op"] for r in rows}):
            pts = sorted((r["size_bytes"], r["time_s"]) for r in rows if r["op"] == op)
            sizes, times = [p[0] for p in pts], monotone([p[1] for p in pts])
            link.curves[op] = (sizes, times)
            top_bw = sizes[-1] * bus_factor(op, n) / times[-1]  # the largest size's busbw
            try:
                fit = fit_alpha_beta([s * bus_factor(op, n) for s in sizes], times)
                alpha = fit.alpha_s
            except ValueError:  # no trend to fit (few sizes, noise): the smallest size's time as latency
                alpha = times[0]
            link.alpha_hop_s[op] = alpha / max(hops(op, n), 1)
            top = [(s, t) for s, t in zip(sizes, times) if s >= sizes[-1] / 16]
            try:
                link.top_beta[op] = fit_alpha_beta([s * bus_factor(op, n) for s, _ in top], [t for _, t in top]).beta_bytes_per_s
            except ValueError:
                link.top_beta[op] = top_bw
        return link

    def time_s(self, op: str, size_bytes: float, ranks: int) -> float:
        """Seconds for one `op` of S = `size_bytes` over `ranks` ranks (0 for one rank)."""
        if ranks <= 1 or size_bytes <= 0:
            return 0.0
        bus = size_bytes * bus_factor(op, ranks)
        if not self.curves:
            return self.alpha_s * hops(op, ranks) / max(hops(op, 2), 1) + bus / self.beta_bytes_per_s
        sizes, times = self.curves[op]
        at = bus / bus_factor(op, self.ranks)  # the measured size with the same bus bytes
        extra = (hops(op, ranks) - hops(op, self.ranks)) * self.alpha_hop_s[op]
        if at >= sizes[-1]:
            base = times[-1] + (at - sizes[-1]) * bus_factor(op, self.ranks) / self.top_beta[op]
        elif at <= sizes[0]:
            base = times[0]
        else:
            i = next(k for k in range(1, len(sizes)) if sizes[k] >= at)
            f = (math.log(at) - math.log(sizes[i - 1])) / (math.log(sizes[i]) - math.log(sizes[i - 1]))
            base = math.exp(math.log(times[i - 1]) + f * (math.log(times[i]) - math.log(times[i - 1])))
        return max(base + extra, 0.0)


@dataclass
class Cluster:
    """Devices per node and the links inside a node and between nodes. `source` says what
    the description rests on (a probe, a profile file, or the assumption in force)."""
    devices_per_node: int
    intra: Link
    inter: Link
    source: str

    def link_for(self, stride: int, ranks: int) -> tuple[Link, int]:
        """The link a group of `ranks` ranks, `stride` apart (dp is the outermost mesh
        dimension; groups taken as aligned to nodes), crosses, and how many of the group's
        members share a node: within a node when the whole group fits in one; across nodes
        each node's members drive their own NICs (a DGX: one HCA per GPU), so the per-device
        inter-node bandwidth counts that many times (NCCL's channels spread over them)."""
        if stride * (ranks - 1) < self.devices_per_node or self.inter is self.intra:
            return self.intra, 1  # one link for everything (a probe alone): no NICs to count
        return self.inter, max(1, min(ranks, self.devices_per_node // max(stride, 1)))


CLUSTER_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf", "cluster")


def profile_names() -> list[str]:
    return sorted(f[:-5] for f in os.listdir(CLUSTER_DIR) if f.endswith(".yaml")) if os.path.isdir(CLUSTER_DIR) else []


def load_cluster(what: str, probe_link: Link | None) -> Cluster:
    """A cluster from a YAML file or a named profile (conf/cluster/NAME.yaml):

        devices_per_node: 8
        intra: {beta_bytes_per_s: 3.0e11, alpha_s: 0, source: "..."}   # or {probe: path/to/result.json}
        inter: {beta_bytes_per_s: 2.5e10, alpha_s: 0, source: "..."}

    Every profile figure needs its `source`. ValueError names what is missing."""
    import yaml
    path = what if os.path.exists(what) else os.path.join(CLUSTER_DIR, f"{what}.yaml")
    if not os.path.exists(path):
        raise ValueError(f"--cluster {what}: no such file nor profile; profiles: {', '.join(profile_names()) or 'none'}")
    with open(path) as f:
        d = yaml.safe_load(f) or {}
    if not isinstance(d.get("devices_per_node"), int) or d["devices_per_node"] < 1:
        raise ValueError(f"{path}: devices_per_node must be a positive integer")
    links = {}
    for k in ("intra", "inter"):
        spec = d.get(k)
        if not isinstance(spec, dict):
            raise ValueError(f"{path}: `{k}` missing; give {{beta_bytes_per_s, alpha_s, source}} or {{probe: RESULT}}")
        if "probe" in spec:
            from bench.results import read_result
            rec = {**read_result(spec["probe"]), "path": spec["probe"]}
            links[k] = Link.from_probe(rec, spec.get("scope", "world"))
        else:
            missing = [x for x in ("beta_bytes_per_s", "alpha_s", "source") if x not in spec]
            if missing:
                raise ValueError(f"{path}: `{k}` lacks {', '.join(missing)} (every figure needs its source)")
            links[k] = Link(name=f"{d.get('name', what)} {k}", source=str(spec["source"]),
                            alpha_s=float(spec["alpha_s"]), beta_bytes_per_s=float(spec["beta_bytes_per_s"]))
    return Cluster(d["devices_per_node"], links["intra"], links["inter"], f"{path}: {d.get('source', '')}".rstrip(": "))


def probe_cluster(link: Link, devices_per_node: int) -> Cluster:
    """No cluster description: every device on the probed link (said in every output)."""
    return Cluster(devices_per_node, link, link,
                   f"{link.name}, for every group (no --cluster: inter-node links assumed as fast as the probed one)")
