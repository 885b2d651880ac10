"""The JSON schema every recipe (a launcher YAML file) must satisfy."""

from __future__ import annotations

from typing import Any

NAME = {"type": "string", "pattern": "^[a-z][a-z0-9_-]*$"}
# A count is a number, or "n": the -n option of `cm launcher run` / `cm slurm`.
COUNT = {"oneOf": [{"type": "integer", "minimum": 0}, {"const": "n"}]}

ROLE: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["user_data"],
    "properties": {
        "count": COUNT,
        "image": {"type": "string", "minLength": 1},
        "flavor": {"type": "string", "minLength": 1},
        "user_data": {"type": "string", "minLength": 1},  # a template file next to the recipe
        "needs": {"type": "array", "items": NAME, "uniqueItems": True},  # roles whose addresses it needs
        # a public (floating) IP: required (true), or only where the cloud has them
        "public": {"enum": [True, False, "if-available"]},
        "ready": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "marker": {"type": "string", "minLength": 1},  # printed on the console when ready
                "timeout": {"type": "number", "exclusiveMinimum": 0},
            },
        },
        "resizable": {"type": "boolean"},
    },
}

RECIPE: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "description", "roles"],
    "properties": {
        "name": NAME,
        "description": {"type": "string"},
        "command": NAME,  # the recipe's own command: `cm slurm`
        "min_n": {"type": "integer", "minimum": 0},
        "max_n": {"type": "integer", "minimum": 1},
        "params": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "additionalProperties": False,
                "required": ["default"],
                "properties": {"default": {"type": ["string", "number", "boolean"]},
                               "help": {"type": "string"}},
            },
        },
        "secrets": {"type": "array", "items": NAME, "uniqueItems": True},  # generated fresh per cluster
        "files": {"type": "object", "additionalProperties": {"type": "string"}},  # config templates by name
        "ports": {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 65535}},
        "replace": {"type": "integer", "minimum": 0, "maximum": 5},  # replacements per failed node
        "timeouts": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"boot": {"type": "number", "exclusiveMinimum": 0},
                           "configure": {"type": "number", "exclusiveMinimum": 0}},
        },
        "roles": {"type": "object", "minProperties": 1, "propertyNames": NAME, "additionalProperties": ROLE},
        "outputs": {"type": "object", "additionalProperties": {"type": "string"}},
        "resize": {
            "type": "object",
            "additionalProperties": False,
            "required": ["role"],
            "properties": {
                "role": NAME,
                # shell commands run on the login node over ssh; {{ node }} is the node
                "drain": {"type": "string"},
                "busy": {"type": "string"},  # prints the node's jobs, if any
                "kill": {"type": "string"},  # with --force
                "remove": {"type": "string"},
            },
        },
    },
}
