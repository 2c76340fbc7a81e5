"""Which kernel a guest boots: `resolve_kernel("6.1")` -> the image and initrd under /boot.

A KERNEL is named by
- a path to a kernel image (`/boot/vmlinuz-6.1.0-57-amd64`, or a self-built `bzImage`); its
  initrd is the sibling `initrd.img-RELEASE` when there is one;
- a release installed under /boot (`6.1.0-57-amd64`, what `uname -r` prints in the guest);
- a prefix of installed releases (`6.1`, `6.12`): the newest installed release that starts with
  it, where the prefix ends at a component boundary (`6.1` does not pick `6.12.111+deb12-amd64`).
  Distributions move their package versions, so callers and tests name kernels this way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tracekit.vmlab.errors import KernelNotFound

__all__ = ["GuestKernel", "installed_releases", "resolve_kernel", "BOOT"]

BOOT = Path("/boot")
_IMAGE_PREFIX = "vmlinuz-"
_INITRD_PREFIX = "initrd.img-"


@dataclass(frozen=True)
class GuestKernel:
    """A bootable kernel: its image, its initrd (None: boot without one), and its release when known."""

    image: Path
    initrd: Path | None
    release: str | None

    def __str__(self) -> str:
        return self.release or str(self.image)


def _version_key(release: str) -> tuple:
    """Order releases naturally: 6.1.0-9 < 6.1.0-57, 6.1 < 6.12."""
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in re.findall(r"\d+|\D+", release))


def installed_releases(boot: Path = BOOT) -> list[str]:
    """Releases with a kernel image under `boot`, oldest first."""
    if not boot.is_dir():
        return []
    releases = [p.name[len(_IMAGE_PREFIX):] for p in boot.glob(_IMAGE_PREFIX + "*") if p.is_file()]
    return sorted(releases, key=_version_key)


def _initrd_for(image: Path, release: str | None) -> Path | None:
    if release is None:
        return None
    initrd = image.parent / f"{_INITRD_PREFIX}{release}"
    return initrd if initrd.is_file() else None


def _matches_prefix(release: str, prefix: str) -> bool:
    if not release.startswith(prefix):
        return False
    rest = release[len(prefix):]
    return rest == "" or not (rest[0].isdigit() and prefix[-1:].isdigit())


def resolve_kernel(spec: str | Path, *, boot: Path = BOOT) -> GuestKernel:
    """The kernel `spec` names (an image path, an installed release or a release prefix)."""
    text = str(spec)
    if not text:
        raise KernelNotFound("no kernel given: name an image file, a release under /boot or a prefix such as 6.1")
    path = Path(text)
    if "/" in text or path.is_file():
        if not path.is_file():
            raise KernelNotFound(f"{text}: no such kernel image")
        release = path.name[len(_IMAGE_PREFIX):] if path.name.startswith(_IMAGE_PREFIX) else None
        return GuestKernel(image=path.resolve(), initrd=_initrd_for(path.resolve(), release), release=release)
    releases = installed_releases(boot)
    if text in releases:
        chosen = text
    else:
        candidates = [r for r in releases if _matches_prefix(r, text)]
        if not candidates:
            installed = ", ".join(releases) or "none"
            raise KernelNotFound(f"no kernel {text!r} under {boot} (installed: {installed})")
        chosen = candidates[-1]
    image = boot / f"{_IMAGE_PREFIX}{chosen}"
    return GuestKernel(image=image, initrd=_initrd_for(image, chosen), release=chosen)
