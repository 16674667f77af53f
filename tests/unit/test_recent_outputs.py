"""The embedder's recent outputs: bounded, most recently used kept, nothing kept at 0."""

from __future__ import annotations

import numpy as np

from services.embedder.serving import Encoded, ImageFacts, ModelOutput, RecentOutputs


def encoded(name: str) -> Encoded:
    facts = ImageFacts(8, 8, "PNG", name, "0" * 16)
    return Encoded(facts, ModelOutput(np.zeros(4, dtype=np.float32), None))


def test_the_least_recently_used_goes_first() -> None:
    recent = RecentOutputs(2)
    recent.put(encoded("a"))
    recent.put(encoded("b"))
    assert recent.get("a") is not None  # now the most recent
    recent.put(encoded("c"))
    assert recent.get("b") is None
    assert recent.get("a") is not None and recent.get("c") is not None


def test_nothing_is_kept_at_capacity_zero() -> None:
    recent = RecentOutputs(0)
    recent.put(encoded("a"))
    assert recent.get("a") is None
