"""Sphinx configuration: furo, MyST, autodoc with Napoleon, doctests.

Built by ``nox -s docs`` with ``-W --keep-going -n``: every warning, and every
cross-reference that does not resolve, fails the build.
"""

from __future__ import annotations

import doctest
import enum
from importlib.metadata import version as _version
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sphinx.application import Sphinx

project = "invresilience"
author = "The invresilience developers"
copyright = "the invresilience developers"
release = _version("invresilience")
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]
# No intersphinx: the build must not depend on the network, and only the package
# registries are reachable where it runs. References to the standard library are
# therefore listed in nitpick_ignore_regex below instead of being linked.

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "_scripts", "Thumbs.db", ".DS_Store"]
root_doc = "index"

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# -- autodoc ---------------------------------------------------------------------------

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_default_options = {"show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_attr_annotations = True

# -- cross-references --------------------------------------------------------------------

nitpicky = True
nitpick_ignore_regex = [
    # The standard library and attrs, which intersphinx would link if the network were allowed.
    (r"py:.*", r"(abc|asyncio|collections|contextlib|contextvars|datetime|enum)(\..*)?"),
    (r"py:.*", r"(logging|random|threading|time|types|typing|typing_extensions)(\..*)?"),
    (r"py:.*", r"attrs(\..*)?"),
    (r"py:(class|exc|obj|data)", r"(BaseException|Exception|ValueError|TypeError|TimeoutError)"),
    (r"py:(class|obj|data)", r"(None|bool|int|float|str|bytes|object|type|tuple|list|dict)"),
    (r"py:(class|obj|data)", r"(Any|Callable|Iterator|AsyncIterator|Awaitable|Self|Literal)"),
    # Private type variables of the generic signatures (call, acall, the decorator).
    (r"py:(class|obj)", r"(invresilience\._\w+\.)?[PTRYS]"),
    (r"py:(class|obj)", r"invresilience\.typing\._V"),
    # The union of claim answers, an alias autodoc shows by name in signatures.
    (r"py:class", r"Claim"),
    # The same for the union of job outcomes (documented as invresilience.JobOutcome) and
    # the private alias of a redrive target.
    (r"py:class", r"JobOutcome"),
    (r"py:class", r"_Target"),
    # Driver types in the backends' signatures: their own docs, not linkable offline.
    (r"py:.*", r"(redis|psycopg|sqlite3|os)(\..*)?"),
    (r"py:(class|exc|obj|data)", r"(RuntimeError|OSError)"),
    # Private modules and aliases that public docstrings point into for the curious.
    (r"py:(mod|class|func|meth|attr)", r"invresilience\._core(\..*)?"),
    # The routers' private type variables and the aliases their signatures show by name.
    (r"py:(class|obj)", r"(invresilience\.(_\w+|typing)\.)?_N(_co)?"),
    (r"py:class", r"(RangeKey|RouterFactory|ShardKey)"),
    (r"py:class", r"_Durability"),
    # Named in SystemClock's docstring, but not public.
    (r"py:data", r"SYSTEM_CLOCK"),
]


def _keep_property_docstrings(app: Sphinx) -> None:
    """Show property docstrings as written, without Napoleon's attribute parsing.

    Napoleon reads the summary line of a property as ``type: description``, so
    "The retry events: one per attempt." would render "The retry events" as a type.
    The properties here are one-line prose, so the docstring is stashed before Napoleon
    runs (priority 500) and put back after it.
    """
    stash: dict[str, list[str]] = {}

    def before(
        _app: Sphinx, what: str, name: str, _obj: object, _opts: object, lines: list[str]
    ) -> None:
        if what == "property":
            stash[name] = list(lines)

    def after(
        _app: Sphinx, what: str, name: str, _obj: object, _opts: object, lines: list[str]
    ) -> None:
        if what == "property" and name in stash:
            lines[:] = stash.pop(name)

    app.connect("autodoc-process-docstring", before, priority=400)
    app.connect("autodoc-process-docstring", after, priority=600)


def _tidy_signature(
    _app: Sphinx,
    what: str,
    _name: str,
    obj: object,
    _options: object,
    signature: str | None,
    return_annotation: str | None,
) -> tuple[str | None, str | None] | None:
    """Drop the meaningless constructor signatures of enums and protocols, and show
    attrs' ``NOTHING`` sentinel (a default made by a factory) as ``<factory>``."""
    if what == "class" and isinstance(obj, type) and _is_enum_or_protocol(obj):
        return "", None
    if signature is not None and "=NOTHING" in signature:
        return signature.replace("=NOTHING", "=<factory>"), return_annotation
    return None


def _is_enum_or_protocol(cls: type) -> bool:
    return issubclass(cls, enum.Enum) or bool(getattr(cls, "_is_protocol", False))


def setup(app: Sphinx) -> None:
    """Connect the hooks above."""
    _keep_property_docstrings(app)
    app.connect("autodoc-process-signature", _tidy_signature)


# -- doctest ---------------------------------------------------------------------------

# Names every page's examples may use without importing them.
doctest_global_setup = """
import asyncio
import random

import invresilience as ir
from invresilience import JumpRouter, RangeRouter, RendezvousRouter, diff, stable_hash
from invresilience.testing import ManualClock, testing
"""
# Sphinx's default minus IGNORE_EXCEPTION_DETAIL: the messages are part of what we show.
doctest_default_flags = doctest.ELLIPSIS | doctest.DONT_ACCEPT_TRUE_FOR_1
trim_doctest_flags = True

# -- HTML ------------------------------------------------------------------------------

html_theme = "furo"
html_title = f"invresilience {release}"
html_static_path = ["_static"]
