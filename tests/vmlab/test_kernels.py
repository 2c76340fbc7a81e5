"""KERNEL specs resolve against a /boot directory: image paths, releases, prefixes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tracekit.vmlab import KernelNotFound, installed_releases, resolve_kernel


@pytest.fixture
def boot(tmp_path: Path) -> Path:
    for release in ("6.1.0-9-amd64", "6.1.0-57-amd64", "6.12.111+deb12-amd64", "6.12.9+deb12-amd64"):
        (tmp_path / f"vmlinuz-{release}").write_bytes(b"image")
    (tmp_path / "initrd.img-6.1.0-57-amd64").write_bytes(b"initrd")
    return tmp_path


def test_releases_sort_naturally(boot: Path) -> None:
    assert installed_releases(boot) == [
        "6.1.0-9-amd64", "6.1.0-57-amd64", "6.12.9+deb12-amd64", "6.12.111+deb12-amd64",
    ]


def test_prefix_picks_the_newest_release_at_a_component_boundary(boot: Path) -> None:
    kernel = resolve_kernel("6.1", boot=boot)
    assert kernel.release == "6.1.0-57-amd64"
    assert kernel.image == boot / "vmlinuz-6.1.0-57-amd64"
    assert kernel.initrd == boot / "initrd.img-6.1.0-57-amd64"
    assert resolve_kernel("6.12", boot=boot).release == "6.12.111+deb12-amd64"


def test_exact_release_and_missing_initrd(boot: Path) -> None:
    kernel = resolve_kernel("6.1.0-9-amd64", boot=boot)
    assert (kernel.release, kernel.initrd) == ("6.1.0-9-amd64", None)


def test_image_path_finds_its_sibling_initrd(boot: Path) -> None:
    kernel = resolve_kernel(str(boot / "vmlinuz-6.1.0-57-amd64"), boot=boot)
    assert kernel.release == "6.1.0-57-amd64" and kernel.initrd == boot / "initrd.img-6.1.0-57-amd64"
    custom = boot / "bzImage"
    custom.write_bytes(b"image")
    assert resolve_kernel(str(custom), boot=boot) == resolve_kernel(custom, boot=boot)
    assert resolve_kernel(str(custom), boot=boot).release is None


def test_unknown_kernel_names_what_is_installed(boot: Path) -> None:
    with pytest.raises(KernelNotFound, match=r"no kernel '5\.10'.*installed: 6\.1\.0-9-amd64"):
        resolve_kernel("5.10", boot=boot)
    with pytest.raises(KernelNotFound, match="no such kernel image"):
        resolve_kernel(str(boot / "missing"), boot=boot)
    with pytest.raises(KernelNotFound, match="no kernel '6.1'"):
        resolve_kernel("6.1", boot=boot / "empty")
