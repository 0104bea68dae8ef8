from __future__ import annotations

import pytest
from pydantic import ValidationError

from infra.settings import DEV_SECRET, Profile, Settings, get_settings

STRONG = "s" * 40


def test_laptop_defaults_need_no_configuration(settings_env: object) -> None:
    settings = get_settings()
    assert settings.profile is Profile.test
    assert settings.database.url.startswith("sqlite:///")
    assert settings.dask.address is None
    assert settings.prefect.api_url is None
    assert settings.detect.analysis_fps == 5.0


def test_nested_sections_read_from_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FILMROOM_DATABASE__URL", "postgresql+psycopg://u:p@127.0.0.1:5432/f")
    monkeypatch.setenv("FILMROOM_DASK__ADDRESS", "tcp://10.0.0.5:8786")
    monkeypatch.setenv("FILMROOM_DETECT__ANALYSIS_FPS", "2.5")
    monkeypatch.setenv("FILMROOM_WEBHOOKS__ALLOW_HOSTS", '["127.0.0.1"]')
    settings = Settings()
    assert settings.database.url == "postgresql+psycopg://u:p@127.0.0.1:5432/f"
    assert settings.dask.address == "tcp://10.0.0.5:8786"
    assert settings.detect.analysis_fps == 2.5
    assert settings.webhooks.allow_hosts == ["127.0.0.1"]


@pytest.mark.parametrize(
    ("env", "error_fragment"),
    [
        ({"FILMROOM_DETECT__ANALYSIS_FPS": "0"}, "analysis_fps"),
        ({"FILMROOM_DETECT__TRACKER": "sort"}, "tracker"),
        ({"FILMROOM_API__PORT": "70000"}, "port"),
        ({"FILMROOM_PROFILE": "staging"}, "profile"),
    ],
)
def test_invalid_values_are_refused_with_the_field_named(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], error_fragment: str
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError, match=error_fragment):
        Settings()


def test_production_profile_refuses_development_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FILMROOM_PROFILE", "prod")
    with pytest.raises(ValidationError) as caught:
        Settings()
    message = str(caught.value)
    for name in ("webhooks.signing_secret", "api.jwt_secret", "api.link_secret"):
        assert name in message


def test_production_profile_refuses_short_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FILMROOM_PROFILE", "prod")
    monkeypatch.setenv("FILMROOM_WEBHOOKS__SIGNING_SECRET", STRONG)
    monkeypatch.setenv("FILMROOM_API__JWT_SECRET", "short")
    monkeypatch.setenv("FILMROOM_API__LINK_SECRET", STRONG)
    with pytest.raises(ValidationError, match=r"api\.jwt_secret"):
        Settings()


def test_production_profile_accepts_real_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FILMROOM_PROFILE", "prod")
    for name in ("WEBHOOKS__SIGNING_SECRET", "API__JWT_SECRET", "API__LINK_SECRET"):
        monkeypatch.setenv(f"FILMROOM_{name}", STRONG)
    settings = Settings()
    assert settings.webhooks.signing_secret == STRONG
    assert settings.api.jwt_secret != DEV_SECRET


def test_every_setting_is_described() -> None:
    def walk(model: type, prefix: str) -> list[str]:
        missing = []
        for name, field in model.model_fields.items():  # type: ignore[attr-defined]
            if not field.description:
                missing.append(prefix + name)
            annotation = field.annotation
            if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
                missing += walk(annotation, f"{prefix}{name}.")
        return missing

    assert walk(Settings, "") == []
