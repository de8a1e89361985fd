"""Config: `autoroute check-config` and `autoroute serve` refuse the same files with the same message (exit 2, no
traceback), naming the line of the value at fault; a YAML tag that would run code is refused, never run.

(Enabling auth by a hot reload is an auth case, added with issue 13 item 7.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import REPO, _env

from .conftest import Figures, free_port

MODELS = """models:
  - name: alpha
    litellm_params: {model: openai/alpha, api_base: "http://127.0.0.1:9/v1"}
  - name: beta
    litellm_params: {model: openai/beta, api_base: "http://127.0.0.1:9/v1"}
"""
REFUSED = {
    "auth key variable unset": (MODELS + "auth: {api_key_envs: [FAULTS_UNSET_CLIENT_KEY]}\n",
                                "auth.api_key_envs names FAULTS_UNSET_CLIENT_KEY, but that environment variable is "
                                "not set"),
    "queue_size -1": (MODELS + "storage: {queue_size: -1}\n", "storage.queue_size must be >= 1"),
    "batch_size 0": (MODELS + "storage: {batch_size: 0}\n", "storage.batch_size must be >= 1"),
    "timeout_s -5": (MODELS.replace("/v1\"}", "/v1\", timeout_s: -5}", 1), "timeout_s must be > 0, got -5.0"),
}  # fmt: skip


def _run_both(tmp_path: Path, configs: dict[str, str], serve: bool = True) -> dict[str, list[tuple[int, str]]]:
    """Each config through `check-config` and (unless told not to) `serve`, all at once: name -> [(exit status,
    stderr)] for each command."""
    running = {}
    for i, (name, text) in enumerate(configs.items()):
        path = tmp_path / f"config-{i}.yaml"
        path.write_text(text)
        commands = [["check-config", str(path)]]
        if serve:
            commands.append(
                ["serve", "--config", str(path), "--port", str(free_port()), "--data-dir", str(tmp_path / "d")]
            )
        running[name] = [subprocess.Popen([sys.executable, "-m", "proxy.cli", *command], cwd=REPO, env=_env(),
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                         for command in commands]  # fmt: skip
    results = {}
    for name, procs in running.items():
        results[name] = []
        for proc in procs:
            try:
                _, err = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:  # it took the config and served
                proc.kill()
                _, err = proc.communicate()
            results[name].append((proc.returncode, err))
    assert not (tmp_path / "d").exists(), "serve never started"
    return results


def test_config_check_matches_serve(tmp_path: Path, figures: Figures) -> None:
    """What `serve` refuses, `check-config` refuses, with the same one-line message and exit status 2: an auth key
    variable that is not set, storage sizes below 1, a timeout of -5 s."""
    results = _run_both(tmp_path, {name: text for name, (text, _) in REFUSED.items()})
    for name, (_, message) in REFUSED.items():
        (check_rc, check_err), (serve_rc, serve_err) = results[name]
        assert check_rc == serve_rc == 2, (name, check_err, serve_err)
        assert message in check_err and check_err == serve_err, (name, check_err, serve_err)
        assert "Traceback" not in serve_err
    figures["configs"] = len(REFUSED)
    figures.summary = "{configs} bad configs: check-config and serve both exit 2 with the same message"


def test_config_yaml_tag(tmp_path: Path, figures: Figures) -> None:
    """A `!!python/...` tag is refused by both commands naming the tag and its line, no traceback, whether it tags a
    value, a list (which the decoder once read as a plain list: `api_key_envs: !!python/object/apply:os.system []`
    passed) or a mapping, and what it names is never run."""
    marker = tmp_path / "ran"
    configs = {
        "python/name": MODELS + "storage: {data_dir: !!python/name:os.system x}\n",
        "python/object/apply": MODELS + "auth: {api_key_envs: !!python/object/apply:os.system []}\n",
        "python/object/new": MODELS + f"auth: !!python/object/new:subprocess.Popen {{args: [touch, {marker}]}}\n",
    }
    results = _run_both(tmp_path, configs)
    line = len(MODELS.splitlines()) + 1
    for name in configs:
        for rc, err in results[name]:
            assert rc == 2 and "Traceback" not in err, err
            assert f"unsupported YAML value 'tag:yaml.org,2002:{name}" in err and f"at line {line}" in err, err
    assert not marker.exists()
    figures["tags"] = len(configs)
    figures.summary = "{tags} code-running tags: refused by both commands at their line, never run"


def test_config_error_lines(tmp_path: Path, figures: Figures) -> None:
    """Errors found across entries name the line of the entry at fault, not the file's first line: a duplicate
    model, a rule naming an unknown model, a rule for an unknown task, a duplicate or misspelt key. (`serve` runs
    the same validation: test_config_check_matches_serve.)"""
    rules = "routing_rules:\n  - task: coding\n    candidates:\n      - {model: alpha}\n      - {model: gamma}\n"
    configs = {
        "duplicate model": (MODELS + "  - name: alpha\n    litellm_params: {model: openai/other}\n",
                            "models[2].name", "duplicate model 'alpha'", 6),
        "unknown model in a rule": (MODELS + rules, "routing_rules[0].candidates[1].model",
                                    "names unknown model 'gamma'", 10),
        "rule for an unknown task": (MODELS + rules.replace("coding", "astrology").replace("gamma", "beta"),
                                     "routing_rules[0].task", "unknown task 'astrology'", 7),
        "duplicate key": (MODELS + "storage: {}\nstorage: {}\n", "duplicate key 'storage'", "", 7),
        "misspelt key": (MODELS.replace("  - name: beta", "  - nmae: beta"), "unknown key 'nmae'", "", 4),
    }  # fmt: skip
    results = _run_both(tmp_path, {name: text for name, (text, *_) in configs.items()}, serve=False)
    for name, (_, where, what, line) in configs.items():
        for rc, err in results[name]:
            assert rc == 2 and "Traceback" not in err, (name, err)
            assert where in err and what in err and f"config-{list(configs).index(name)}.yaml:{line}" in err, (
                name, err
            )  # fmt: skip
    figures["errors"] = len(configs)
    figures.summary = "{errors} kinds of error found across entries, each naming its own line"
