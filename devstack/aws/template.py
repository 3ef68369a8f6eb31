"""Read template.yaml, the one definition of the stack's resources and settings."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import yaml

from devstack.aws.account import REGION

TEMPLATE_PATH = Path(__file__).resolve().parents[2] / "template.yaml"

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


def load_template(path: Path = TEMPLATE_PATH) -> dict[str, Any]:
    with path.open() as handle:
        loaded: dict[str, Any] = yaml.load(handle, Loader=_CfnLoader)  # noqa: S506 - a SafeLoader subclass
        return loaded


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


def translate(template: dict[str, Any], parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    """The plain CloudFormation that `sam deploy` would create, translated offline (in the local region)."""
    import boto3
    from samtranslator.parser.parser import Parser
    from samtranslator.translator.translator import Translator

    fragment = copy.deepcopy(template)
    # The translator wants code in S3, as `sam package` would leave it.
    fragment.get("Globals", {}).get("Function", {})["CodeUri"] = "s3://local-artifacts/functions.zip"
    for resource in fragment["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function" and "CodeUri" in resource.get("Properties", {}):
            resource["Properties"]["CodeUri"] = "s3://local-artifacts/functions.zip"
    translator = Translator(None, Parser(), boto_session=boto3.Session(region_name=REGION))
    translated: dict[str, Any] = translator.translate(
        fragment,
        parameter_values=dict(parameters or {}),
        passthrough_metadata=True,
        get_managed_policy_map=_NoManagedPolicies().load,
    )
    return translated
