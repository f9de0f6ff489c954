"""The rule that flags a SpRAy cluster as a possible shortcut, and its thresholds.

Its own module, free of numpy and scikit-learn, so that the command line can show the defaults in
`camcli audit --help` without importing them.
"""

from __future__ import annotations

from dataclasses import dataclass

from camcli.options import AuditOptions, field_default

BORDER_BAND = 1 / 8  # the border: the outer eighth of each side of the map (44% of its area)
CORNER_SIDE = 1 / 4  # a corner: the square of a quarter of each side at each corner (25% of the area)


MIN_MEMBERS = 3  # a flag judges a cluster of at least this many images, never one image


@dataclass(frozen=True)
class FlagRule:
    """When a shortcut is flagged (camcli.audit.spray reads it; camcli.audit.signals measures).

    With the images' pixels (the images can be read), a pile-up of a class's maps is flagged when:
    - one place: at least MIN_PILE (camcli.audit.signals) maps peak within `max_spread` of the map's side of
      one another (objects move from picture to picture; a tag, a logo or a watermark does not);
    - a repeated pattern: the pixels there are alike across its images, the median of each image's cosine
      similarity to the others' at the best window (shifts allowed) at least `min_pattern` (instances of an
      object differ; copies of a mark do not);
    - the answer follows it, where the audit has the model: covering the mark changes the top-1 of at least
      `min_reliance` of its images (camcli.audit.reliance).
    A SpRAy cluster of at least MIN_MEMBERS maps shows the flag when at least half of them are in flagged
    pile-ups. Nothing asks the shortcut to be rare or at the border: one that most of a class relies on, or
    one in the middle of the picture, is flagged like any other.

    Without the pixels (an output folder whose images have moved), the border rule judges the clusters: at
    least MIN_MEMBERS maps, tight (the mean cosine similarity of its maps to their mean at least
    `min_tightness`), small (at most `max_share` of the class) and away (the share of its mean map in the
    border band exceeds that of the rest of the class by at least `min_away`).

    The defaults were set on generated scenes (benchmarks/audit.py, `make bench-audit`).
    """

    max_share: float = field_default(AuditOptions, "max_share")
    min_tightness: float = field_default(AuditOptions, "min_tightness")
    min_away: float = field_default(AuditOptions, "min_away")
    max_spread: float = field_default(AuditOptions, "max_spread")
    min_pattern: float = field_default(AuditOptions, "min_pattern")
    min_reliance: float = field_default(AuditOptions, "min_reliance")

    @classmethod
    def of(cls, audit: AuditOptions) -> FlagRule:
        return cls(audit.max_share, audit.min_tightness, audit.min_away, audit.max_spread, audit.min_pattern,
                   audit.min_reliance)

    def record(self) -> dict:
        return {"max_share": self.max_share, "min_tightness": self.min_tightness, "min_away": self.min_away,
                "max_spread": self.max_spread, "min_pattern": self.min_pattern, "min_reliance": self.min_reliance,
                "min_members": MIN_MEMBERS,
                "border_band": BORDER_BAND, "corner_side": CORNER_SIDE}


DEFAULT_RULE = FlagRule()
