"""Check a built sdist's file list: the source tree's files, no fewer and no more.

    python tests/sdist_contents.py build/sdist-check/pygrad-0.1.0.tar.gz

Run by `make sdist-check` (not a pytest file: it checks an artifact the test suite
does not build). The source tree's files are git's (tracked, and untracked but not
ignored, so work in progress counts), less CI's own; without git, only the files
the build needs are required. Build output, caches and compiled objects must not be
in it, and its version must be pygrad/_version.py's.
"""
import pathlib
import re
import subprocess
import sys
import tarfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
NEEDED = ["pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "LICENSE", "CHANGELOG.md",
          "csrc/build.py", "pygrad/__init__.py", "pygrad/_version.py"]
NOT_SHIPPED = (".gitignore", ".ci/")                       # CI's and git's own files
MADE_BY_SDIST = ("PKG-INFO", "setup.cfg", "pygrad.egg-info/")
FORBIDDEN_DIRS = {"build", "dist", "out", "__pycache__", ".hypothesis", ".pytest_cache",
                  ".mypy_cache", ".ruff_cache"}
FORBIDDEN_SUFFIXES = (".pyc", ".pyo", ".so", ".o")


def source_version():
    text = (ROOT / "pygrad" / "_version.py").read_text()
    return re.search(r'^__version__ = "([^"]+)"$', text, re.M).group(1)


def source_files():
    """The tree's files as git sees them, or None when this is not a git checkout."""
    try:
        listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                                cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return {name for name in listed.splitlines()
            if not name.startswith(NOT_SHIPPED) and (ROOT / name).is_file()}


def needed_files():
    sources = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "csrc").glob("*.[ch]"))
    return set(NEEDED) | set(sources)


def check(sdist):
    version = source_version()
    top = f"pygrad-{version}"
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if m.isfile()]
        pkg_info = tar.extractfile(f"{top}/PKG-INFO").read().decode()
    problems = []
    names = set()
    for member in members:
        head, _, name = member.name.partition("/")
        if head != top:
            problems.append(f"{member.name}: outside {top}/")
            continue
        names.add(name)
    shipped = {name for name in names if not name.startswith(MADE_BY_SDIST)}
    for name in sorted(shipped):
        if FORBIDDEN_DIRS & set(name.split("/")[:-1]) or name.endswith(FORBIDDEN_SUFFIXES):
            problems.append(f"{name}: build output or a cache")
    if f"\nVersion: {version}\n" not in pkg_info:
        problems.append(f"PKG-INFO does not say Version: {version}")
    expected = source_files()
    if expected is None:
        print("not a git checkout: checking only the files the build needs")
        expected = needed_files()
        extra = set()
    else:
        missing_needed = needed_files() - expected
        problems += [f"{name}: needed by the build but not in the source tree"
                     for name in sorted(missing_needed)]
        extra = shipped - expected
    problems += [f"{name}: missing from the sdist" for name in sorted(expected - shipped)]
    problems += [f"{name}: in the sdist but not in the source tree" for name in sorted(extra)]
    return shipped, problems


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sdist = sys.argv[1]
    shipped, problems = check(sdist)
    for problem in problems:
        print(f"sdist_contents: {problem}")
    if problems:
        sys.exit(f"sdist_contents: {sdist}: {len(problems)} problem(s)")
    print(f"sdist_contents: {sdist}: {len(shipped)} files, the source tree's, and nothing else")


if __name__ == "__main__":
    main()
