"""tests/test_install.py — `make install` as a user of the video library meets it.

Installs into a temporary DESTDIR (PREFIX=/opt/vicmae), then, from a directory outside the tree and
with only `pkg-config --cflags --libs vicmae-video` (PKG_CONFIG_PATH into the DESTDIR; the .pc file
is relocatable, ${pcfiledir}): compiles every installed header on its own, builds
tools/pkgconfig_example.c against the shared library and against the archive, runs both on a
generated H.264 clip (moving colour bars, 30 frames of 160x120) and checks what they print: frame
count, decoded size, clip shape, frames clip_stride apart, the same pixels from both links; links
and runs a C++17 program that includes every header (C linkage).  Last,
`make uninstall` leaves the DESTDIR empty.

The nested make gets this run's MAKEFLAGS minus the jobserver, so under `make SAN=address test` it
installs $BUILD's libraries as built (anything it has to rebuild gets the same SAN); a
sanitizer-instrumented archive (nm finds __asan_/__ubsan_ symbols) is linked with the same
-fsanitize, the one flag added to pkg-config's.
"""
import atexit
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import repo_root, run, skip, test  # noqa: E402

ROOT = repo_root()
BUILD = os.environ.get("BUILD", "build")
PREFIX = "/opt/vicmae"
FRAMES, WIDTH, HEIGHT = 30, 160, 120
HEADERS = ["common/config.h", "common/error.h", "common/io.h", "common/log.h", "common/rng.h", "proto/proto.h",
           "decoder/decoder.h", "sampler/sampler.h"]
_state = {}  # the install and the video, made once for all tests


def _sh(args, **kw):
    r = subprocess.run(args, capture_output=True, text=True, **kw)
    assert r.returncode == 0, f"{' '.join(args)}: exit {r.returncode}\n{r.stdout[-2000:]}{r.stderr[-2000:]}"
    return r.stdout


def _make(*targets, dest):
    env = dict(os.environ)
    flags = [t for t in env.get("MAKEFLAGS", "").split()
             if not t.startswith("--jobserver") and not re.fullmatch(r"-?j[0-9]*", t)]
    env["MAKEFLAGS"] = " ".join(flags)
    return _sh(["make", "-s", "--no-print-directory", "-C", ROOT, f"BUILD={BUILD}", f"PREFIX={PREFIX}",
                f"DESTDIR={dest}", *targets], env=env)


def _setup():
    if "dest" in _state:
        return _state
    for tool in ("make", "cc", "pkg-config", "nm", "readelf", "gst-launch-1.0"):
        if not shutil.which(tool):
            skip(f"{tool} not installed")
    tmp = tempfile.mkdtemp(prefix="vicmae-install-")
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    dest = os.path.join(tmp, "dest")
    _make("install", dest=dest)
    video = os.path.join(tmp, "v.mp4")
    _sh(["gst-launch-1.0", "-q", "videotestsrc", f"num-buffers={FRAMES}", "horizontal-speed=4", "!",
         f"video/x-raw,width={WIDTH},height={HEIGHT},framerate=30/1", "!", "x264enc", "!", "mp4mux", "!",
         "filesink", f"location={video}"])
    root = dest + PREFIX
    nm = _sh(["nm", "-A", os.path.join(root, "lib", "libvicmae-video.a")])
    san = [f for f, sym in (("address", "__asan_"), ("undefined", "__ubsan_")) if sym in nm]
    _state.update(tmp=tmp, dest=dest, root=root, video=video,
                  san=[f"-fsanitize={','.join(san)}"] if san else [],
                  env=dict(os.environ, PKG_CONFIG_PATH=os.path.join(root, "lib", "pkgconfig")),
                  run_env=dict(os.environ, LD_LIBRARY_PATH=os.path.join(root, "lib")))
    return _state


def _pkg_config(*args):
    st = _setup()
    return _sh(["pkg-config", *args, "vicmae-video"], env=st["env"]).split()


def _build(name, static):
    """tools/pkgconfig_example.c copied out of the tree and built in its own directory."""
    st = _setup()
    d = os.path.join(st["tmp"], name)
    os.makedirs(d)
    shutil.copy(os.path.join(ROOT, "tools", "pkgconfig_example.c"), d)
    libs = _pkg_config("--static", "--libs") if static else _pkg_config("--libs")
    if static:  # the archive in place of -lvicmae-video, which would pick the .so beside it
        assert "-lvicmae-video" in libs, libs
        libs = ["-l:libvicmae-video.a" if a == "-lvicmae-video" else a for a in libs]
    _sh(["cc", "-std=c11", "-Wall", "-Wextra", "-Werror", *st["san"], "-o", name, "pkgconfig_example.c",
         *_pkg_config("--cflags"), *libs], cwd=d)
    exe = os.path.join(d, name)
    needed = re.findall(r"\(NEEDED\).*\[(.*)\]", _sh(["readelf", "-d", exe]))
    return exe, needed


def _run(exe):
    st = _setup()
    out = _sh([exe, st["video"]], env=st["run_env"], cwd=os.path.dirname(exe))
    lines = out.splitlines()
    assert len(lines) == 2, out
    m = re.fullmatch(r"frames (\d+) size (\d+)x(\d+)", lines[0])
    assert m, lines[0]
    assert [int(g) for g in m.groups()] == [FRAMES, 128, 96], lines[0]  # short side 96, 4:3 kept
    m = re.fullmatch(r"clip (\d+) x (\d+) x (\d+) x 3 frames ([\d ]+) crop (\d+) (\d+) (\d+) (\d+) flip ([01]) "
                     r"mean ([\d.]+) hash ([0-9a-f]{16})", lines[1])
    assert m, lines[1]
    assert (int(m[1]), int(m[2]), int(m[3])) == (4, 64, 64), lines[1]  # T = clip_len, S = img_size
    frames = [int(f) for f in m[4].split()]
    assert len(frames) == 4 and all(b - a == 2 for a, b in zip(frames, frames[1:])), frames  # clip_stride
    assert 0 <= frames[0] and frames[-1] < FRAMES, frames
    x, y, w, h = (int(m[i]) for i in range(5, 9))
    assert w > 0 and h > 0 and x + w <= 128 and y + h <= 96, (x, y, w, h)  # inside the decoded frame
    assert 5 < float(m[10]) < 250, lines[1]  # colour bars, not a zeroed buffer
    return lines


@test
def test_install_layout():
    st = _setup()
    lib = os.path.join(st["root"], "lib")
    assert os.path.islink(os.path.join(lib, "libvicmae-video.so"))
    assert os.readlink(os.path.join(lib, "libvicmae-video.so.0")) == "libvicmae-video.so.0.1.0"
    soname = re.findall(r"\(SONAME\).*\[(.*)\]", _sh(["readelf", "-d", os.path.join(lib, "libvicmae-video.so")]))
    assert soname == ["libvicmae-video.so.0"], soname
    for h in HEADERS:
        text = open(os.path.join(st["root"], "include", "vicmae", h)).read()
        assert not re.search(r'^#include "', text, re.M), f"{h} keeps a project-relative include"
    assert not os.path.exists(os.path.join(st["root"], "include", "vicmae", "sampler", "internal.h"))
    # the shared library exports the installed headers' functions, under the ABI's version node
    declared = "".join(open(os.path.join(st["root"], "include", "vicmae", h)).read() for h in HEADERS)
    syms = [line.split() for line in _sh(["nm", "-D", "--defined-only", os.path.join(lib, "libvicmae-video.so")])
            .splitlines()]
    funcs = [s[2] for s in syms if len(s) == 3 and s[1] != "A"]
    assert funcs and all(f.endswith("@@VICMAE_VIDEO_0") for f in funcs), funcs
    leaked = [f for f in (f.split("@")[0] for f in funcs) if not re.search(rf"\b{f}\b", declared)]
    assert not leaked, f"exported but in no installed header: {leaked}"
    pc = open(os.path.join(lib, "pkgconfig", "vicmae-video.pc")).read()
    assert "prefix=${pcfiledir}/../..\n" in pc and "libdir=${prefix}/lib\n" in pc, pc
    for want in ("gstreamer-1.0", "gstreamer-app-1.0", "libxxhash", "liblz4", "libpng", "inih"):
        assert re.search(rf"^Requires\.private:.*\b{re.escape(want)}\b", pc, re.M), f"{want} missing:\n{pc}"
    assert re.search(r"^Libs\.private:.*-lyuv", pc, re.M), pc
    inc = _pkg_config("--cflags")[0]
    assert inc.startswith("-I") and os.path.samefile(inc[2:], os.path.join(st["root"], "include")), inc
    assert os.path.samefile(_pkg_config("--variable=libdir")[0], lib)


@test
def test_headers_compile_alone():
    # Each header first in its own translation unit (C11, -Werror); a decoy common/error.h on the
    # include path (a user's own) must not be picked up in place of ours.
    st = _setup()
    d = os.path.join(st["tmp"], "headers")
    os.makedirs(os.path.join(d, "decoy", "common"))
    open(os.path.join(d, "decoy", "common", "error.h"), "w").write('#error "the user\'s common/error.h"\n')
    for h in HEADERS:
        src = os.path.join(d, "one.c")
        open(src, "w").write(f"#include <vicmae/{h}>\nint vm_header_check;\n")
        _sh(["cc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-fsyntax-only", "-Idecoy", *_pkg_config("--cflags"),
             "one.c"], cwd=d)


@test
def test_cplusplus_program():
    # The headers declare C linkage under C++ (a C++ extension or tool links the library as is):
    # every header in one C++17 unit, a call through each of three of them, linked and run.
    st = _setup()
    if not shutil.which("c++"):
        skip("c++ not installed")
    d = os.path.join(st["tmp"], "cplusplus")
    os.makedirs(d)
    includes = "".join(f"#include <vicmae/{h}>\n" for h in HEADERS)
    open(os.path.join(d, "one.cc"), "w").write(includes + """#include <cstdio>
int main() {
    vm_decoder_options o;
    vm_decoder_options_default(&o);
    vm_rng r;
    vm_rng_init(&r, 7, 0);
    std::printf("%s %d\\n", vm_strerror(0), (int)vm_rng_int(&r, 3, 3));
    return 0;
}
""")
    _sh(["c++", "-std=c++17", "-Wall", "-Werror", *st["san"], "-o", "one", "one.cc", *_pkg_config("--cflags", "--libs")],
        cwd=d)
    out = _sh([os.path.join(d, "one")], env=st["run_env"])
    assert out.endswith(" 3\n"), out


@test
def test_shared_and_static_programs():
    exe_so, needed_so = _build("shared", static=False)
    exe_a, needed_a = _build("static", static=True)
    assert "libvicmae-video.so.0" in needed_so, needed_so
    assert not any(n.startswith("libvicmae-video") for n in needed_a), needed_a
    out_so, out_a = _run(exe_so), _run(exe_a)
    assert out_so == out_a, f"shared: {out_so}\nstatic: {out_a}"


@test
def test_uninstall():
    st = _setup()
    _make("uninstall", dest=st["dest"])
    left = [os.path.join(dp, f) for dp, _, fs in os.walk(st["dest"]) for f in fs]
    assert not left, left
    assert not os.path.exists(os.path.join(st["root"], "include", "vicmae"))


if __name__ == "__main__":
    run()
