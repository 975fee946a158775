# SPDX-License-Identifier: Apache-2.0
"""Small value classes for the boot path, without dataclasses.

``import dataclasses`` pulls in inspect (ast, dis, tokenize...): about 5-10 ms
of every boot's two Python starts. A :class:`Record` subclass lists its fields
in ``__slots__`` (in order) and their defaults in ``_defaults`` (a callable
in ``_factories`` for mutable ones); it gets keyword or positional
construction, equality, a repr, and with ``_frozen`` immutability and a hash.
"""

from __future__ import annotations

__all__ = ["FrozenRecordError", "Record"]


class FrozenRecordError(AttributeError):
    """Assigning to a field of a frozen record."""


class Record:
    __slots__ = ()
    _defaults: dict = {}
    _factories: dict = {}
    _frozen = False
    _hidden: tuple = ()  # fields left out of the repr

    def __init__(self, *args, **kwargs):
        names = self.__slots__
        cls = type(self).__name__
        if len(args) > len(names):
            raise TypeError(f"{cls}() takes {len(names)} arguments, {len(args)} given")
        values = dict(zip(names, args))
        for key, value in kwargs.items():
            if key not in names:
                raise TypeError(f"{cls}() got an unexpected keyword argument {key!r}")
            if key in values:
                raise TypeError(f"{cls}() got multiple values for argument {key!r}")
            values[key] = value
        for name in names:
            if name in values:
                value = values[name]
            elif name in self._defaults:
                value = self._defaults[name]
            elif name in self._factories:
                value = self._factories[name]()
            else:
                raise TypeError(f"{cls}() missing required argument {name!r}")
            object.__setattr__(self, name, value)

    def __setattr__(self, name, value):
        if self._frozen:
            raise FrozenRecordError(f"cannot assign to field {name!r}")
        object.__setattr__(self, name, value)

    def _values(self) -> tuple:
        return tuple(getattr(self, n) for n in self.__slots__)

    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self):
        if not self._frozen:
            raise TypeError(f"unhashable type: {type(self).__name__!r}")
        return hash(self._values())

    def __repr__(self) -> str:
        fields = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__
                           if n not in self._hidden)
        return f"{type(self).__name__}({fields})"
