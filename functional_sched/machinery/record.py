"""Immutable records of tensors that `torch.compile(fullgraph=True)` can build and return.

attrs' generated `__init__` of a frozen class goes through `object.__setattr__.__get__`, which dynamo cannot trace
(torch 2.11 and 2.13), so a record gets a generated keyword-only `__init__` that calls `object.__setattr__`
literally (dynamo special-cases that spelling, not an alias of it). Records are registered as pytree nodes, so
`torch.utils._pytree`, `torch.compile` outputs and `torch.export` see their tensors as leaves.
"""

from __future__ import annotations

from typing import Any, TypeVar

import attrs
import torch
import torch.utils._pytree as pytree

RecordT = TypeVar("RecordT")
_KEEP = object()  # "this field is not replaced"


def record(cls: type[RecordT]) -> type[RecordT]:
    """Make `cls` (annotated fields, no defaults) a frozen, slotted record registered as a pytree node."""
    cls = attrs.define(cls, frozen=True, init=False, eq=False, repr=False, slots=True)
    names = tuple(field.name for field in attrs.fields(cls))
    source = f"def __init__(self, *, {', '.join(names)}):\n" + "".join(
        f"    object.__setattr__(self, {name!r}, {name})\n" for name in names
    )
    namespace: dict[str, Any] = {}
    exec(source, namespace)  # a real signature: editors and errors name the fields
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    cls.__init__ = init  # type: ignore[misc]
    cls.__repr__ = _repr  # type: ignore[method-assign]
    replace_source = f"def replace(self, *, {', '.join(f'{name}=_KEEP' for name in names)}):\n" + (
        f"    return _cls({', '.join(f'{name}=self.{name} if {name} is _KEEP else {name}' for name in names)})\n"
    )
    namespace = {"_KEEP": _KEEP, "_cls": cls}
    exec(replace_source, namespace)
    namespace["replace"].__doc__ = "A copy with some fields replaced (traceable, unlike `attrs.evolve`)."
    cls.replace = namespace["replace"]  # type: ignore[attr-defined]

    def flatten(value: Any) -> tuple[list[Any], None]:
        return [getattr(value, name) for name in names], None

    def flatten_with_keys(value: Any) -> tuple[list[tuple[Any, Any]], None]:
        return [(pytree.GetAttrKey(name), getattr(value, name)) for name in names], None

    def unflatten(values: Any, _context: None) -> Any:
        return cls(**dict(zip(names, values, strict=True)))

    pytree.register_pytree_node(
        cls,
        flatten,
        unflatten,
        serialized_type_name=f"{cls.__module__}.{cls.__qualname__}",
        flatten_with_keys_fn=flatten_with_keys,
    )
    return cls


def fields(value: Any) -> tuple[str, ...]:
    """The field names of a record, in declaration order."""
    return tuple(field.name for field in attrs.fields(type(value)))


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        shape = "x".join(str(size) for size in value.shape) or "scalar"
        return f"Tensor[{shape}, {str(value.dtype).removeprefix('torch.')}, {value.device}]"
    return repr(value)


def _repr(self: Any) -> str:
    body = ", ".join(f"{name}={_describe(getattr(self, name))}" for name in fields(self))
    return f"{type(self).__name__}({body})"
