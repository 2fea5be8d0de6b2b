"""Run pygrad's Python tests on every CPython from 3.9 to 3.13 that this machine has.

    python tests/python_versions.py [--versions 3.9 3.10 ...] [--dir build/versions]
                                    [--except-running]
                                    [--pytest-args '-q -m "not slow"']

`make versions` runs it. For each version: the newest pyenv install of it (else
python3.X on PATH), a new virtual environment without the system's packages, the test
dependencies, pygrad built from this tree by that interpreter (`pip install .`), then
pytest from tests/ with the given arguments. torch only where a wheel of it lies on
this machine's disk for that Python (pip would otherwise download a CUDA build of
several GB); its tests skip elsewhere. One line per version; the whole log of each is
in DIR/3.X.log. Exits non-zero if any version present failed.
"""
import argparse
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
VERSIONS = ["3.9", "3.10", "3.11", "3.12", "3.13"]
TEST_DEPS = ["pytest", "hypothesis", "numpy", "micrograd==0.1.0", "graphviz"]
TORCH = "torch==2.13.0"
DEFAULT_PYTEST_ARGS = '-q -m "not slow"'  # the fast tier, as make check runs it
PYTEST_TIMEOUT = 45 * 60  # seconds, for one version's run


def oldest_supported():
    """(3, 9) from pyproject's requires-python = ">=3.9"."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    major, minor = re.search(r'^requires-python = ">=(\d+)\.(\d+)"$', pyproject, re.M).groups()
    return int(major), int(minor)


def find_python(version):
    """The newest pyenv install of CPython `version`, else python{version} on PATH."""
    pyenv_root = pathlib.Path(os.environ.get("PYENV_ROOT", pathlib.Path.home() / ".pyenv"))
    installs = []
    for prefix in (pyenv_root / "versions").glob(f"{version}.*"):
        patch = prefix.name[len(version) + 1:]
        executable = prefix / "bin" / f"python{version}"
        if patch.isdigit() and executable.exists():
            installs.append((int(patch), str(executable)))
    candidates = ([exe for _, exe in sorted(installs, reverse=True)]
                  + [shutil.which(f"python{version}")])
    for executable in filter(None, candidates):
        run = subprocess.run(
            [executable, "-c", "import platform; print(platform.python_version())"],
            capture_output=True, text=True)
        if run.returncode == 0 and run.stdout.startswith(version + "."):
            return executable, run.stdout.strip()
    return None, None


class SetupFailed(Exception):
    pass


def run_logged(command, log, cwd=ROOT, timeout=None, check=True):
    log.write(f"\n$ {shlex.join(map(str, command))}\n")
    log.flush()
    done = subprocess.run(command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, timeout=timeout)
    if check and done.returncode != 0:
        raise SetupFailed(f"`{shlex.join(map(str, command[:6]))} ...` exited {done.returncode}")
    return done.returncode


def set_up(python, venv, log):
    """A new venv holding the test dependencies and pygrad; whether torch is in it."""
    run_logged([python, "-m", "venv", "--clear", venv], log)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
    run_logged(pip + ["install", "--quiet"] + TEST_DEPS, log)
    run_logged(pip + ["install", "--quiet", "."], log)
    dry_run = ["install", "--dry-run", "--quiet", "--no-index", "--no-deps", TORCH]
    torch_on_disk = run_logged(pip + dry_run, log, check=False) == 0
    if torch_on_disk:
        run_logged(pip + ["install", "--quiet", TORCH], log)
    return torch_on_disk


def pytest_summary(log_path):
    """pytest's closing counts and the ids of the tests that failed or errored."""
    text = log_path.read_text(errors="replace")
    counts = re.findall(r"^=*\s*(\d+ "
                        r"(?:passed|failed|error|errors|skipped|xfailed|xpassed|deselected)"
                        r"(?:, \d+ \w+)*) in [\d.]+s", text, re.M)
    failing = re.findall(r"^(?:FAILED|ERROR) (\S+)", text, re.M)
    return (counts[-1] if counts else "no pytest summary"), failing


def run_version(version, directory, pytest_args):
    if tuple(map(int, version.split("."))) < oldest_supported():
        return None, f"{version}: below requires-python, skipped"
    python, full_version = find_python(version)
    if python is None:
        return None, f"{version}: not present, skipped"
    venv = directory / f"py{version}"
    log_path = directory / f"{version}.log"
    with open(log_path, "w") as log:
        try:
            torch = set_up(python, venv, log)
        except (SetupFailed, subprocess.TimeoutExpired) as error:
            return False, f"{full_version}: FAILED to set up ({error}); see {log_path}"
        try:
            pytest = [str(venv / "bin" / "python"), "-m", "pytest", "-rfEs"]
            code = run_logged(pytest + shlex.split(pytest_args),
                              log, cwd=ROOT / "tests", timeout=PYTEST_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            return False, (f"{full_version}: FAILED (pytest ran past {PYTEST_TIMEOUT} s); "
                           f"see {log_path}")
    counts, failing = pytest_summary(log_path)
    torch_note = "with torch" if torch else "without torch"
    if code == 0:
        return True, f"{full_version}: passed ({counts}, {torch_note})"
    names = ", ".join(failing) if failing else f"pytest exited {code}"
    return False, f"{full_version}: FAILED ({counts}, {torch_note}): {names}; see {log_path}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", nargs="+", default=VERSIONS)
    parser.add_argument("--dir", default=str(ROOT / "build" / "versions"))
    parser.add_argument("--pytest-args", default=DEFAULT_PYTEST_ARGS)
    parser.add_argument("--except-running", action="store_true",
                        help="leave out this interpreter's version (make test ran all on it)")
    args = parser.parse_args()
    directory = pathlib.Path(args.dir).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    versions = args.versions
    if args.except_running:
        running = f"{sys.version_info.major}.{sys.version_info.minor}"
        versions = [v for v in versions if v != running]
        print(f"versions: {running}: the full tier ran on it, not run again", flush=True)
    passed = failed = 0
    for version in versions:
        outcome, line = run_version(version, directory, args.pytest_args)
        print(f"versions: {line}", flush=True)
        passed += outcome is True
        failed += outcome is False
    print(f"versions: {passed} passed, {failed} failed")
    sys.exit(1 if failed or not (passed or args.except_running) else 0)


if __name__ == "__main__":
    main()
