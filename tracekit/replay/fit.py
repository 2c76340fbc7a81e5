"""The profile whose behaviour a trace fits best: for a trace whose kernel is unknown, or to check
what `auto` chose from a release (a distribution kernel may carry a later release's behaviour).

The trace is replayed under every profile; the best fit has the fewest mismatches, then the fewest
unknown decisions. Profiles that fit equally well are indistinguishable on this trace (it never
exercises what they switch); of those the newest is named, as `auto` does for a trace that does
not say its kernel, and the tie is reported.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from tracekit.kernel.bpf import Policy
from tracekit.kernel.profiles import PROFILES, Profile, profile_by_name

__all__ = ["ProfileFit", "ProfileScore", "best_fit", "fit_profile"]


@dataclass(frozen=True)
class ProfileScore:
    profile: str
    decisions: int
    mismatched: int
    unknown: int


@dataclass(frozen=True)
class ProfileFit:
    best: Profile
    scores: tuple[ProfileScore, ...]  # one per profile, oldest first
    tied: tuple[str, ...]  # the profiles that fit as well as `best` (best included)

    def describe(self) -> str:
        """One line for a report's "chosen by": every profile's mismatches, and the tie if any."""
        counts = ", ".join(f"{s.profile}: {s.mismatched}" for s in self.scores)
        text = f"best fit (mismatches per profile: {counts})"
        if len(self.tied) > 1:
            text += f"; {', '.join(self.tied)} fit equally, the newest is used"
        return text


def fit_profile(path: str | os.PathLike[str], *, policies: dict[str, Policy] | None = None) -> ProfileFit:
    """Replay `path` under every profile and name the one that fits best (see the module docstring)."""
    from tracekit.replay.api import replay

    scores = []
    for profile in PROFILES:
        summary = replay(path, profile=profile, policies=policies).summary
        scores.append(ProfileScore(profile.name, summary["decisions"], summary["mismatched"], summary["unknown"]))
    return best_fit(scores)


def best_fit(scores: list[ProfileScore]) -> ProfileFit:
    """The fit from every profile's score (oldest profile first): fewest mismatches, then fewest
    unknown decisions, the newest of a tie. Pure, so a fleet's scores can be summed over tasks
    (`tracekit.replay.distributed`) and judged the same way."""
    fewest = min((s.mismatched, s.unknown) for s in scores)
    tied = tuple(s.profile for s in scores if (s.mismatched, s.unknown) == fewest)
    return ProfileFit(profile_by_name(tied[-1]), tuple(scores), tied)
