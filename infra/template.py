"""Read template.yaml, the one definition of the stack's resources and settings: load it (with
CloudFormation's short tags), its parameters' defaults, the environment it declares for a function,
its intrinsic functions resolved against known values, and its SAM translation."""

from __future__ import annotations

import copy
import logging
import re
from pathlib import Path
from typing import Any

import yaml

TEMPLATE_PATH = Path(__file__).resolve().parents[1] / "template.yaml"

# samtranslator warns on exit about usage metrics it would publish to AWS; there is nothing to publish.
logging.getLogger("samtranslator.metrics.metrics").setLevel(logging.ERROR)

_INTRINSICS = ("Ref", "Condition")  # tags whose long form has no "Fn::" prefix


class _CfnLoader(yaml.SafeLoader):
    """A YAML loader that turns CloudFormation short tags (!Ref, !Sub, ...) into their long form."""


def _construct(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = tag_suffix if tag_suffix in _INTRINSICS else f"Fn::{tag_suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if tag_suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    elif isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    else:
        raise yaml.constructor.ConstructorError(None, None, f"unexpected node for !{tag_suffix}", node.start_mark)
    return {name: value}


_CfnLoader.add_multi_constructor("!", _construct)


_PARSED: dict[tuple[str, int, int], dict[str, Any]] = {}  # (path, mtime, size) -> the template as parsed


def load_template(path: Path = TEMPLATE_PATH) -> dict[str, Any]:
    """The template, the caller's own copy to change; parsed again only when the file's modification
    time or size changes (a local stack reads it some twenty times as it starts)."""
    status = path.stat()
    key = (str(path.resolve()), status.st_mtime_ns, status.st_size)
    if key not in _PARSED:
        with path.open() as handle:
            _PARSED[key] = yaml.load(handle, Loader=_CfnLoader)  # noqa: S506 - a SafeLoader subclass
    return copy.deepcopy(_PARSED[key])


def parameter_defaults(template: dict[str, Any]) -> dict[str, Any]:
    return {name: spec.get("Default") for name, spec in template.get("Parameters", {}).items()}


def declared_environment(function: str, template: dict[str, Any] | None = None) -> dict[str, Any]:
    """The environment variables a function gets: the Globals' and its own (unresolved)."""
    template = template or load_template()
    variables = dict(template["Globals"]["Function"]["Environment"]["Variables"])
    variables.update(template["Resources"][function]["Properties"].get("Environment", {}).get("Variables", {}))
    return variables


class _NoManagedPolicies:
    """samtranslator resolves managed policy names through IAM; this stack names none."""

    def load(self) -> dict[str, str]:
        return {}


def translate(
    template: dict[str, Any], parameters: dict[str, Any] | None = None, region: str = "us-east-1"
) -> dict[str, Any]:
    """The plain CloudFormation that `sam deploy` would create, translated offline (ARNs in `region`:
    the local stack's by default)."""
    import boto3
    from samtranslator.parser.parser import Parser
    from samtranslator.translator.translator import Translator

    fragment = copy.deepcopy(template)
    # The translator wants code in S3, as `sam package` would leave it.
    fragment.get("Globals", {}).get("Function", {})["CodeUri"] = "s3://local-artifacts/functions.zip"
    for resource in fragment["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function" and "CodeUri" in resource.get("Properties", {}):
            resource["Properties"]["CodeUri"] = "s3://local-artifacts/functions.zip"
    translator = Translator(None, Parser(), boto_session=boto3.Session(region_name=region))
    translated: dict[str, Any] = translator.translate(
        fragment,
        parameter_values=dict(parameters or {}),
        passthrough_metadata=True,
        get_managed_policy_map=_NoManagedPolicies().load,
    )
    return translated


NO_VALUE = object()  # what Ref AWS::NoValue resolves to: the property it is set to is left out


def resolve(value: Any, refs: dict[str, Any]) -> Any:
    """Resolve Ref, Fn::GetAtt, Fn::Sub (both forms), Fn::Join, Fn::Select, Fn::Split, Fn::FindInMap and the
    condition functions (Fn::If, Fn::Equals, Fn::Not, Fn::And, Fn::Or) against known values; a
    condition's value is refs["Condition::<name>"], a mapping's refs["Mapping::<name>"]. A property
    that resolves to AWS::NoValue is left out, as CloudFormation leaves it out."""
    if isinstance(value, dict) and len(value) == 1:
        ((name, arg),) = value.items()
        if name == "Ref":
            return NO_VALUE if arg == "AWS::NoValue" else refs[arg]
        if name == "Fn::GetAtt":
            return refs[".".join(arg)]
        if name == "Fn::Sub":
            text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], resolve(arg[1], refs))
            known = {**refs, **variables}
            return re.sub(r"\$\{([^}]+)\}", lambda m: str(known[m.group(1)]), text)
        if name == "Fn::FindInMap":
            mapping, top, second = (resolve(v, refs) for v in arg)
            return refs[f"Mapping::{mapping}"][top][second]
        if name == "Fn::Join":
            return str(arg[0]).join(str(v) for v in resolve(arg[1], refs))
        if name == "Fn::Select":
            return resolve(arg[1], refs)[int(arg[0])]
        if name == "Fn::Split":
            return str(resolve(arg[1], refs)).split(arg[0])
        if name == "Fn::If":
            condition, when_true, when_false = arg
            return resolve(when_true if refs[f"Condition::{condition}"] else when_false, refs)
        if name == "Condition":
            return refs[f"Condition::{arg}"]
        if name == "Fn::Equals":
            return str(resolve(arg[0], refs)) == str(resolve(arg[1], refs))
        if name == "Fn::Not":
            return not resolve(arg[0], refs)
        if name == "Fn::And":
            return all(resolve(v, refs) for v in arg)
        if name == "Fn::Or":
            return any(resolve(v, refs) for v in arg)
    if isinstance(value, dict):
        resolved = {k: resolve(v, refs) for k, v in value.items()}
        return {k: v for k, v in resolved.items() if v is not NO_VALUE}
    if isinstance(value, list):
        return [v for v in (resolve(item, refs) for item in value) if v is not NO_VALUE]
    return value
