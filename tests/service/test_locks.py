"""The hash locks agree with pyproject.toml: a dependency added or narrowed there without `make lock`
fails here (and `pip check` in the Makefile), instead of installing versions nobody chose."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^(?P<name>[A-Za-z0-9._-]+)==(?P<version>\S+)(?: ; (?P<marker>[^\\]+?))? \\$")
HASH = re.compile(r"^    --hash=sha256:[0-9a-f]{64}(?: \\)?$")


@dataclass(frozen=True)
class Pin:
    name: str
    version: Version
    marker: str | None
    hashes: int


def read_lock(filename: str) -> list[Pin]:
    """The lock's pins, each with its count of hashes; any other line must be a comment."""
    entries: list[tuple[re.Match[str], int]] = []
    for line in (ROOT / filename).read_text().splitlines():
        if m := PIN.match(line):
            entries.append((m, 0))
        elif HASH.match(line):
            assert entries, f"{filename}: hash before any pin"
            entries[-1] = (entries[-1][0], entries[-1][1] + 1)
        else:
            assert not line or line.lstrip().startswith("#"), f"{filename}: unexpected line {line!r}"
    return [
        Pin(canonicalize_name(m["name"]), Version(m["version"]), m["marker"], hashes) for m, hashes in entries
    ]


def pyproject() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def requirements(group: str | None) -> list[Requirement]:
    project = pyproject()["project"]
    assert isinstance(project, dict)
    raw = project["dependencies"] if group is None else project["optional-dependencies"][group]
    return [Requirement(r) for r in raw]


def build_requirements() -> list[Requirement]:
    build = pyproject()["build-system"]
    assert isinstance(build, dict)
    return [Requirement(r) for r in build["requires"]]


def by_name(pins: list[Pin]) -> dict[str, list[Pin]]:
    out: dict[str, list[Pin]] = {}
    for pin in pins:
        out.setdefault(pin.name, []).append(pin)
    return out


@pytest.mark.parametrize("filename", ["requirements.lock", "requirements-dev.lock"])
def test_every_pin_is_exact_and_hashed(filename: str) -> None:
    pins = read_lock(filename)
    assert pins, filename
    for pin in pins:
        assert pin.hashes >= 1, f"{filename}: {pin.name} has no hash"


@pytest.mark.parametrize(
    ("filename", "groups"),
    [("requirements.lock", [None]), ("requirements-dev.lock", [None, "dev"])],
)
def test_lock_satisfies_pyproject_ranges(filename: str, groups: list[str | None]) -> None:
    locked = by_name(read_lock(filename))
    # setuptools is installed without build isolation, so the lock must hold the build backend too.
    wanted = [r for g in groups for r in requirements(g)] + [
        r for r in build_requirements() if canonicalize_name(r.name) == "setuptools"
    ]
    for req in wanted:
        pins = locked.get(canonicalize_name(req.name))
        assert pins, f"{req.name} is in pyproject.toml but not in {filename}: run `make lock`"
        for pin in pins:
            assert req.specifier.contains(pin.version, prereleases=True), (
                f"{filename} pins {pin.name}=={pin.version} outside {req}: run `make lock`"
            )


def test_runtime_lock_pins_the_dev_locks_versions() -> None:
    """Production runs exactly what `make test` tested."""
    dev = by_name(read_lock("requirements-dev.lock"))
    for name, pins in by_name(read_lock("requirements.lock")).items():
        runtime_versions = {p.version for p in pins}
        dev_versions = {p.version for p in dev.get(name, [])}
        assert runtime_versions == dev_versions, f"{name}: runtime {runtime_versions} vs dev {dev_versions}"


def test_runtime_lock_holds_no_dev_tool() -> None:
    runtime = by_name(read_lock("requirements.lock"))
    for req in requirements("dev"):
        name = canonicalize_name(req.name)
        if name not in {canonicalize_name(r.name) for r in requirements(None)}:
            assert name not in runtime, f"dev tool {req.name} is in requirements.lock"
