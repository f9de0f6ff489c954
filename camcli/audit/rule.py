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
    """When a shortcut is flagged (camcli.audit.spray reads it; camcli.audit.signals measures; the constants
    named here live there, and in camcli.audit.reliance).

    With the images' pixels (the images can be read), per class:
    1. places: at least MIN_MEMBERS maps that peak within `max_spread` of the map's side of one another (at most
       spray.MAX_PLACES places, the most crowded first);
    2. a mark: at a place, the pictures whose pixels there match the others' (cosine similarity of the patches,
       colour channels centred, shifts of a cell or two allowed; the better of that and the same with each
       channel scaled to unit contrast, so that a one-colour mark matches on any background: signals.Template)
       at `min_pattern` or above carry it, as long as MIN_MEMBERS do; objects that happen to peak there do not.
       Marks of several places whose templates match are one mark (a tag in any corner); the mark is then looked
       for in every other map of the class, where it peaks and where the mark sits in the others, so that a
       carrier whose map peaks elsewhere joins;
    3. a fixed place: a copied mark stays put. A carrier counts only where its mark (moved onto its best match)
       lies within spray.SAME_PLACE of another carrier's, or near the edges at the same distances from them (a logo in
       whichever corner: spray.same_places); pictures that match at a place of their own (alike parts
       of moving objects) are left out and counted (PileUp.moving). At the places the carriers share, a picture
       carries the mark from spray.AT_PLACE_BAND below `min_pattern` up (a copy drawn over other content);
    4. flagged by its pattern when at least MIN_PILE pictures carry it and it is distinct: the carriers make up at
       least `min_distinct` of them and the pictures of the class that come near it (similarity within
       spray.NEAR_BAND below `min_pattern`). A copied mark matches or does not; instances of an object's edge make
       a continuum, as many near as matching. A mark that is not distinct is left to the model (5);
    5. with the model (the audit explains the images itself), each flagged mark, then each mark that is not
       distinct (at most spray.MODEL_TESTS per class, in that order, the most distinct first), is pasted into
       pictures of other classes (at most reliance.MAX_PASTE of the short side each way), and so is the same place
       of other pictures of other classes (the control): the mark is flagged when it turns at least `min_reliance`
       more of them into the class than the control does (reliance.MAX_TRANSFERRED pictures each), or at least
       `min_reliance_not_distinct` where its pattern is not distinct (on generated scenes, marks under alike parts
       of objects turned at most 0.34 more pictures into their class, with the clean model or the cheating ones;
       the cheating models' tags that were not distinct 0.44-0.88, but for 8 of 24 that fail either way).
       With no other class, covering the mark in its carriers (the share whose answer leaves the class) decides
       instead.
    A SpRAy cluster of at least MIN_MEMBERS maps shows the flag when at least half of them carry flagged marks.
    Nothing asks the shortcut to be rare or at the border: one that most of a class relies on, one in the middle
    of the picture, or one in several places, is flagged like any other.

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
    min_distinct: float = field_default(AuditOptions, "min_distinct")
    min_reliance: float = field_default(AuditOptions, "min_reliance")
    min_reliance_not_distinct: float = field_default(AuditOptions, "min_reliance_not_distinct")

    @classmethod
    def of(cls, audit: AuditOptions) -> FlagRule:
        return cls(audit.max_share, audit.min_tightness, audit.min_away, audit.max_spread, audit.min_pattern,
                   audit.min_distinct, audit.min_reliance, audit.min_reliance_not_distinct)

    def record(self) -> dict:
        return {"max_share": self.max_share, "min_tightness": self.min_tightness, "min_away": self.min_away,
                "max_spread": self.max_spread, "min_pattern": self.min_pattern,
                "min_distinct": self.min_distinct, "min_reliance": self.min_reliance,
                "min_reliance_not_distinct": self.min_reliance_not_distinct,
                "min_members": MIN_MEMBERS,
                "border_band": BORDER_BAND, "corner_side": CORNER_SIDE}


DEFAULT_RULE = FlagRule()
