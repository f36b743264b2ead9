"""Adafactor's C library (three passes per factored step): parity with torch.optim, its
independence of threads and stacking, and the eager fallback whenever it cannot be built."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

import descentlab
from descentlab.engine import native
from descentlab.rules import adafactor_kernel as fused
from tests.optim.helpers import float64_default, max_rel_diff

needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="no gcc on PATH")

#: a stack of three (each tensor's rows split among the threads), a 3-D tensor, matrices of
#: more than one block of rows, row and column vectors, a vector (unfactored, eager)
SHAPES = [(6, 4)] * 3 + [(2, 40, 33), (70, 37), (70, 37), (1, 9), (9, 1), (7,)]
SETTINGS = [{"lr": 0.05}, {"lr": 0.05, "weight_decay": 0.1, "beta2_decay": -0.5},
            {"lr": 0.02, "eps": (1e-20, 1e-2), "d": 2.0, "maximize": True}]


@pytest.fixture
def library(monkeypatch):
    """The library built (or loaded from the cache) and used for stacks of every size;
    counts the stacks it steps."""
    if fused.LIBRARY.wait() is None:
        pytest.fail(f"gcc is on PATH but the library did not build: {fused.LIBRARY.error}")
    monkeypatch.setattr(fused, "FUSED_MIN", 0)
    stepped = []
    descend = fused.descend
    monkeypatch.setattr(fused, "descend", lambda s, *a: stepped.append(s.param.shape)
                        or descend(s, *a))
    return stepped


@pytest.fixture
def rebuilt(monkeypatch, tmp_path):
    """An empty cache directory and a library that builds again (restored afterwards)."""
    monkeypatch.setenv("DESCENTLAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(fused, "FUSED_MIN", 0)
    fused.LIBRARY.reset()
    yield fused.LIBRARY
    monkeypatch.undo()
    fused.LIBRARY.reset()


def _params(shapes, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=torch.float64).to(dtype).requires_grad_()
            for s in shapes]


def _train(opt, params, dtype, start, steps):
    for t in range(start, start + steps):
        gen = torch.Generator().manual_seed(100 + t)
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen, dtype=torch.float64).to(dtype)
        opt.step()


def _run(cls, setting, dtype, shapes=SHAPES, steps=60, **extra):
    params = _params(shapes, dtype)
    opt = cls(params, **setting, **extra)
    _train(opt, params, dtype, 0, steps)
    return params, opt


@needs_gcc
@pytest.mark.parametrize("engine, setting, cached", [("flat", s, 1 << 20) for s in SETTINGS]
                         + [("reference", SETTINGS[1], 1 << 20), ("flat", SETTINGS[2], 0)],
                         ids=str)
def test_the_library_matches_torch_over_60_steps(library, engine, setting, cached,
                                                 monkeypatch):
    """‖θ‖² in pass 2 (θ and G in the cache until pass 3), or in pass 1 (``cached`` = 0)."""
    monkeypatch.setattr(fused, "CACHED", cached)
    with float64_default():
        ours, _ = _run(descentlab.Adafactor, setting, torch.float64, engine=engine)
        ref, _ = _run(torch.optim.Adafactor, setting, torch.float64)
    assert max_rel_diff(ours, ref) <= 1e-13  # measured ≤ 1.7e-15
    ours32, _ = _run(descentlab.Adafactor, setting, torch.float32, engine=engine)
    ref32, _ = _run(torch.optim.Adafactor, setting, torch.float32)
    assert max_rel_diff(ours32, ref32) <= 1e-6  # measured ≤ 2.8e-7
    assert {(3, 6, 4), (1, 2, 40, 33)} & set(library)  # the library stepped the matrices
    assert (1, 7) not in library and (7,) not in library


@needs_gcc
def test_a_clamped_estimate_takes_torchs_entry_by_entry_step(library):
    """A zero row and column of G (V̂ᵢⱼ = 0 < ε₁²): the library's sums, then torch's step."""
    def run(cls, **extra):
        params = _params([(40, 33)] * 3, torch.float64)
        opt = cls(params, lr=0.05, **extra)
        for t in range(20):
            gen = torch.Generator().manual_seed(100 + t)
            for k, p in enumerate(params):
                p.grad = torch.randn(p.shape, generator=gen, dtype=torch.float64)
                if k == 1 and t < 10:  # a row and a column without a gradient for a while
                    p.grad[2] = 0
                    p.grad[:, 3] = 0
            opt.step()
        return params

    with float64_default():
        ours, ref = run(descentlab.Adafactor, engine="flat"), run(torch.optim.Adafactor)
    assert max_rel_diff(ours, ref) <= 1e-13
    assert len(library) == 10  # steps 11-20: nothing clamped any more, the library's step


@needs_gcc
def test_a_matrix_gets_the_same_bits_on_any_thread_count_in_any_stack(library, monkeypatch):
    """Whole tensors per thread or the rows of each split among the threads, ‖θ‖² taken in
    pass 1 or in pass 2, one thread or two, alone or stacked with others: the same bits."""
    monkeypatch.setattr(fused, "GRAIN", 1)

    def run(count, threads, cached):
        monkeypatch.setattr(fused, "CACHED", cached)
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            params, _ = _run(descentlab.Adafactor, SETTINGS[1], torch.float32,
                             shapes=[(70, 37)] * count, steps=5, engine="flat")
        finally:
            torch.set_num_threads(previous)
        return params

    first = run(4, 1, 1 << 20)
    for count, threads, cached in [(4, 2, 1 << 20), (3, 2, 1 << 20), (1, 2, 0), (4, 2, 0),
                                   (3, 1, 0)]:
        assert torch.equal(run(count, threads, cached)[0], first[0]), (count, threads, cached)
    assert (4, 70, 37) in library and (3, 70, 37) in library


@needs_gcc
def test_resume_is_bit_identical(library):
    setting = SETTINGS[1]
    full, _ = _run(descentlab.Adafactor, setting, torch.float32, steps=30, engine="flat")
    part, opt = _run(descentlab.Adafactor, setting, torch.float32, steps=20, engine="flat")
    params = [p.detach().clone().requires_grad_() for p in part]
    resumed = descentlab.Adafactor(params, **setting, engine="flat")
    resumed.load_state_dict(opt.state_dict())
    _train(resumed, params, torch.float32, 20, 10)
    for x, y in zip(params, full, strict=True):
        assert torch.equal(x, y)


@needs_gcc
def test_autograd_sees_the_update_as_after_torchs_in_place_step(library):
    """A graph that saved the parameter before a step: backward refuses, as with torch.optim."""
    w = torch.randn(70, 37, requires_grad=True)
    opt = descentlab.Adafactor([w], engine="reference")
    y = (w * w).sum()
    w.grad = torch.ones_like(w)
    opt.step()
    assert library == [(1, 70, 37)]
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward()


def _fake_compiler(tmp_path, body: str) -> str:
    """An executable that answers ``--version`` and otherwise runs ``body`` (sh) with $OUT
    set to the ``-o`` argument."""
    path = tmp_path / "fake-gcc"
    path.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        if [ "$1" = "--version" ]; then echo "fake 1.0"; exit 0; fi
        OUT=""
        while [ $# -gt 0 ]; do
            if [ "$1" = "-o" ]; then OUT="$2"; fi
            shift
        done
        {body}
        """))
    path.chmod(0o755)
    return str(path)


def _eager_matches_torch():
    with float64_default():
        ours, _ = _run(descentlab.Adafactor, SETTINGS[1], torch.float64, steps=10)
        ref, _ = _run(torch.optim.Adafactor, SETTINGS[1], torch.float64, steps=10)
    return max_rel_diff(ours, ref) <= 1e-13


@pytest.mark.parametrize("cause", ["no compiler", "compiler fails", "DESCENTLAB_NATIVE=0"])
def test_without_the_library_the_eager_path_runs_and_says_why(rebuilt, cause, tmp_path,
                                                              monkeypatch, caplog):
    if cause == "no compiler":
        monkeypatch.setattr(native, "COMPILER", str(tmp_path / "no-such-gcc"))
    elif cause == "compiler fails":
        monkeypatch.setattr(native, "COMPILER", _fake_compiler(
            tmp_path, 'echo "broken.c:1: error: nothing works" >&2; exit 1'))
    else:
        monkeypatch.setenv("DESCENTLAB_NATIVE", "0")
    with caplog.at_level(logging.DEBUG, logger="descentlab.native"):
        assert rebuilt.wait() is None
        assert _eager_matches_torch()
    expected = {"no compiler": "no C compiler", "compiler fails": "nothing works",
                "DESCENTLAB_NATIVE=0": "DESCENTLAB_NATIVE=0"}[cause]
    assert expected in rebuilt.error
    assert any(expected in r.getMessage() for r in caplog.records)
    assert not list((tmp_path / "cache").glob("**/*.so"))


def test_a_step_never_waits_for_the_build(rebuilt, tmp_path, monkeypatch):
    """The compiler blocks until told to go on: steps meanwhile are eager, and return."""
    go = tmp_path / "go"
    monkeypatch.setattr(native, "COMPILER", _fake_compiler(
        tmp_path, f'while [ ! -e "{go}" ]; do sleep 0.05; done; exit 1'))
    assert _eager_matches_torch()  # ten steps while the build is held
    assert not rebuilt.ready and rebuilt.error is None
    go.touch()
    assert rebuilt.wait(timeout=60) is None and "exited with 1" in rebuilt.error


@needs_gcc
def test_a_build_killed_midway_leaves_no_library_and_the_next_one_builds(rebuilt, tmp_path):
    """The process building is killed while the compiler has written half a library: the
    cached name stays absent, and a later process builds and loads it."""
    cache = tmp_path / "cache"
    wrote = tmp_path / "wrote"
    compiler = _fake_compiler(tmp_path, f'printf "half a library" > "$OUT"; touch "{wrote}"; '
                                        "sleep 120")
    code = ("import descentlab.engine.native as n, descentlab.rules.adafactor_kernel as k; "
            f"n.COMPILER = {compiler!r}; k.LIBRARY.wait()")
    env = {**os.environ, "DESCENTLAB_CACHE_DIR": str(cache)}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not wrote.exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the builder and its compiler, mid-build
        proc.wait()
    assert not [p for p in cache.glob("**/*") if p.is_file()]  # nothing, not even a temporary
    assert rebuilt.wait() is not None, rebuilt.error
    assert len(list(cache.glob("**/adafactor-*.so"))) == 1


@needs_gcc
def test_a_build_removes_old_leftover_temporaries_of_its_library_only(rebuilt, tmp_path):
    """Temporary files of a build killed inside the copy: an hour old, removed by the next
    build of the same library; a young one (a build running elsewhere) and another
    library's stay."""
    folder = tmp_path / "cache" / "native"
    folder.mkdir(parents=True)
    old = folder / ".adafactor-0123.so.abc.tmp"
    young = folder / ".adafactor-0123.so.def.tmp"
    other = folder / ".slot_check-0123.so.ghi.tmp"
    for path in (old, young, other):
        path.write_bytes(b"half")
    hours_ago = time.time() - native.STALE_SECONDS - 60
    os.utime(old, (hours_ago, hours_ago))
    os.utime(other, (hours_ago, hours_ago))
    assert rebuilt.wait() is not None, rebuilt.error
    assert not old.exists() and young.exists() and other.exists()


@needs_gcc
def test_a_library_in_the_cache_is_used_from_the_first_step(rebuilt, monkeypatch):
    """Once built, a new process (here: a reset library) loads it at its first call, so its
    first step already takes the library's passes and no result depends on a thread's timing."""
    assert rebuilt.wait() is not None, rebuilt.error
    rebuilt.reset()
    assert rebuilt.get() is not None and rebuilt._thread is None
    stepped = []
    descend = fused.descend
    monkeypatch.setattr(fused, "descend", lambda s, *a: stepped.append(s.param.shape)
                        or descend(s, *a))
    _run(descentlab.Adafactor, SETTINGS[0], torch.float32, shapes=[(70, 37)], steps=1)
    assert stepped == [(1, 70, 37)]
