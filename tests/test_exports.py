"""The public surface: __all__ sorted and complete, classes final, names documented."""

from __future__ import annotations

import inspect
import types
import typing

import pytest

import invresilience as ir
from invresilience import exceptions, testing


def _isort_order(name: str) -> tuple[int, str]:
    """CONSTANTS, then Classes, then functions, each alphabetical (ruff's RUF022)."""
    if name.isupper():
        return (0, name)
    return (1 if name[0].isupper() else 2, name)


@pytest.mark.parametrize("module", [ir, exceptions, testing, ir.typing])
def test_all_is_sorted_and_complete(module: types.ModuleType) -> None:
    """Every public attribute is exported, in ruff's (isort-style) order, and every export exists."""
    assert sorted(module.__all__, key=_isort_order) == module.__all__
    for name in module.__all__:
        assert hasattr(module, name)
    if module is ir:
        public = {name for name in vars(module) if not name.startswith("_")}
        # `invresilience.contract` is imported on demand (by the tests that run it), not
        # re-exported: it appears here only once something has imported it.
        public -= {"annotations", "Any", "contract"}
    else:
        public = {
            name
            for name, value in vars(module).items()
            if not name.startswith("_") and getattr(value, "__module__", None) == module.__name__
        }
    assert set() == public - set(module.__all__)


def test_version_is_lazy() -> None:
    """``__version__`` comes from the installed metadata, and unknown names still fail."""
    assert isinstance(ir.__version__, str)
    with pytest.raises(AttributeError):
        _ = ir.no_such_name  # type: ignore[attr-defined]


@pytest.mark.parametrize("module", [ir, testing])
def test_public_classes_are_final(module: types.ModuleType) -> None:
    """Concrete public classes are final; bases and Protocols are extension points."""
    extension_points = {"Event", "Clock"}
    for name in module.__all__:
        value = getattr(module, name)
        if typing.get_origin(value) is not None:
            continue  # a type alias such as Listener (a class to inspect on Python 3.10)
        if inspect.isclass(value) and not issubclass(value, BaseException):
            if name in extension_points or issubclass(value, __import__("enum").Enum):
                continue
            assert getattr(value, "__final__", False), name


@pytest.mark.parametrize("module", [ir, exceptions, testing, ir.typing])
def test_every_public_name_has_versionadded(module: types.ModuleType) -> None:
    """Every exported class and function documents the version that added it."""
    for name in module.__all__:
        value = getattr(module, name)
        if typing.get_origin(value) is not None:
            continue  # type aliases are documented in the API reference instead
        if isinstance(value, types.ModuleType):
            doc = value.__doc__
        elif inspect.isclass(value) or inspect.isfunction(value):
            doc = inspect.getdoc(value)
        else:
            continue
        assert doc is not None, name
        assert "versionadded" in doc, name
