"""Python side of the test runner: same output as tests/harness.c.

    from harness import test, skip, run
    @test
    def test_something(): assert ...
    if __name__ == "__main__": run()
"""
import os, sys, time, traceback

_tests = []


class Skip(Exception):
    pass


def test(fn):
    _tests.append(fn)
    return fn


def skip(reason):
    raise Skip(reason)


def repo_root():
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def vicmae_bin():
    return os.environ.get("VICMAE_BIN", os.path.join(repo_root(), "build", "vicmae"))


def data_dir():
    d = os.environ.get("VICMAE_DATA", os.path.join(repo_root(), "..", "shared", "data"))
    return d if os.path.isdir(d) else None


def run():
    flt = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("VICMAE_TEST_FILTER", "")
    p = f = s = 0
    for fn in _tests:
        if flt and flt not in fn.__name__:
            continue
        t0 = time.time()
        try:
            fn()
            p += 1
            print(f"PASS {fn.__name__} ({time.time() - t0:.2f}s)", flush=True)
        except Skip as e:
            s += 1
            print(f"SKIP {fn.__name__}: {e}", flush=True)
        except Exception:
            f += 1
            tb = traceback.format_exc().strip().splitlines()
            print(f"FAIL {fn.__name__}: " + " | ".join(tb[-4:]), flush=True)
    name = os.path.basename(sys.argv[0])
    print(f"{name}: {p} passed, {f} failed, {s} skipped", flush=True)
    sys.exit(1 if f else 0)
