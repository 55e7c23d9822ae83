"""The searchable twins of the trial sections: same fields, defaults and bounds, each field also accepting the
distributions its type allows (uniform on an integer field is an error, not a silent rounding). Generated from the
TrialConfig sections so that names, types, bounds and defaults have one source of truth.
"""
from __future__ import annotations

from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    Discriminator,
    Field,
    Tag,
    create_model,
)
from pydantic.fields import FieldInfo

from aesweep.spec import variants
from aesweep.spec.distributions import (
    UNION_TAG,
    Choice,
    Grid,
    IntRange,
    LogUniform,
    Uniform,
    _dist_kind,
    is_distribution_like,
)
from aesweep.spec.trial import DatasetConfig, EvalConfig, ModelConfig, ObjectiveConfig, Strict, TrainConfig

# --------------------------------------------------------------------------------------------------------------



def _base_type(annotation: Any) -> Any:
    """The innermost non-None, non-Annotated type, to decide which distributions a field allows."""
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) is Union or type(annotation).__name__ == "UnionType":
        members = [a for a in get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return _base_type(members[0])
        return annotation
    return annotation


def _without_none(annotation: Any) -> Any:
    if get_origin(annotation) is Union or type(annotation).__name__ == "UnionType":
        members = [a for a in get_args(annotation) if a is not type(None)]
        return members[0] if len(members) == 1 else Union[tuple(members)]  # noqa: UP007
    return annotation


def _dist_union(annotation: Any) -> Any:
    base = _base_type(annotation)
    scalar = _without_none(annotation)
    kinds: list[Any] = [Annotated[Choice[annotation], Tag("choice")], Annotated[Grid[annotation], Tag("grid")]]
    if base is float:
        kinds += [
            Annotated[Uniform[scalar], Tag("uniform")],
            Annotated[LogUniform[scalar], Tag("loguniform")],
            Annotated[IntRange[scalar], Tag("int")],
        ]
    elif base is int:
        kinds += [Annotated[IntRange[scalar], Tag("int")]]
    return Annotated[Union[tuple(kinds)], Discriminator(_dist_kind)]  # noqa: UP007


def _searchable_annotation(annotation: Any) -> Any:
    """T -> T | distribution over T; a nested section becomes its searchable twin (or a distribution over it)."""
    base = _base_type(annotation)
    value_type = annotation
    if isinstance(base, type) and issubclass(base, Strict):
        nested = searchable(base)
        value_type = nested | None if _without_none(annotation) is not annotation else nested
    return Annotated[
        Union[  # noqa: UP007
            Annotated[_dist_union(annotation), Tag(UNION_TAG + "dist")],
            Annotated[value_type, Tag(UNION_TAG + "value")],
        ],
        Discriminator(lambda v: UNION_TAG + ("dist" if is_distribution_like(v) else "value")),
    ]


def _field_annotation(info: FieldInfo) -> Any:
    # pydantic moves Annotated metadata (bounds, validators) out of the annotation; put it back on the type.
    return Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation


def _copy_default(info: FieldInfo) -> FieldInfo:
    factory = info.default_factory
    if isinstance(factory, type) and issubclass(factory, Strict):
        factory = searchable(factory)  # a nested section's default is its searchable twin
    if factory is not None:
        return Field(default_factory=factory, alias=info.alias)
    return Field(default=info.default, alias=info.alias)


_SEARCHABLE: dict[type, type[BaseModel]] = {}


def searchable(model: type[Strict]) -> type[BaseModel]:
    """The searchable twin of a config section: same fields, defaults and bounds; each may be a distribution."""
    if model not in _SEARCHABLE:
        fields = {
            name: (_searchable_annotation(_field_annotation(info)), _copy_default(info))
            for name, info in model.model_fields.items()
        }
        _SEARCHABLE[model] = create_model(f"Searchable{model.__name__}", __base__=Strict, **fields)
    return _SEARCHABLE[model]


# The objective also has one optional section per variant, holding that variant's knobs only: a sweep over
# variants samples a knob only for the variant drawn. Any knob is typed here; the wrong-variant check is
# semantic (see _check_variant_knobs) so that its message can say which knobs the variant does own.
_SearchableObjectiveBase = searchable(ObjectiveConfig)
_KnobSection = create_model(
    "VariantKnobs",
    __base__=Strict,
    **{
        knob: (_searchable_annotation(_field_annotation(ObjectiveConfig.model_fields[knob])), None)
        for knob in variants.KNOBS
    },
)
SearchableObjective = create_model(
    "SearchableObjectiveConfig",
    __base__=_SearchableObjectiveBase,
    **{preset.name: (_KnobSection | None, None) for preset in variants.PRESETS},
)
_SEARCHABLE[ObjectiveConfig] = SearchableObjective

SearchableDataset = searchable(DatasetConfig)
SearchableModel = searchable(ModelConfig)
SearchableTrain = searchable(TrainConfig)
SearchableEval = searchable(EvalConfig)

