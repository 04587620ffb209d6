"""A strict YAML reader for everything a user hands us (specs, spaces, bundle configs).

PyYAML's ``safe_load`` builds only plain data, but it keeps the last of two equal keys without
a word (an objective given as both ``min`` and ``max``) and expands aliases without a bound (a
600-byte "billion laughs" document becomes gigabytes). This loader refuses duplicate keys at
any depth, naming the key and both lines, and refuses a document whose alias expansion exceeds
``MAX_NODES`` nodes. A leaf module: it imports nothing of ours but the errors.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from paretotune.errors import ConfigError

#: the most nodes (scalars, lists, mappings) a document may expand to, aliases counted as often
#: as they are used: far above any real spec (a Choice of 20,000 values is 20,000 nodes)
MAX_NODES = 500_000
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys."""


def _construct_mapping(loader: _StrictLoader, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == _MERGE_TAG:  # `<<: *base` merges are meant to be overridden
            continue
        key = loader.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
        try:
            first = seen.get(key)
        except TypeError:
            continue  # an unhashable key: SafeConstructor reports it itself
        line = key_node.start_mark.line + 1
        if first is not None:
            raise ConfigError(
                f"duplicate key {key!r} at line {line} (first given at line {first}); "
                "each key may appear once in a mapping"
            )
        seen[key] = line
    return SafeConstructor.construct_mapping(loader, node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _expanded_size(node: Node, sizes: dict[int, int], open_: set[int]) -> int:
    """Nodes the document expands to, every alias counted as a copy (memoized, so a bomb's
    size is computed in time linear in its text)."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_:
        raise ConfigError("YAML: a recursive alias (an anchor used inside itself) is not allowed")
    open_.add(key)
    total = 1
    if isinstance(node, SequenceNode):
        for child in node.value:
            total += _expanded_size(child, sizes, open_)
    elif isinstance(node, MappingNode):
        for k, v in node.value:
            total += _expanded_size(k, sizes, open_) + _expanded_size(v, sizes, open_)
    elif not isinstance(node, ScalarNode):  # pragma: no cover - PyYAML has no other node kind
        raise ConfigError(f"YAML: unexpected node {type(node).__name__}")
    open_.discard(key)
    sizes[key] = total
    return total


def load(text: str | bytes) -> Any:
    """Parse one YAML document strictly (plain data only). Raises ``yaml.YAMLError`` for bad
    syntax and ConfigError for duplicate keys or an oversized expansion."""
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        try:
            size = _expanded_size(node, {}, set())
        except RecursionError:
            raise ConfigError("YAML: the document is nested too deeply") from None
        if size > MAX_NODES:
            raise ConfigError(
                f"YAML: the document expands to more than {MAX_NODES:,} nodes (aliases counted "
                "as often as they are used); refusing it"
            )
        try:
            return loader.construct_document(node)
        except RecursionError:
            raise ConfigError("YAML: the document is nested too deeply") from None
    finally:
        loader.dispose()  # type: ignore[no-untyped-call]
