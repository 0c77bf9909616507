"""Union-find over string keys (patient keys, source names), deterministic: a group is named by its smallest
key. Optional weights (e.g. records per patient) add up per group, so callers can bound a group's size."""

from __future__ import annotations


class Groups:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}
        self.weight: dict[str, int] = {}

    def add(self, key: str, weight: int = 0) -> None:
        """Make ``key`` known (a group of its own) and add ``weight`` to its group."""
        root = self.find(key)
        self.weight[root] = self.weight.get(root, 0) + weight

    def find(self, key: str) -> str:
        self.parent.setdefault(key, key)
        root = key
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[key] != root:  # path compression
            self.parent[key], key = root, self.parent[key]
        return root

    def size(self, key: str) -> int:
        """The summed weight of ``key``'s group."""
        return self.weight.get(self.find(key), 0)

    def union(self, a: str, b: str) -> str:
        """Join the groups of ``a`` and ``b``; returns the group's name (its smallest key)."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        lo, hi = sorted((ra, rb))
        self.parent[hi] = lo
        self.weight[lo] = self.weight.get(lo, 0) + self.weight.pop(hi, 0)
        return lo
