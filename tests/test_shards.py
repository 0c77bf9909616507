"""core.shards: keyed shards merged in key order, a key met twice is an error (two records or samples with one
id would be mixed up by every export)."""

from __future__ import annotations

import json

import pytest

from medvl.core.shards import ShardWriter, merge_keyed


def _write(path, keys):
    with ShardWriter(path) as w:
        for k in keys:
            w.write(json.dumps(k) + "\t" + json.dumps({"id": k}))
    return path


def test_merge_keyed_orders_by_decoded_key(tmp_path):
    # sorted by the key itself, not by its JSON text (a"z sorts before a# decoded, after it as JSON: a\"z)
    a = _write(tmp_path / "a.jsonl", ['a"z', "a#", "b"])
    b = _write(tmp_path / "b.jsonl", ['a"', "a$", "c"])
    got = [(k, json.loads(body)["id"]) for k, body in merge_keyed([a, b], ValueError)]
    assert [k for k, _ in got] == sorted(['a"', 'a"z', "a#", "a$", "b", "c"]) and all(k == i for k, i in got)


def test_merge_keyed_refuses_a_key_met_twice(tmp_path):
    a = _write(tmp_path / "a.jsonl", ["x", "y"])
    b = _write(tmp_path / "b.jsonl", ["y", "z"])
    with pytest.raises(KeyError, match="'y'"):
        list(merge_keyed([a, b], lambda k: KeyError(k)))
