"""The command line as a user meets it: `vicmae --help` and every `vicmae <command> --help`, integer
options refused with the option and the reason, config mistakes named with file and line."""
import os, re, subprocess, tempfile
from harness import test, skip, run, repo_root, vicmae_bin


def vicmae(*args, timeout=60, cwd=None):
    b = vicmae_bin()
    if not os.path.exists(b):
        skip(f"{b} not built")
    return subprocess.run([b, *args], cwd=cwd or repo_root(), capture_output=True, text=True, timeout=timeout)


def commands(binary):
    out = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stderr == "", out
    names = re.findall(r"^  ([a-z][a-z-]*) ", out.stdout.split("commands:", 1)[1], re.M)
    assert "train" in names and "config" in names, out.stdout
    return names


# `vicmae <command> --help` prints its usage on stdout (so that `| less` shows it) and exits 0, in both
# binaries; a command the GStreamer-free vicmae-trainer does not carry is not in its list, and says so
# (exit 2) when called.
@test
def test_every_command_help_on_stdout():
    b = vicmae_bin()
    if not os.path.exists(b):
        skip(f"{b} not built")
    trainer = os.path.join(os.path.dirname(b), "vicmae-trainer")
    for binary in (b, trainer):
        if not os.path.exists(binary):
            continue
        for name in commands(binary):
            for flag in ("--help", "-h"):
                r = subprocess.run([binary, name, flag], cwd=repo_root(), capture_output=True, text=True, timeout=30)
                # vicmae-trainer --help lists only the commands it has (it listed all 16)
                assert "not available in this binary" not in r.stderr, (binary, name, r.stderr)
                assert r.returncode == 0, (binary, name, flag, r.returncode, r.stderr)
                assert r.stdout.startswith("usage: vicmae " + name), (binary, name, flag, r.stdout[:200])
                assert r.stderr == "", (binary, name, flag, r.stderr)
    if os.path.exists(trainer):
        assert len(commands(trainer)) < len(commands(b)), "vicmae-trainer lists every command"
        r = subprocess.run([trainer, "probe", "x.mp4"], capture_output=True, text=True, timeout=30)
        assert r.returncode == 2 and "not available in this binary" in r.stderr, r


# The one-line summaries of `vicmae --help` name only what the commands accept.
@test
def test_summaries_match_commands():
    r = vicmae("--help")
    eval_line = next(l for l in r.stdout.splitlines() if l.startswith("  eval "))
    assert "knn|linear|all" in eval_line, eval_line
    bench_line = next(l for l in r.stdout.splitlines() if l.startswith("  bench "))
    for other in ("proto", "decoder", "sampler"):
        assert other not in bench_line, bench_line
    r = vicmae("bench", "proto")
    assert r.returncode == 2 and "make bench" in r.stderr, r


# A numeric option that is not one (or out of range) is refused naming the option, the value and the
# range, before anything starts (was: atoi/atof, so `--workers two` ran with no local workers and a
# worker's `--idle-exit 2m` gave up after 2 seconds).
@test
def test_numeric_options_refused():
    cases = [
        (["run", "--workers", "two"], "--workers 'two'"),
        (["run", "--workers", "-1"], "--workers '-1'"),
        (["run", "--epochs", "0"], "--epochs '0'"),
        (["run", "--batch", "8x"], "--batch '8x'"),
        (["run", "--stop-after", "ten"], "--stop-after 'ten'"),
        (["worker", "--connect", "tcp://127.0.0.1:9", "--idle-exit", "2m"], "--idle-exit '2m'"),
        (["synth", "--videos", "8x"], "--videos '8x'"),
        (["sample", "--video", "v.mp4", "--out", "d", "--count", "3x"], "--count '3x'"),
        (["sample", "--video", "v.mp4", "--out", "d", "--count", "3", "--epoch", "-1"], "--epoch '-1'"),
        (["frames", "v.mp4", "--at", "0", "--out", "d", "--short-side", "0"], "--short-side '0'"),
        (["plot", "runs/x", "--smooth", "abc"], "--smooth 'abc'"),
        (["bench", "pipeline", "--epochs", "x"], "--epochs 'x'"),
        (["bench", "pipeline", "--warmup", "-2"], "--warmup '-2'"),
        (["debug-step", "--batch", "b.vmb", "--out", "o.safetensors", "--steps", "0"], "--steps '0'"),
        (["synth", "--seed", "-3"], "--seed '-3'"),
        (["synth", "--seed", "12x"], "--seed '12x'"),
        (["train", "--stop-after", "0"], "--stop-after '0'"),
        (["eval", "knn", "--k", "0"], "--k '0'"),
        (["eval", "knn", "--lr", "fast"], "--lr 'fast'"),
    ]
    # Should a check regress, whatever the command does stays in a temporary directory (relative
    # paths, the built-in defaults' runs/ and data/synth) and off the default port.
    d = tempfile.mkdtemp(prefix="vicmae-cli-")
    iso = ["--set", "pipeline.endpoint=tcp://127.0.0.1:*"]
    for args, want in cases:
        r = vicmae(*args, *(iso if args[0] == "run" else []), timeout=30, cwd=d)
        assert r.returncode == 2, (args, r.returncode, r.stderr)
        assert want in r.stderr and re.search(r"expected an? (integer|number) (in \[|>= )", r.stderr), (args, r.stderr)
    # the non-numeric forms: a WxH size, a list of worker counts
    for args, want in ((["synth", "--size", "64x48junk"], "--size '64x48junk': expected WxH"),
                       (["synth", "--size", "63x48"], "--size '63x48': expected WxH, even"),
                       (["bench", "pipeline", "--workers", "1,2x"], "--workers '1,2x': expected a comma-separated"),
                       (["bench", "pipeline", "--workers", "1,"], "--workers '1,': expected a comma-separated"),
                       (["bench", "pipeline", "--workers", "1,99"], "--workers '1,99': expected a comma-separated")):
        r = vicmae(*args, timeout=30, cwd=d)
        assert r.returncode == 2 and want in r.stderr, (args, r.returncode, r.stderr)
    r = vicmae("run", "--frobnicate", "1", *iso, timeout=30, cwd=d)
    assert r.returncode == 2 and "unexpected argument '--frobnicate'" in r.stderr, r.stderr


# `vicmae run --batch B` reaches the trainer as [optim] batch_size (was: used by --sink only, and
# silently ignored when training): batch 1 with InfoNCE is refused by the trainer's validation.
@test
def test_run_batch_reaches_trainer():
    r = vicmae("run", "--config", "configs/tiny.ini", "--set", "pipeline.endpoint=tcp://127.0.0.1:*",
               "--set", "run.out_dir=" + tempfile.mkdtemp(prefix="vicmae-cli-"), "--workers", "0", "--batch", "1")
    if "not built yet" in r.stderr:
        skip("no trainer in this binary")
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "batch_size 1" in r.stderr and "InfoNCE" in r.stderr, r.stderr


# Config mistakes through the command line: the file and line, the key and the reason.
@test
def test_config_errors_name_file_line_key():
    d = tempfile.mkdtemp(prefix="vicmae-cli-")
    cases = [
        ("[optim]\nbatch_size = -4\n", ":2: [optim] batch_size = '-4': expected an integer in [1, 1000000]"),
        ("[optim]\nbatchsize = 4\n", ":2: unknown key 'batchsize' in [optim]; keys are: batch_size"),
        ("[optimizer]\nbatch_size = 4\n", ":1: unknown section [optimizer]"),
        ("[optim]\nbatch_size = 8\n[optimiser]\n", ":3: unknown section [optimiser]"),
        ("[loss]\ncontrastive = byol\n", ":2: [loss] contrastive = 'byol': allowed values are infonce|simsiam|vicreg|none"),
        ("[optim]\nbatch_size = 16\nepochs = 2\nbatch_size = 32\n", ":4: [optim] batch_size is set again (first on line 2)"),
    ]
    for i, (text, want) in enumerate(cases):
        p = os.path.join(d, f"c{i}.ini")
        with open(p, "w") as f:
            f.write(text)
        r = vicmae("config", "show", p)
        assert r.returncode == 2 and r.stdout == "", (text, r)
        assert p + want in r.stderr, (text, r.stderr)
    r = vicmae("config", "--help")
    assert r.returncode == 0 and r.stdout.startswith("usage: vicmae config"), r



# VICMAE_LOG (named by `vicmae --help`) with a value that is no level says so instead of being ignored.
@test
def test_bad_log_level_named():
    b = vicmae_bin()
    if not os.path.exists(b):
        skip(f"{b} not built")
    r = subprocess.run([b, "config", "keys"], cwd=repo_root(), capture_output=True, text=True, timeout=30,
                       env=dict(os.environ, VICMAE_LOG="loud"))
    assert r.returncode == 0 and "VICMAE_LOG=loud is not a level" in r.stderr, r.stderr
    r = subprocess.run([b, "config", "keys"], cwd=repo_root(), capture_output=True, text=True, timeout=30,
                       env=dict(os.environ, VICMAE_LOG="warn"))
    assert r.returncode == 0 and r.stderr == "", r.stderr


if __name__ == "__main__":
    run()
