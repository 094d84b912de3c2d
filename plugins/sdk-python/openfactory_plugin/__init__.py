"""Write an OpenFactory feature plugin in Python.

A feature plugin is a WebAssembly component that turns one recipe feature into
typed build steps and boot checks. componentize-py builds it from an app module
that defines a class named ``Feature``; with this library that class is::

    import openfactory_plugin as of

    class Feature(of.Feature):
        info = of.Info("motd", "0.1.0", "A message of the day", "system")
        options_schema = {
            "type": "object",
            "additionalProperties": False,
            "properties": {"greeting": {"type": "string", "default": "hello"}},
        }

        def plan(self, ctx):
            return [of.step.write_file("/etc/motd", ctx.options["greeting"] + "\\n")]

The host checks options against ``options_schema`` (JSON Schema draft
2020-12) before the plugin runs, and fills in each property's ``default``;
``validate`` reports what a schema cannot say, ``plan`` returns the ordered
steps (or raises :class:`Refused`), ``checks`` the boot checks.

Build it with ``openfactory plugin test DIR`` (which runs componentize-py for
you) or by hand::

    componentize-py -d wit -w plugin componentize app -p . -o plugin.wasm
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Sequence

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import types

from . import check, diag, step
from .diag import Refused

__all__ = ["Context", "Feature", "Info", "Refused", "check", "diag", "step"]


@dataclass(frozen=True)
class Info:
    """What a feature says about itself (see ``feature-info`` in wit/feature.wit)."""

    name: str
    version: str
    summary: str
    category: str
    #: Top-level recipe fields the plugin reads (``users``, ``security``, …).
    reads: Sequence[str] = ()
    #: Features that must also be in the recipe; they are planned first.
    requires: Sequence[str] = ()
    #: Features that cannot be in the same recipe.
    conflicts: Sequence[str] = ()


@dataclass(frozen=True)
class Context:
    """The recipe (the fields listed in ``Info.reads``, plus ``name`` and
    ``base_image``) and this feature's options, as plain JSON values."""

    recipe: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def suite(self) -> str:
        """The Debian suite of the base image (``bookworm``, ``trixie``)."""
        base = str(self.recipe.get("base_image", ""))
        return base.removeprefix("debian-")

    def has_feature(self, name: str) -> bool:
        """Whether the recipe enables a feature (when ``features`` is read)."""
        return any(f.get("name") == name for f in self.recipe.get("features", []))


def _context(ctx: types.PlanContext) -> Context:
    return Context(recipe=json.loads(ctx.recipe), options=json.loads(ctx.options))


class Feature(exports.Feature):
    """Subclass this as ``Feature`` in the app module; set ``info`` and
    ``options_schema`` and override ``plan`` (and ``validate``, ``checks``),
    each taking a :class:`Context`."""

    info: Info
    options_schema: dict[str, Any] = {"type": "object", "additionalProperties": False}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # The component's exports take the WIT's plan-context; the author's
        # methods take a Context. Wrap each, once, where it is defined.
        super().__init_subclass__(**kwargs)
        for name, wrap in (("validate", _validating), ("plan", _planning), ("checks", _checking)):
            own = cls.__dict__.get(name)
            if own is not None and not getattr(own, "_wrapped", False):
                setattr(cls, name, wrap(own))

    def describe(self) -> types.FeatureInfo:
        info = self.info
        return types.FeatureInfo(
            name=info.name,
            version=info.version,
            summary=info.summary,
            category=info.category,
            options_schema=json.dumps(self.options_schema, sort_keys=True),
            reads=list(info.reads),
            requires=list(info.requires),
            conflicts=list(info.conflicts),
        )

    def validate(self, ctx: Context) -> list[types.Diagnostic]:  # type: ignore[override]
        return []

    def plan(self, ctx: Context) -> list[types.Step]:  # type: ignore[override]
        raise Refused(diag.error(f"{self.info.name}.unimplemented", "", "this feature plans no steps yet"))

    def checks(self, ctx: Context) -> list[types.BootCheck]:  # type: ignore[override]
        return []


def _bug(self: Feature, what: str, e: Exception) -> types.Diagnostic:
    return diag.error(
        f"{self.info.name}.bug",
        "",
        f"the plugin failed while {what}: {type(e).__name__}: {e}",
        "report it to the plugin's author",
    )


def _validating(method):
    def validate(self, ctx):
        try:
            return list(method(self, _context(ctx)))
        except Exception as e:  # a plugin's bug is a diagnostic, not a trap
            return [_bug(self, "validating", e)]

    validate._wrapped = True
    return validate


def _planning(method):
    def plan(self, ctx):
        try:
            return list(method(self, _context(ctx)))
        except Refused as refused:
            raise Err(list(refused.diagnostics))
        except Exception as e:
            raise Err([_bug(self, "planning", e)])

    plan._wrapped = True
    return plan


def _checking(method):
    def checks(self, ctx):
        return list(method(self, _context(ctx)))

    checks._wrapped = True
    return checks


# The base class's own defaults take a Context too.
for _name, _wrap in (("validate", _validating), ("plan", _planning), ("checks", _checking)):
    setattr(Feature, _name, _wrap(Feature.__dict__[_name]))
del _name, _wrap
