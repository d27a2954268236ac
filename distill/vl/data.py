"""Seen/unseen views of a run's :class:`~distill.data.DataSplits` (nothing of an unseen class reaches training).

* training: the seen classes' labeled images, and their unlabeled images (the class of an unlabeled image from
  the dataset root is its folder, so unseen-class images are dropped from the pool too). Images of an extra
  ``unlabeled_dir`` have no class and are kept: deliberately adding them is the user's open-world choice.
* validation (model selection): seen-class val images only; selecting on unseen classes would leak them.
* test: every test image (seen accuracy on the seen ones, zero-shot on the unseen ones).
* k-shot support pool: the unseen classes' non-test images (labeled, val and unlabeled-by-folder).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..data import DataSplits, Sample, stratified_subset


def _folder_label(s: Sample, root: Path, index: dict[str, int]) -> int | None:
    """Class index of an image from its ImageFolder path under ``root`` (None outside the root)."""
    try:
        rel = s.path.relative_to(root)
    except ValueError:
        return None
    return index.get(rel.parts[0]) if len(rel.parts) > 1 else None


@dataclass
class VLData:
    class_names: list[str]
    seen: list[str]
    unseen: list[str]
    labeled: list[Sample]          # seen classes, dataset class indices
    unlabeled: list[Sample]        # labels -1; seen-class folders of root + extra unlabeled_dir images
    val: list[Sample]              # seen classes only
    test: list[Sample]             # all classes
    support: list[Sample]          # unseen classes, labeled, not in test
    dropped_unlabeled: int = 0

    @property
    def seen_ids(self) -> list[int]:
        return [self.class_names.index(n) for n in self.seen]

    @property
    def unseen_ids(self) -> list[int]:
        return [self.class_names.index(n) for n in self.unseen]

    def counts(self) -> dict[str, int]:
        return {"labeled": len(self.labeled), "unlabeled": len(self.unlabeled), "val": len(self.val),
                "test": len(self.test), "support": len(self.support), "dropped_unlabeled": self.dropped_unlabeled,
                "test_seen": sum(s.label in set(self.seen_ids) for s in self.test),
                "test_unseen": sum(s.label in set(self.unseen_ids) for s in self.test)}

    def describe(self) -> dict[str, object]:
        return {"seen": self.seen, "unseen": self.unseen, "counts": self.counts()}


def restrict_splits(splits: DataSplits, seen: Sequence[str], unseen: Sequence[str], support_per_class: int = 100,
                    seed: int = 0) -> VLData:
    """Seen/unseen view of ``splits``; the k-shot support pool keeps a seeded ``support_per_class`` per class."""
    names = list(splits.class_names)
    index = {n: i for i, n in enumerate(names)}
    seen_ids = {index[n] for n in seen}
    unseen_ids = {index[n] for n in unseen}
    unlabeled, support_unl, dropped = [], [], 0
    for s in splits.unlabeled:
        lab = _folder_label(s, splits.root, index)
        if lab is None or lab in seen_ids:
            unlabeled.append(s)
        else:
            dropped += 1
            if lab in unseen_ids:
                support_unl.append(Sample(s.path, lab, s.digest))
    support = [s for s in splits.labeled + splits.val if s.label in unseen_ids] + support_unl
    if support:
        support = stratified_subset(sorted(support, key=lambda s: (s.label, str(s.path))), names,
                                    support_per_class * len(unseen_ids), seed)
    return VLData(
        class_names=names, seen=list(seen), unseen=list(unseen),
        labeled=[s for s in splits.labeled if s.label in seen_ids], unlabeled=unlabeled,
        val=[s for s in splits.val if s.label in seen_ids], test=list(splits.test),
        support=sorted(support, key=lambda s: (s.label, str(s.path))), dropped_unlabeled=dropped,
    )
