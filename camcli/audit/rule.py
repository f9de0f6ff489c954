"""The rule that flags a SpRAy cluster as a possible shortcut, and its thresholds.

Its own module, free of numpy and scikit-learn, so that the command line can show the defaults in
`camcli audit --help` without importing them.
"""

from __future__ import annotations

from dataclasses import dataclass

from camcli.options import AuditOptions, field_default

BORDER_BAND = 1 / 8  # the border: the outer eighth of each side of the map (44% of its area)
CORNER_SIDE = 1 / 4  # a corner: the square of a quarter of each side at each corner (25% of the area)


@dataclass(frozen=True)
class FlagRule:
    """When a cluster is flagged: all three hold.

    - small: it holds at most `max_share` of the class's maps;
    - tight: its maps are alike, the mean cosine similarity of its maps to their mean is at least
      `min_tightness` (a shortcut such as a tag gives near-identical maps; maps of an object that moves
      about the picture do not);
    - away: its mass sits at the border, where the class's other maps do not look: the share of its mean
      map in the border band exceeds that of the rest of the class (every map of the class outside the
      cluster) by at least `min_away`.

    The reference is the rest of the class, not its largest cluster: a tag that sits in any of four
    corners splits into four clusters, and when the tagged images are many, the largest cluster can be
    one of them. A cluster is never judged alone, and a single image is never judged at all.
    The defaults were set on generated scenes (benchmarks/audit.py, `make bench-audit`), where the
    clusters of tagged scenes had tightness 0.95-0.99 and border share 0.66-0.77, and the clean scenes'
    clusters at most 0.93 and 0.35.
    """

    max_share: float = field_default(AuditOptions, "max_share")
    min_tightness: float = field_default(AuditOptions, "min_tightness")
    min_away: float = field_default(AuditOptions, "min_away")

    @classmethod
    def of(cls, audit: AuditOptions) -> FlagRule:
        return cls(audit.max_share, audit.min_tightness, audit.min_away)

    def record(self) -> dict:
        return {"max_share": self.max_share, "min_tightness": self.min_tightness, "min_away": self.min_away,
                "border_band": BORDER_BAND, "corner_side": CORNER_SIDE}


DEFAULT_RULE = FlagRule()
