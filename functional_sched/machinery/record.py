"""Immutable records of tensors that `torch.compile(fullgraph=True)` can build and return.

attrs' generated `__init__` of a frozen class goes through `object.__setattr__.__get__`, which dynamo cannot trace
(torch 2.11 and 2.13), so a record gets a generated keyword-only `__init__` that calls `object.__setattr__`
literally (dynamo special-cases that spelling, not an alias of it). Records are registered as pytree nodes, so
`torch.utils._pytree`, `torch.compile` outputs, `torch.func` transforms and `torch.export` see their tensors as
leaves. A field named in `host=` is no leaf: flattening drops it and unflattening leaves it None (the eager fast
path's cursor, which no transform or compiled graph may see).
"""

from __future__ import annotations

from typing import Any, TypeVar

import attrs
import torch
import torch.utils._pytree as pytree

RecordT = TypeVar("RecordT")
_KEEP = object()  # "this field is not replaced"
_HOST = "__record_host_fields__"


def record(cls: type[RecordT] | None = None, *, host: tuple[str, ...] = ()) -> Any:
    """Make `cls` (annotated fields, no defaults) a frozen, slotted record registered as a pytree node; the fields
    named in `host` default to None and are no leaves. Use as `@record` or `@record(host=("cursor",))`."""
    if cls is None:
        return lambda decorated: _record(decorated, host)
    return _record(cls, host)


def _record(cls: type[RecordT], host: tuple[str, ...]) -> type[RecordT]:
    cls = attrs.define(cls, frozen=True, init=False, eq=False, repr=False, slots=True)
    names = tuple(field.name for field in attrs.fields(cls))
    unknown = set(host) - set(names)
    if unknown:
        raise TypeError(f"record {cls.__name__}: host fields {sorted(unknown)} are not among its fields")
    leaves = tuple(name for name in names if name not in host)
    arguments = ", ".join(f"{name}=None" if name in host else name for name in names)
    source = f"def __init__(self, *, {arguments}):\n" + "".join(
        f"    object.__setattr__(self, {name!r}, {name})\n" for name in names
    )
    namespace: dict[str, Any] = {}
    exec(source, namespace)  # a real signature: editors and errors name the fields
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    cls.__init__ = init  # type: ignore[misc]
    cls.__repr__ = _repr  # type: ignore[method-assign]
    setattr(cls, _HOST, tuple(host))
    replace_source = f"def replace(self, *, {', '.join(f'{name}=_KEEP' for name in names)}):\n" + (
        f"    return _cls({', '.join(f'{name}=self.{name} if {name} is _KEEP else {name}' for name in names)})\n"
    )
    namespace = {"_KEEP": _KEEP, "_cls": cls}
    exec(replace_source, namespace)
    namespace["replace"].__doc__ = "A copy with some fields replaced (traceable, unlike `attrs.evolve`)."
    cls.replace = namespace["replace"]  # type: ignore[attr-defined]

    def flatten(value: Any) -> tuple[list[Any], None]:
        return [getattr(value, name) for name in leaves], None

    def flatten_with_keys(value: Any) -> tuple[list[tuple[Any, Any]], None]:
        return [(pytree.GetAttrKey(name), getattr(value, name)) for name in leaves], None

    def unflatten(values: Any, _context: None) -> Any:
        return cls(**dict(zip(leaves, values, strict=True)))

    pytree.register_pytree_node(
        cls,
        flatten,
        unflatten,
        serialized_type_name=f"{cls.__module__}.{cls.__qualname__}",
        flatten_with_keys_fn=flatten_with_keys,
    )
    return cls


def fields(value: Any) -> tuple[str, ...]:
    """The names of a record's leaf fields (its tensors, plans and tuples), in declaration order."""
    host = getattr(type(value), _HOST, ())
    return tuple(field.name for field in attrs.fields(type(value)) if field.name not in host)


def _describe(value: Any) -> str:
    if isinstance(value, tuple):
        return f"({', '.join(_describe(item) for item in value)})"
    if isinstance(value, torch.Tensor):
        shape = "x".join(str(size) for size in value.shape) or "scalar"
        return f"Tensor[{shape}, {str(value.dtype).removeprefix('torch.')}, {value.device}]"
    return repr(value)


def _repr(self: Any) -> str:
    body = ", ".join(f"{name}={_describe(getattr(self, name))}" for name in fields(self))
    return f"{type(self).__name__}({body})"
