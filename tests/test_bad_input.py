"""Bad input, in tables: each row is a command a user might type, and the one line it
must answer with (exit code 2, `error: ...` on stderr, no traceback) before any job starts.
The README's troubleshooting section lists the messages of BAD_INPUT (checked below).
Every numeric key is also tried out of its range, the keys found from the config
dataclasses (a key added later is covered as it comes), and every rule between keys that a
rank would otherwise be the first to break has its row in CROSS_KEY_RULES.

The commands run in this process (`main(argv)`, exactly what `python -m ...` calls) so the
table stays fast; tests/test_cli.py runs the real command line end to end.
"""
import os
import re
import signal
import sys

import pytest

from bench import compare, report
from bench import run as bench_run
from bench.config import numeric_keys, show_number
from conftest import ROOT, fake_set

NO_CUDA = not __import__("torch").cuda.is_available()

# (what, command, arguments, the message the user sees). {file}, {ok}, {other}, {empty},
# {missing} are paths made for each row: a plain file, an ok result set, a result set with
# other configurations, an empty folder, a path that does not exist.
BAD_INPUT = [
    ("a bare word", "run", ["tiny"],
     "tiny: expected key=value (python -m bench.run --help lists every key)"),
    ("unknown size", "run", ["size=huge"], "size=huge does not exist; choose one of: 13b, 2.7b"),
    ("unknown size in a sweep", "run", ["-m", "size=tiny,huge"], "size=huge does not exist"),
    ("unknown strategy", "run", ["strategy=nope"], "strategy=nope does not exist; choose one of"),
    ("unknown precision", "run", ["precision=fp8"], "Invalid value 'fp8', expected one of [fp32, bf16, fp16, auto]"),
    ("unknown key", "run", ["foo=1"], "Key 'foo' not in 'BenchConfig'"),
    ("wrong type", "run", ["devices=abc"], "Value 'abc' of type 'str' could not be converted to Integer"),
    ("sweep without -m", "run", ["size=tiny,mini"],
     "size=tiny,mini is a sweep, which needs -m: python -m bench.run -m size=tiny,mini"),
    ("devices 0", "run", ["devices=0"], "devices=0: need at least 1"),
    ("devices negative", "run", ["strategy=dp", "devices=-2"], "devices=-2: need at least 1"),
    ("devices beyond the cores", "run", ["strategy=dp", "devices=4096", "accelerator=cpu"],
     "devices=4096 x cpu_threads_per_device=1 needs 4096 cores but"),
    ("a GPU run without a GPU", "run", ["accelerator=cuda"], "accelerator=cuda but torch sees no CUDA device"),
    ("heads not divisible by tp", "run", ["strategy=tp", "devices=3", "oversubscribe=true", "accelerator=cpu"],
     "tensor parallel degree 3 does not divide size=mini's 4 heads; use a tp degree among 1, 2, 4"),
    ("more stages than layers", "run", ["strategy=mp", "devices=2", "size=tiny", "size.n_layer=1", "accelerator=cpu"],
     "2 pipeline stages need at least 2 layers but size=tiny has 1"),
    ("batch not divisible by micro-batches", "run",
     ["strategy=mp", "devices=2", "strategy.schedule=gpipe", "batch_size=6", "accelerator=cpu"],
     "batch_size=6 does not divide into strategy.microbatches=4"),
    ("global batch not divisible by dp", "run", ["strategy=dp", "devices=2", "global_batch_size=9", "accelerator=cpu"],
     "global_batch_size=9 does not divide into dp=2 x grad_accum=1"),
    ("seq_len beyond the context", "run", ["seq_len=4096"], "seq_len=4096 exceeds size=mini's context of 256"),
    ("fp16 on CPU", "run", ["precision=fp16", "accelerator=cpu"], "precision=fp16 needs a CUDA device"),
    ("dataparallel without CUDA", "run", ["strategy=dataparallel", "accelerator=cpu"],
     "strategy=dataparallel (nn.DataParallel) is a multi-GPU, single-process strategy"),
    ("compile without a warm-up", "run", ["compile=true", "warmup_steps=1"],
     "compile=true compiles in the first steps (forward, then backward); use warmup_steps>=2"),
    ("multinode without a rendezvous", "run", ["launcher=multinode"],
     "launcher=multinode needs launcher.rdzv_endpoint=HOST:PORT"),
    ("resume across nodes", "run", ["resume=true", "strategy=dp", "accelerator=cpu", "launcher=multinode",
                                    "launcher.rdzv_endpoint=127.0.0.1:29500"],
     "resume=true is not supported with launcher=multinode"),
    ("node count without multinode", "run", ["launcher.nodes=2"], "launcher.nodes=2 needs launcher=multinode"),
    ("a SLURM array over node counts", "run", ["-m", "hydra/launcher=submitit_local", "launcher=local,multinode"],
     "a SLURM array has one node count for every point"),
    ("every point of a sweep invalid", "run", ["-m", "strategy=single", "devices=2,3"],
     "no point of this sweep can run; strategy=single devices=2"),
    ("results folder under a file", "run", ["results_root={file}/results"], "is a file; choose another results_root"),
    ("unwritable results folder", "run", ["results_root=/proc/scalebench"], "is not writable"),
    ("unwritable report folder", "run", ["-m", "report_dir=/proc/scalebench"], "report_dir=/proc/scalebench is not writable"),
    ("report on a missing folder", "report", ["{missing}"], "no such file or folder"),
    ("report on an empty folder", "report", ["{empty}"], "no result.json under"),
    ("compare with one set", "compare", ["{ok}"], "give at least two result folders"),
    ("an A/A check of two sets", "compare", ["--aa", "{ok}", "{ok}"], "--aa takes one result folder"),
    ("compare with a missing folder", "compare", ["{ok}", "{missing}"], "no such file or folder"),
    ("compare with an empty folder", "compare", ["{ok}", "{empty}"], "no ok results under"),
    ("compare with nothing in common", "compare", ["{ok}", "{other}"], "the result sets have no configuration in common"),
]

# Rules between keys, each refused by bench/plan.py before launch (without them a rank would
# fail in the model, the data or torch's pipeline schedule). {file} is a 12-byte text file.
CROSS_KEY_RULES = [
    ("a label with a slash", "run", ["hardware_label=lab/gpu"],
     "hardware_label=lab/gpu: use letters, digits and . + _ - only"),
    ("'..' in a value", "run", ["data_path=../../x.txt"],
     "data_path=../../x.txt: a '..' in a value would put the point's folder outside results_root"),
    ("an empty results_root", "run", ["results_root="], "results_root is empty; give a folder"),
    ("a node rank on one machine", "run", ["launcher.node_rank=1"], "launcher.node_rank=1 needs launcher=multinode"),
    ("the chunked loss head on a pipeline under FSDP", "run",
     ["strategy=hybrid", "devices=4", "oversubscribe=true", "loss_head=chunked"],
     "loss_head=chunked does not run on a pipeline under FSDP; use loss_head=plain (or auto)"),
    ("more threads than cores", "run", ["cpu_threads_per_device=4096", "accelerator=cpu"],
     "needs 4096 cores but"),
    ("width not divisible by heads", "run", ["size.n_embd=130"],
     ("size.n_embd=130 does not divide by size.n_head=4 (each head is n_embd / n_head wide); use a multiple of 4, "
      "e.g. size.n_embd=128")),
    ("byte text with a small vocabulary", "run", ["data=text", "size.vocab_size=128"],
     "data=text uses byte tokens (0..255) but size=mini has size.vocab_size=128; use size.vocab_size>=256"),
    ("a text shorter than a sequence", "run", ["data=text", "data_path={file}", "seq_len=64"],
     "has 12 bytes, but seq_len=64 needs more than 65 bytes (a sequence and its next-token targets)"),
    ("the default text shorter than a sequence", "run", ["data=text", "seq_len=null", "size.block_size=200000"],
     "the default text (data_path=null) has about 200000 bytes, but seq_len=200000 needs more than"),
    ("1f1b with fewer micro-batches than stages", "run",
     ["strategy=mp", "devices=2", "strategy.schedule=1f1b", "strategy.microbatches=1", "oversubscribe=true",
      "accelerator=cpu"],
     "schedule=1f1b needs strategy.microbatches=1 to be at least the 2 stages; use strategy.microbatches>=2"),
]


def _out_of_range(k):
    """Values just outside a numeric key's declared range (and nan, inf for a float)."""
    r = k.valid
    if r is None:  # the test refuses it with a message that says to declare one
        return [0]
    bad = [r.ge - 1 if r.ge is not None else None, r.gt, r.le + 1 if r.le is not None else None, r.lt]
    bad = [b for b in bad if b is not None]
    return bad + (["nan", "inf"] if k.kind is float else [])


# (key, value): every int and float key of the config dataclasses, groups included
OUT_OF_RANGE = [(k, show_number(v)) for k in numeric_keys() for v in _out_of_range(k)]


def _call(command, argv, capsys):
    """Run one command as `python -m bench.<command> argv` would; (exit code, stdout, stderr)."""
    handler = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(SystemExit) as e:
            if command == "run":
                old = sys.argv
                sys.argv = ["bench.run", *argv]
                try:
                    bench_run.main()
                finally:
                    sys.argv = old
            else:
                {"report": report, "compare": compare}[command].main(argv)
    finally:
        signal.signal(signal.SIGTERM, handler)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def _refused(command, argv, tmp_path, monkeypatch, capsys):
    """Run a command that must be refused: exit code 2, one `error: ` line and no traceback,
    nothing started and nothing written. Returns the line."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "empty").mkdir()
    paths = {"file": str(tmp_path / "file"), "missing": str(tmp_path / "missing"), "empty": str(tmp_path / "empty"),
             "ok": fake_set(tmp_path / "ok"), "other": fake_set(tmp_path / "other", sizes=("small",))}
    argv = [a.format(**paths) for a in argv]
    before = set(os.listdir(tmp_path))
    code, out, err = _call(command, argv, capsys)
    assert code == 2, (code, out, err)
    assert err.startswith("error: "), err
    assert err.count("\n") == 1 and "Traceback" not in err
    # nothing started, nothing written: no results, reports or job folders appeared
    assert set(os.listdir(tmp_path)) == before
    assert not any(n.endswith(".pdf") for _, _, names in os.walk(tmp_path) for n in names)
    return err


@pytest.mark.parametrize("what,command,argv,message", BAD_INPUT + CROSS_KEY_RULES,
                         ids=[r[0] for r in BAD_INPUT + CROSS_KEY_RULES])
def test_bad_input_is_one_line_and_starts_nothing(what, command, argv, message, tmp_path, monkeypatch, capsys):
    if what == "a GPU run without a GPU" and not NO_CUDA:
        pytest.skip("this machine has a GPU")
    if "/proc/" in " ".join(argv) and not os.path.isdir("/proc"):
        pytest.skip("no /proc here")
    err = _refused(command, argv, tmp_path, monkeypatch, capsys)
    assert message in err, err


@pytest.mark.parametrize("k,value", OUT_OF_RANGE, ids=[f"{k.name}={v}" for k, v in OUT_OF_RANGE])
def test_every_numeric_key_out_of_range_is_refused(k, value, tmp_path, monkeypatch, capsys):
    """`seq_len=0` -> `error: seq_len=0: need at least 1, or null`: the key, the value as typed
    and the range declared beside the key in bench/config.py."""
    assert k.valid is not None, f"{k.name} declares no range in bench/config.py"
    err = _refused("run", [f"{k.name}={value}"], tmp_path, monkeypatch, capsys)
    assert err == f"error: {k.name}={value}: need {k.text()}\n", err


def test_every_numeric_key_is_tried():
    tried = {k.name for k, _ in OUT_OF_RANGE}
    assert tried == {k.name for k in numeric_keys()}
    assert {"size.n_embd", "strategy.stages_per_rank", "launcher.node_rank", "seq_len", "lr", "timeout_s"} <= tried


def test_readme_troubleshooting_lists_every_message():
    text = open(os.path.join(ROOT, "README.md")).read()
    section = text[text.index("## Troubleshooting"):]
    section = section[:section.index("\n## ", 4)] if "\n## " in section[4:] else section
    missing = [(what, msg) for what, _, _, msg in BAD_INPUT + CROSS_KEY_RULES
               if re.sub(r"\s+", " ", msg) not in re.sub(r"\s+", " ", section.replace("`", ""))]
    assert not missing, f"README troubleshooting lacks: {missing}"
