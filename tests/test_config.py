"""The typed config: every option of every group composes and plans; one home for each key's
meaning (help, README); hashes unchanged by the typed rewrite."""
import csv
import os
import re

from bench import config, parallel
from bench.config import BenchConfig, Range, Schedule, key_rows, markdown_table, numeric_keys, options
from bench.memory import predict_memory
from bench.plan import InvalidConfig, config_hash, make_spec
from bench.run import compose_points
from conftest import GPU_HOST, HOST, ROOT, compose_cfg, plan

def test_every_option_of_every_group_composes_and_plans():
    """Every size, strategy, schedule and launcher, and the demo experiment: composed and
    planned, on a GPU node (planned, never run) and on this CPU, each with a layout and a
    memory prediction, or invalid here with a message that names the fix."""
    for size in options("size"):  # on 8 GPUs, data parallel: every size has a layout and a prediction
        s = plan(f"size={size}", "strategy=fsdp", "devices=8", host=GPU_HOST)
        assert s.layout.dp == 8 and predict_memory(s).total_bytes > 0
        assert plan(f"size={size}", "accelerator=cpu").size == size
    for strategy in options("strategy"):
        n = {"single": 1, "hybrid": 4}.get(strategy, 2)
        extra = ["strategy.tp=2", "strategy.pp=1"] if strategy == "hybrid" else []
        s = plan("size=small", f"strategy={strategy}", f"devices={n}", *extra, host=GPU_HOST)
        assert s.strategy == parallel.get(strategy).name == strategy
        assert s.layout.dp * s.layout.tp * s.layout.pp == n and predict_memory(s).total_bytes > 0
        try:
            cpu = plan("size=mini", f"strategy={strategy}", f"devices={n}", *extra, "oversubscribe=true",
                       "accelerator=cpu")
            assert cpu.procs == n and predict_memory(cpu).total_bytes > 0
        except InvalidConfig as e:
            assert strategy == "dataparallel" and "use strategy=dp on CPU" in str(e)
    for schedule in Schedule:
        s = plan("strategy=mp", "devices=2", f"strategy.schedule={schedule.value}", "accelerator=cpu")
        assert s.layout.pipeline.schedule is schedule and s.layout.bubble_ideal is not None
    for launcher in options("launcher"):
        endpoint = ["launcher.rdzv_endpoint=node0:29500"] if launcher == "multinode" else []
        s = plan(f"launcher={launcher}", "strategy=dp", "accelerator=cpu", *endpoint)
        assert s.rendezvous.backend == {"local": "local", "multinode": "c10d"}[launcher]
    for experiment in options("experiment"):
        points, target = compose_points([f"experiment={experiment}"], multirun=True)
        assert points and target.endswith("BasicLauncher")
        for _, cfg in points:
            assert isinstance(cfg, BenchConfig)
            make_spec(cfg, HOST)


def test_sweep_points_follow_hydras_product():
    points, _ = compose_points(["size=tiny,mini", "strategy=dp", "devices=1,2", "devices=2"], multirun=True)
    # a key given twice keeps its first place and its last value, as Hydra's basic sweeper does
    assert [w for w, _ in points] == ["size=tiny strategy=dp devices=2", "size=mini strategy=dp devices=2"]


def test_help_lists_every_key_with_its_default():
    text = config.help_text()
    keys = [k for k, _, _, _ in key_rows()]
    assert "devices" in keys and "strategy.schedule" in keys and "launcher.rdzv_endpoint" in keys
    for k, default, valid, _ in key_rows():
        assert re.search(rf"^  {re.escape(k)}\s+{re.escape(default)}\s+{re.escape(valid)}\s", text, re.M), k
    assert "$" not in text.replace("$APP_CONFIG_GROUPS", "")  # Hydra's template substitutes $NAMES


def test_every_numeric_key_declares_its_range():
    """Found from the dataclasses (groups included), so a key added later without a range fails
    here; the range shows in the key table and in --help."""
    keys = {k.name: k for k in numeric_keys()}
    assert {"size.n_embd", "strategy.microbatches", "launcher.join_timeout_s", "seq_len", "lr"} <= set(keys)
    assert not {"compile", "strategy.sequence_parallel", "data_path"} & set(keys)  # bools and strings are no numbers
    assert not [k for k in keys.values() if k.valid is None], "declare a range: key(default, help, ge=...)"
    rows = {k: v for k, _, v, _ in key_rows()}
    assert all(rows[name] == k.text() and rows[name] for name, k in keys.items())
    assert keys["seq_len"].text() == "at least 1, or null" and keys["lr"].text() == "a finite number more than 0"


def test_ranges_refuse_what_lies_outside():
    r = Range(ge=1)
    assert r.admits(1) and r.admits(10**9) and not r.admits(0) and not r.admits(-1)
    f = Range(gt=0)
    assert f.admits(1e-9) and not f.admits(0.0) and not f.admits(float("nan")) and not f.admits(float("inf"))
    both = Range(ge=0, le=9)
    assert both.admits(0) and both.admits(9) and not both.admits(10)
    assert Range(lt=5).text() == "less than 5" and both.text() == "at least 0 and at most 9"
    seq = {k.name: k for k in numeric_keys()}["seq_len"]
    assert seq.refusal(None) is None and seq.refusal(1) is None
    assert seq.refusal(0) == "seq_len=0: need at least 1, or null"
    assert {k.name: k for k in numeric_keys()}["lr"].refusal(-1.0) == "lr=-1: need a finite number more than 0"


def test_ranges_leave_the_defaults_alone():
    """A range is field metadata: the dataclass defaults (and so the config hashes) are as before."""
    cfg = compose_cfg()
    assert (cfg.devices, cfg.seq_len, cfg.lr, cfg.timeout_s, cfg.launcher.node_rank) == (1, 256, 3e-4, 1800.0, None)


def test_readme_key_table_is_the_generated_one():
    readme = open(os.path.join(ROOT, "README.md")).read()
    assert markdown_table() in readme, "run `python -m bench.config` and paste its table into the README"


def test_hashes_of_earlier_results_are_unchanged():
    """Results made before the config became typed (c57a51d, the example set of that time):
    composing the same overrides must give the same hash, or resume would lose them."""
    rows = list(csv.DictReader(open(os.path.join(ROOT, "tests", "data", "config-hashes-c57a51d.csv"))))
    assert len(rows) > 40
    for r in rows[::3]:  # every size, strategy, schedule and hybrid of the set appear in this third
        # they ran with glibc's mmap threshold fixed at 1 MiB and its own trim threshold, the plain loss
        # head and (tp) the output layer whole on every rank; the defaults now are a 32 MiB threshold and
        # no trimming, `auto` and a vocabulary-parallel output layer: a new hash, since the work is not the same
        overrides = r["overrides"].split(",") + ["strategy.vocab_parallel=false", "malloc_mmap_threshold=1048576",
                                                 "malloc_trim_threshold=null", "malloc_mmap_max=null", "loss_head=plain"]
        assert config_hash(compose_cfg(*overrides)) == r["config_hash"], overrides
        assert config_hash(compose_cfg(*overrides[:-1])) != r["config_hash"], overrides


def test_vocab_parallel_changes_the_hash_and_identity_of_tensor_parallel_points_only():
    """`strategy.vocab_parallel` (on by default) is part of a point's hash and options where its
    strategy runs tensor parallelism, at every device count (a series' 1-device point with it);
    elsewhere it changes nothing, and a point that turns it off keeps the earlier results' hash."""
    from bench.config import bench_hash, to_dict
    from bench.results import _options
    def both(*o):
        return config_hash(compose_cfg(*o)), config_hash(compose_cfg(*o, "strategy.vocab_parallel=false"))
    for point in (("strategy=tp", "devices=2"), ("strategy=tp", "devices=1"),
                  ("strategy=hybrid", "devices=4", "strategy.tp=2", "strategy.pp=1")):
        on, off = both(*point)
        d = to_dict(compose_cfg(*point, "strategy.vocab_parallel=false"))
        d["strategy"].pop("vocab_parallel")  # as results made before the key recorded it
        assert on != off and off == bench_hash(d), point
        assert '"vocab_parallel": true' in _options(to_dict(compose_cfg(*point)))
        assert "vocab_parallel" not in _options(to_dict(compose_cfg(*point, "strategy.vocab_parallel=false")))
    for point in (("strategy=dp", "devices=2"), ("strategy=hybrid", "devices=4", "strategy.pp=2")):
        on, off = both(*point)
        assert on == off, point
        assert "vocab_parallel" not in _options(to_dict(compose_cfg(*point)))


def test_the_cpu_allocator_keys_leave_gpu_hashes_alone():
    """malloc_mmap_threshold and malloc_trim_threshold are CPU ranks' settings: a GPU point hashes
    as it did before they had defaults; a CPU point's hash carries them."""
    from conftest import GPU_HOST, plan
    gpu = ("accelerator=cuda", "devices=1")
    assert config_hash(compose_cfg(*gpu)) == config_hash(
        compose_cfg(*gpu, "malloc_mmap_threshold=null", "malloc_trim_threshold=null", "malloc_mmap_max=null"))
    assert config_hash(compose_cfg("accelerator=cpu")) != config_hash(
        compose_cfg("accelerator=cpu", "malloc_mmap_threshold=null", "malloc_trim_threshold=null"))
    assert config_hash(compose_cfg("accelerator=cpu")) != config_hash(compose_cfg("accelerator=cpu", "malloc_mmap_max=0"))
    assert config_hash(compose_cfg(*gpu)) == config_hash(compose_cfg(*gpu, "malloc_mmap_max=0"))
    plan(*gpu, "malloc_mmap_threshold=null", host=GPU_HOST)  # the CPU-only check does not refuse a GPU point
