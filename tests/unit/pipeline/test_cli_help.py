"""The CLI explains itself: help on every command and option, and the config's schema."""

from __future__ import annotations

import argparse
import json

from serlens.pipeline.cli import build_parser, main
from serlens.pipeline.config import StudyArgs, load_study_args
from serlens.pipeline.config_schema import config_keys, schema_text


def walk(parser: argparse.ArgumentParser, path: str = "serlens"):
    """Yield ``(where, action)`` for every option and positional of the parser and its subcommands."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                yield f"{path} {name}", argparse.Action([name], name, help=helps.get(name))
                yield from walk(sub, f"{path} {name}")
        else:
            yield path, action


def test_every_command_and_option_has_help():
    seen = list(walk(build_parser()))
    assert len(seen) > 30
    missing = [f"{where}: {'/'.join(action.option_strings) or action.dest}" for where, action in seen
               if not (action.help or "").strip()]
    assert missing == []


def test_schema_lists_every_key_with_a_description_type_and_the_default_a_run_uses():
    keys = config_keys()
    resolved = StudyArgs().model_dump(mode="json")
    assert len(keys) > 70
    undocumented = [k.key for k in keys if len(k.description) < 10]
    assert undocumented == []
    for key in keys:
        section, name = key.key.split(".", 1)
        assert key.default == resolved[section][name], key.key
        assert key.type
    by_key = {k.key: k for k in keys}
    assert by_key["train.lr"].bounds == "> 0" and by_key["train.lr"].type == "float"
    assert by_key["dataset.kind"].type == "one of: demo, crema-d, manifest"
    # Every key the schema lists is one a run accepts with --set (and nothing else is).
    load_study_args(None, [f"{k.key}={json.dumps(k.default)}" for k in keys])


def test_config_schema_command_as_text_and_json(capsys):
    assert main(["config", "schema"]) == 0
    text = capsys.readouterr().out
    assert text == schema_text()
    assert "train.lr  (float, > 0; default: 1e-05)" in text and "learning rate" in text
    assert main(["config", "schema", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["key"] for r in rows] == [k.key for k in config_keys()]
    assert set(rows[0]) == {"key", "type", "default", "bounds", "description"}
