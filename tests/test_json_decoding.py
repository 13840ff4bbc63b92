"""Fast JSON paths give exactly the standard library's answers: decoding, the canonical form
and the journal's column encoding."""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from threshold._json import loads
from threshold.ids import canonical_json
from threshold.store._rows import dump_json

_SCALARS = (st.none() | st.booleans() | st.integers() | st.text()
            | st.floats(allow_nan=True, allow_infinity=True))
_VALUES = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=4)
                       | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)


def _outcome(decode: Any, text: str) -> Any:
    try:
        return ("ok", _comparable(decode(text)))
    except (ValueError, RecursionError) as exc:
        return ("error", type(exc).__name__)


def _comparable(value: Any) -> Any:
    """NaN never equals itself, and -0.0 == 0.0: compare floats by repr."""
    if isinstance(value, float):
        return ("float", "nan" if math.isnan(value) else repr(value))
    if isinstance(value, list):
        return [_comparable(v) for v in value]
    if isinstance(value, dict):
        return [(k, _comparable(v)) for k, v in value.items()]
    return (type(value).__name__, value)


@settings(max_examples=400)
@given(_VALUES, st.sampled_from([None, 0, 2]), st.booleans())
def test_valid_documents_decode_identically(value: Any, indent: int | None,
                                            ascii_only: bool) -> None:
    """Any document json.dumps can write decodes to the same value, types included."""
    text = json.dumps(value, indent=indent, ensure_ascii=ascii_only)
    assert _outcome(loads, text) == _outcome(json.loads, text)


_JSONISH = st.text(alphabet=st.sampled_from(list('{}[]",:.-+eE0123456789 \t\n\r\\/u'
                                                 'truefalsnNIiy\x00\x01\ud800\ufeff\xa0')),
                   max_size=40)


@settings(max_examples=600)
@given(st.one_of(_JSONISH, st.text(max_size=40)))
def test_garbage_is_decided_as_json_loads_decides(text: str) -> None:
    """Malformed or odd text gets the same value or the same error class as json.loads."""
    assert _outcome(loads, text) == _outcome(json.loads, text)


def test_edge_cases_the_fast_parser_refuses() -> None:
    """Lone surrogates, deep nesting and huge integers fall back to json.loads's answer."""
    assert loads('"\ud800"') == "\ud800"
    deep = "[" * 300 + "]" * 300
    assert loads(deep) == json.loads(deep)
    assert loads("1" + "0" * 40) == 10 ** 40
    assert loads('{"a": 1, "a": 2}') == {"a": 2}


_ENCODABLE = st.recursive(
    _SCALARS, lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    | st.dictionaries(st.integers(), inner, max_size=3), max_leaves=20)


@settings(max_examples=400)
@given(_ENCODABLE)
def test_canonical_json_is_the_sorted_compact_encoding(value: Any) -> None:
    """The hashed form is exactly json.dumps(sort_keys, compact, non-ASCII kept) text."""
    expected = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          default=str)
    assert canonical_json(value) == expected


class _Opaque:
    def __str__(self) -> str:
        return "opaque \u00e9"


@settings(max_examples=400)
@given(_ENCODABLE | st.builds(lambda v: {"x": [_Opaque(), v]}, _ENCODABLE))
def test_journal_columns_are_the_compact_ascii_encoding(value: Any) -> None:
    """JSON columns are exactly json.dumps(compact, default=str) text, key order kept."""
    expected = json.dumps(value, separators=(",", ":"), default=str)
    assert dump_json(value) == expected
