"""X1 as a fault: EC2 tags written by CreateTags stay invisible to readers for a while.

EC2's API is eventually consistent (EC2 developer guide, "Eventual consistency"): a tag just written may not
be returned by DescribeTags or matched by a tag filter for a while. With the fault `tag_visibility_delay_s`
(AWS seconds, on the layer's clock) each key CreateTags writes is remembered with the time it becomes
visible and the value it replaced; while DescribeTags and DescribeInstances run (and their replies are
serialised), such a key shows its previous value, or is absent if it had none. The tag is written at once:
every other call (DeleteTags, a later CreateTags, the Auto Scaling side) sees moto's state unchanged.
"""

from __future__ import annotations

import contextlib
import urllib.parse
from collections.abc import Iterator
from typing import Any

from .moto_seam import DEFAULT_ACCOUNT_ID, ec2_backends
from .state import LayerState

READS = ("DescribeTags", "DescribeInstances")


def ec2_backend(region: str) -> Any:
    return ec2_backends[DEFAULT_ACCOUNT_ID][region]


def _written(body: bytes) -> tuple[list[str], list[str]]:
    """(resource ids, tag keys) of a CreateTags query-protocol body."""
    params = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
    resources = [v[0] for k, v in sorted(params.items()) if k.startswith("ResourceId.")]
    keys = [v[0] for k, v in sorted(params.items()) if k.startswith("Tag.") and k.endswith(".Key")]
    return resources, keys


def before_create(state: LayerState, region: str, body: bytes) -> list[tuple[str, str, str | None]]:
    """What CreateTags is about to overwrite: (resource, key, previous value or None), when the fault is on."""
    if state.faults.tag_visibility_delay_s <= 0:
        return []
    resources, keys = _written(body)
    tags = ec2_backend(region).tags
    return [(rid, key, tags.get(rid, {}).get(key)) for rid in resources for key in keys]


def after_create(state: LayerState, written: list[tuple[str, str, str | None]]) -> None:
    visible_at = state.now() + state.scaled(state.faults.tag_visibility_delay_s)
    for rid, key, previous in written:
        earlier = state.tags_visible_at.get((rid, key))
        # A key written twice inside the window still shows what it had before the first write.
        state.tags_visible_at[(rid, key)] = (visible_at, earlier[1] if earlier else previous)


@contextlib.contextmanager
def hidden(state: LayerState, region: str) -> Iterator[None]:
    """While a reader's request runs, show the keys not yet visible as they were before they were written."""
    now = state.now()
    for key in [k for k, (due, _) in state.tags_visible_at.items() if due <= now]:
        del state.tags_visible_at[key]
    if not state.tags_visible_at:
        yield
        return
    tags = ec2_backend(region).tags
    saved = []
    for (rid, key), (_, previous) in state.tags_visible_at.items():
        current = tags.get(rid, {})
        if key not in current:
            continue  # deleted meanwhile: nothing to hide
        saved.append((rid, key, current[key]))
        if previous is None:
            del current[key]
        else:
            current[key] = previous
    try:
        yield
    finally:
        for rid, key, value in saved:
            tags.setdefault(rid, {})[key] = value
