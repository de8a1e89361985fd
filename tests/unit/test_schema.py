"""The closed, typed registry schema: every mistake is an error that names the key and its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.cli import main
from router_plugins.registry import load_registry, parse_registry
from router_plugins.schema import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SOURCE = "cfg.yaml"

ONE_MODEL = """\
models:
  - name: alpha
    litellm_params: {model: openai/alpha}
"""

DEFAULT_TASK_NAMES = {
    "coding", "debugging", "code_review", "testing", "documentation", "planning", "math", "reasoning",
    "knowledge", "writing", "summarization", "extraction", "translation", "chat",
}  # fmt: skip


def config_error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_registry(text, SOURCE)
    return str(info.value)


def line_of(text: str, needle: str) -> int:
    """1-based line of the first line containing `needle`."""
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_minimal_registry_loads() -> None:
    registry = parse_registry(ONE_MODEL, SOURCE)

    assert [m.name for m in registry.models] == ["alpha"]
    assert registry.models[0].litellm_params.model == "openai/alpha"


def test_unknown_key_names_itself_its_line_and_a_suggestion() -> None:
    text = ONE_MODEL + "    context_windw: 4096\n"

    message = config_error(text)

    assert "'context_windw'" in message
    assert f"{SOURCE}:{line_of(text, 'context_windw')}" in message
    assert "did you mean 'context_window'?" in message


def test_unknown_top_level_key_is_an_error() -> None:
    text = ONE_MODEL + "routing_rule: []\n"

    message = config_error(text)

    assert "unknown key 'routing_rule' in the top level" in message
    assert f"{SOURCE}:4" in message
    assert "did you mean 'routing_rules'?" in message


@pytest.mark.parametrize(
    ("line", "path", "expected"),
    [
        ("    latency_ms: fast", "models[0].latency_ms", "expected float, got str 'fast'"),
        ("    context_window: true", "models[0].context_window", "expected int, got bool True"),
        ("    context_window: 1.5", "models[0].context_window", "expected int, got float 1.5"),
        ("    quality: {default: yes}", "models[0].quality.default", "expected float, got bool True"),
        ("    specialized_for: coding", "models[0].specialized_for", "expected a list"),
    ],
)
def test_wrong_type_names_the_path_and_the_line(line: str, path: str, expected: str) -> None:
    text = ONE_MODEL + line + "\n"

    message = config_error(text)

    assert message.startswith(f"{path}: ")
    assert expected in message
    assert f"{SOURCE}:4" in message


def test_an_int_is_accepted_where_a_float_is_expected() -> None:
    registry = parse_registry(ONE_MODEL + "    latency_ms: 250\n", SOURCE)

    assert registry.models[0].latency_ms == 250.0
    assert isinstance(registry.models[0].latency_ms, float)


@pytest.mark.parametrize(
    ("section", "path", "value"),
    [
        ("storage: {prompt_text: everything}", "storage.prompt_text", "'everything'"),
        ("router: {default_preference: fastest}", "router.default_preference", "'fastest'"),
        ("storage: {backend: mysql}", "storage.backend", "'mysql'"),
    ],
)
def test_literal_values_are_checked(section: str, path: str, value: str) -> None:
    message = config_error(ONE_MODEL + section + "\n")

    assert message.startswith(f"{path}: {value} is not one of")
    assert f"{SOURCE}:4" in message


def test_literal_accepts_its_allowed_values() -> None:
    registry = parse_registry(ONE_MODEL + "storage: {prompt_text: none}\nrouter: {default_preference: cost}\n", SOURCE)

    assert registry.storage.prompt_text == "none"
    assert registry.router.default_preference == "cost"


def test_missing_required_key() -> None:
    text = "models:\n  - name: alpha\n"

    message = config_error(text)

    assert "models[0]: missing required key 'litellm_params'" in message
    assert f"{SOURCE}:2" in message


def test_missing_models_section() -> None:
    assert "missing required key 'models'" in config_error("storage: {data_dir: x}\n")


def test_duplicate_key_in_a_section() -> None:
    text = ONE_MODEL + "    name: beta\n"

    message = config_error(text)

    assert "duplicate key 'name' in models[0]" in message
    assert f"{SOURCE}:4" in message


def test_duplicate_key_in_a_mapping_field() -> None:
    message = config_error(ONE_MODEL + "    quality: {default: 0.5, default: 0.9}\n")

    assert "duplicate key 'default'" in message


def test_duplicate_model_names_name_the_second_ones_line() -> None:
    text = ONE_MODEL + "  - name: beta\n    litellm_params: {model: openai/b}\n  - name: alpha  # again\n" + (
        "    litellm_params: {model: openai/other}\n"
    )

    assert f"{SOURCE}:{line_of(text, '# again')}: duplicate model 'alpha'" in config_error(text)


def test_rule_naming_an_unknown_model_names_its_line() -> None:
    text = ONE_MODEL + "routing_rules:\n  - task: coding\n    candidates:\n      - model: alpha\n      - model: gamma\n"

    message = config_error(text)

    assert f"{SOURCE}:{line_of(text, 'gamma')}: routing rule for 'coding' names unknown model 'gamma'" in message


def test_rule_for_an_unknown_task_names_its_line() -> None:
    text = ONE_MODEL + "routing_rules:\n  - task: juggling\n    candidates: [{model: alpha}]\n"

    assert f"{SOURCE}:{line_of(text, 'juggling')}: routing rule for unknown task 'juggling'" in config_error(text)


def test_model_quality_for_an_unknown_task() -> None:
    text = ONE_MODEL + "  - name: beta\n    litellm_params: {model: openai/b}\n    quality: {juggling: 0.5}\n"

    assert f"{SOURCE}:{line_of(text, 'beta')}: model 'beta' names unknown task 'juggling'" in config_error(text)


@pytest.mark.parametrize("quality", ["1.01", "-0.1"])
def test_quality_outside_zero_to_one(quality: str) -> None:
    message = config_error(ONE_MODEL + f"    quality: {{default: {quality}}}\n")

    assert "quality for 'default' must be in [0, 1]" in message
    assert f"{SOURCE}:2" in message


def test_quality_at_the_bounds_is_accepted() -> None:
    registry = parse_registry(ONE_MODEL + "    quality: {default: 0, chat: 1}\n", SOURCE)

    assert dict(registry.models[0].quality) == {"default": 0.0, "chat": 1.0}


@pytest.mark.parametrize("name", ["auto", "'auto:cost'", "'-lead'", "'has space'"])
def test_reserved_or_malformed_model_name_is_rejected(name: str) -> None:
    message = config_error(ONE_MODEL.replace("name: alpha", f"name: {name}"))

    assert "is not allowed" in message


def test_bad_regex_pattern_is_rejected() -> None:
    text = ONE_MODEL + "tasks:\n  - name: chat\n    patterns: ['(unclosed']\n"

    message = config_error(text)

    assert "bad pattern '(unclosed'" in message
    assert f"{SOURCE}:{line_of(text, '- name: chat')}" in message


def test_fallback_task_must_exist() -> None:
    assert "router.fallback_task 'smalltalk'" in config_error(ONE_MODEL + "router: {fallback_task: smalltalk}\n")


def test_default_task_taxonomy_is_used_without_a_tasks_section() -> None:
    registry = parse_registry(ONE_MODEL, SOURCE)

    names = {t.name for t in registry.tasks}
    assert DEFAULT_TASK_NAMES <= names
    assert all(t.description for t in registry.tasks)


def test_a_tasks_section_replaces_the_default_taxonomy() -> None:
    text = ONE_MODEL + "tasks:\n  - name: chat\n  - name: poetry\n    keywords: [sonnet]\n"

    registry = parse_registry(text, SOURCE)

    assert [t.name for t in registry.tasks] == ["chat", "poetry"]


def test_languages_default_to_any_and_list_iso_codes() -> None:
    text = ONE_MODEL + "    languages: [en, zh, no, fil]\n  - name: beta\n    litellm_params: {model: openai/beta}\n"

    alpha, beta = parse_registry(text, SOURCE).models

    assert alpha.languages == ("en", "zh", "no", "fil"), "a bare `no` is Norwegian, not YAML's false"
    assert alpha.serves("zh") and not alpha.serves("fr")
    assert beta.languages is None and beta.serves("fr")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("[EN]", "language 'EN' is not an ISO 639-1 code"),
        ("[english]", "language 'english' is not an ISO 639-1 code"),
        ("[zh-CN]", "language 'zh-CN' is not an ISO 639-1 code"),
        ("[]", "languages must name at least one language"),
        ("en", "models[0].languages: expected a list"),
        ("[en, 7]", "models[0].languages[1]: expected str, got int 7"),
    ],
)
def test_languages_are_validated(value: str, expected: str) -> None:
    text = ONE_MODEL + f"    languages: {value}\n"

    message = config_error(text)

    assert expected in message
    assert f"{SOURCE}:" in message


def test_a_misspelt_languages_key_is_still_an_error() -> None:
    message = config_error(ONE_MODEL + "    language: [en]\n")

    assert "unknown key 'language'" in message and "did you mean 'languages'?" in message


def test_empty_file_is_an_error() -> None:
    assert "the file is empty" in config_error("")


def test_invalid_yaml_is_an_error() -> None:
    assert "not valid YAML" in config_error("models: [\n")


@pytest.mark.parametrize("relative", ["config.yaml", "examples/local-fake.yaml"])
def test_shipped_configs_load(relative: str) -> None:
    registry = load_registry(ROOT / relative)

    assert registry.models
    assert DEFAULT_TASK_NAMES <= {t.name for t in registry.tasks}
    assert all(registry.model(c.model) for rule in registry.routing_rules for c in rule.candidates)


def test_load_registry_on_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_registry(tmp_path / "absent.yaml")


# -- `autoroute check-config` -----------------------------------------------------------------------------------


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # main() sets these with setdefault; setting them here lets monkeypatch restore the environment afterwards.
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")


@pytest.mark.usefixtures("cli_env")
def test_check_config_accepts_a_good_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "good.yaml"
    path.write_text(ONE_MODEL, encoding="utf-8")

    assert main(["check-config", str(path)]) == 0

    out, err = capsys.readouterr()
    assert f"{path}: ok (1 models" in out
    assert err == ""


@pytest.mark.usefixtures("cli_env")
def test_check_config_rejects_a_bad_file_naming_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(ONE_MODEL + "    qualty: {default: 0.5}\n", encoding="utf-8")

    assert main(["check-config", str(path)]) == 2

    out, err = capsys.readouterr()
    assert f"{path}:4" in err
    assert "'qualty'" in err
    assert "ok" not in out


@pytest.mark.usefixtures("cli_env")
def test_check_config_notes_unset_key_variables(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AUTOROUTE_TEST_UNSET_KEY", raising=False)
    path = tmp_path / "keys.yaml"
    text = ONE_MODEL.replace("openai/alpha}", "openai/alpha, api_key_env: AUTOROUTE_TEST_UNSET_KEY}")
    path.write_text(text, encoding="utf-8")

    assert main(["check-config", str(path)]) == 0

    assert "unset key variables (their models are left out of routing): AUTOROUTE_TEST_UNSET_KEY" in (
        capsys.readouterr().out
    )


@pytest.mark.usefixtures("cli_env")
@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("storage: {queue_size: -1}\n", "storage.queue_size must be >= 1"),
        ("storage: {batch_size: 0}\n", "storage.batch_size must be >= 1"),
        ("storage: {flush_interval_ms: 0}\n", "storage.flush_interval_ms must be >= 1"),
        ("auth: {api_key_envs: [AUTOROUTE_TEST_UNSET_CLIENT_KEY]}\n", "AUTOROUTE_TEST_UNSET_CLIENT_KEY"),
        ("storage: {data_dir: !!python/name:os.system x}\n", "unsupported YAML value"),
    ],
)
def test_check_config_refuses_what_serve_refuses(
    extra: str, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`check-config` runs the validation `serve` runs: sizes, auth variables, tags the safe loader refuses."""
    monkeypatch.delenv("AUTOROUTE_TEST_UNSET_CLIENT_KEY", raising=False)
    path = tmp_path / "config.yaml"
    path.write_text(ONE_MODEL + extra, encoding="utf-8")

    assert main(["check-config", str(path)]) == 2

    out, err = capsys.readouterr()
    assert expected in err and "Traceback" not in err and "ok" not in out


def test_a_timeout_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="timeout_s must be > 0"):
        parse_registry(ONE_MODEL.replace("{model: openai/alpha}", "{model: openai/alpha, timeout_s: -5}"))
