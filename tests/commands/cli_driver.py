"""Run many ``descentlab`` command lines, each in a process of its own, cheaply.

``python -m tests.commands.cli_driver [--hide MOD,MOD]`` reads a JSON list of
cases (``{"argv": [...], "hide": [...]}``) on stdin and prints a JSON list of
``{"returncode", "stdout", "stderr"}``. It imports descentlab (and torch) once,
then forks a child per case that runs ``python -m descentlab ARGV`` exactly as
the console does (``runpy``, ``SystemExit``, an uncaught exception printed as
a traceback with status 1), with its own stdout and stderr files. ``--hide``
makes packages uninstalled before descentlab is imported, as on a machine
where they were never installed; a case's ``hide`` does so in its child only.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import runpy
import sys
import tempfile
import traceback

# other top-level names a distribution installs (its own folders and its metadata)
_ALSO = {
    "sklearn": ["scikit_learn"],
    "matplotlib": ["mpl_toolkits"],
    "psycopg": ["psycopg_binary"],
    "psycopg2": ["psycopg2_binary"],
}


def _key(entry: str) -> str:
    return entry.split("-")[0].split(".")[0].lower()


def hide(names: list[str]) -> None:
    """Make ``names`` (top-level packages) uninstalled for this process from now on.

    Every ``site-packages`` folder on ``sys.path`` is replaced by a folder of
    links to its entries except those of the hidden distributions, so that
    imports and ``importlib.util.find_spec`` see them exactly as missing.
    """
    if not names:
        return
    hidden = {n.lower() for n in names} | {a for n in names for a in _ALSO.get(n, [])}
    for i, entry in enumerate(list(sys.path)):
        if not entry.rstrip("/").endswith("site-packages") or not os.path.isdir(entry):
            continue
        view = tempfile.mkdtemp(prefix="descentlab-site-")
        for item in os.listdir(entry):
            if _key(item) not in hidden:
                os.symlink(os.path.join(entry, item), os.path.join(view, item))
        sys.path[i] = view
    for module in [m for m in sys.modules if _key(m) in hidden]:
        del sys.modules[module]
    sys.path_importer_cache.clear()
    importlib.invalidate_caches()


def _child(case: dict, out: int, err: int) -> None:
    os.dup2(out, 1)
    os.dup2(err, 2)
    code = 1
    try:
        hide(case.get("hide", []))
        sys.argv = ["descentlab", *case["argv"]]
        runpy.run_module("descentlab", run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def run_case(case: dict) -> dict:
    """Fork, run one command line in the child, return its exit status and output."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(case, out.fileno(), err.fileno())
        _, status = os.waitpid(pid, 0)
        out.seek(0)
        err.seek(0)
        return {
            "returncode": os.waitstatus_to_exitcode(status),
            "stdout": out.read().decode(errors="replace"),
            "stderr": err.read().decode(errors="replace"),
        }


def main() -> None:
    """Read the cases, run each, print the results as JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--hide", default="")
    args = parser.parse_args()
    hide([n for n in args.hide.split(",") if n])
    import descentlab.cli  # noqa: F401  (imported once, before the children fork)

    cases = json.load(sys.stdin)
    results = [run_case(case) for case in cases]
    sys.stdout.write(json.dumps(results))


if __name__ == "__main__":
    main()
