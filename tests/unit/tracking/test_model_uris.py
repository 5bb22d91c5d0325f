"""``models:/`` URIs: parsed, resolved against a real MLflow registry on sqlite, refused by name."""

import pytest

from serlens.api.promotions import served_model
from serlens.pipeline.config import StudyArgs
from serlens.shared import model_uris, tracking
from serlens.shared.errors import InvalidConfigError, NotFoundError


@pytest.mark.parametrize(("text", "expected"), [
    ("models:/serlens-ser@champion", dict(name="serlens-ser", alias="champion")),
    ("models:/serlens-ser/3", dict(name="serlens-ser", version="3")),
    ("models:/m-0123456789abcdef", dict(model_id="m-0123456789abcdef")),
])
def test_the_three_forms_parse(text, expected):
    uri = model_uris.parse(text)
    assert {k: v for k, v in vars(uri).items() if v is not None and k != "text"} == expected


@pytest.mark.parametrize("text", ["models:/", "models:/serlens-ser", "models:/serlens-ser@", "models:/a/b/c",
                                  "models:serlens-ser@champion", "models:/serlens-ser/latest-ish"])
def test_malformed_uris_are_refused_by_name(text):
    with pytest.raises(InvalidConfigError, match="models:/<name>@<alias>") as raised:
        model_uris.parse(text)
    assert repr(text) in str(raised.value)


def test_folders_and_hub_ids_are_not_uris():
    assert not model_uris.is_model_uri("microsoft/wavlm-large")
    assert not model_uris.is_model_uri("/models/wavlm-large")
    assert model_uris.local_source("/models/wavlm-large", None, None) == "/models/wavlm-large"  # type: ignore[arg-type]


def test_unknown_names_aliases_and_versions_are_named_before_any_download(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = tracking.tracking_config(tmp_path)
    tracking.mlflow_client(config).create_registered_model("serlens-ser")
    for text in ("models:/nobody@champion", "models:/serlens-ser@champion", "models:/serlens-ser/7",
                 "models:/m-00000000000000000000000000000000"):
        with pytest.raises(NotFoundError, match=text.replace("/", "/")):
            model_uris.download(config, text, tmp_path / "cache")
    assert not (tmp_path / "cache").exists()
    # The run config and the API refuse them the same way, before anything runs.
    args = StudyArgs.model_validate({"model": {"name": "models:/serlens-ser@champion"}})
    with pytest.raises(NotFoundError, match="serlens-ser@champion"):
        args.pin_model(tmp_path)
    with pytest.raises(InvalidConfigError, match="models:/oops"):
        served_model("models:/oops", tmp_path)
    assert served_model(None, tmp_path) is None and served_model("/m", tmp_path) == "/m"
