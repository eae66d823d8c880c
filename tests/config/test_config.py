"""Config validation: every bad input names the file, the key and what was expected."""

from pathlib import Path

import pytest

from pcsim.config import ConfigError, load_config
from pcsim.config.schema import SPARSE_CROSSOVER
from pcsim.units import UnitError, parse_quantity

REPO = Path(__file__).resolve().parents[2]

GOOD = """
network:
  layers:
    - {size: 4}
    - {size: 3, activation: tanh}
    - {size: 2}
dynamics: {tau_x: 10 ms, dt: 0.5 ms, n_steps: 4}
learning: {lr: 0.01, epochs: 1}
"""


def _write(tmp_path, text, name="exp.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("path", sorted((REPO / "networks").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_networks_validate(path):
    """Every experiment file in networks/ is a valid config."""
    cfg = load_config(path)
    assert cfg.network.layers[0].size > 0


def test_units_are_parsed_into_seconds(tmp_path):
    cfg = load_config(_write(tmp_path, GOOD))
    assert cfg.dynamics.tau_x == pytest.approx(10e-3, rel=1e-15)
    assert cfg.dynamics.dt == pytest.approx(0.5e-3, rel=1e-15)
    assert cfg.dynamics.eta_x == pytest.approx(0.05, rel=1e-12)
    assert cfg.dynamics.tau_w == float("inf")


@pytest.mark.parametrize("text, key, expected", [
    (GOOD.replace("lr: 0.01", "lr: 0.01, lrr: 3"), "learning.lrr", "unknown key"),
    (GOOD.replace("lr: 0.01", "lr: fast"), "learning.lr", "valid number"),
    (GOOD.replace("lr: 0.01", "lr: -1"), "learning.lr", "greater than 0"),
    (GOOD.replace("tau_x: 10 ms", "tau_x: 10 mV"), "dynamics.tau_x", "not a quantity in s"),
    (GOOD.replace("tau_x: 10 ms", "tau_x: 0 ms"), "dynamics.tau_x", "greater than 0"),
    (GOOD.replace("activation: tanh", "activation: tanhh"), "network.layers.1.activation",
     "'identity', 'tanh'"),
    (GOOD.replace("{size: 3, activation: tanh}", "{size: 0}"), "network.layers.1.size",
     "greater than 0"),
    (GOOD.replace("n_steps: 4", "n_steps: 4, duration: 5 ms"), "dynamics",
     "either n_steps or duration"),
    ("learning: {lr: 0.1}\n", "network", "required key is missing"),
    # booleans are not numbers (pydantic alone would read true as 1 and 1.0)
    (GOOD.replace("{size: 3, activation: tanh}", "{size: true}"), "network.layers.1.size",
     "got a boolean"),
    (GOOD.replace("lr: 0.01", "lr: false"), "learning.lr", "got a boolean"),
    (GOOD + "run: {threads: 1000000000}\n", "run.threads", "less than or equal to 1024"),
])
def test_bad_config_names_file_key_and_expectation(tmp_path, text, key, expected):
    """Unknown keys, wrong types, bad units and out-of-range values raise ConfigError
    whose message holds the file path, the dotted key and what was expected."""
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    assert f"{key}:" in message
    assert expected in message


def test_not_yaml_and_missing_file(tmp_path):
    path = _write(tmp_path, "network: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "absent.yaml")


def test_duplicate_keys_and_endless_files_are_refused(tmp_path):
    """A key written twice is an error naming it and both lines (YAML alone keeps the
    last); a file past 1 MiB (a path to /dev/zero) is refused without reading it all;
    a real boolean setting still takes true."""
    path = _write(tmp_path, GOOD + "learning: {lr: 0.5, epochs: 2}\n")
    with pytest.raises(ConfigError, match=r"key 'learning' is written twice \(lines 8 and 9\)"):
        load_config(path)
    with pytest.raises(ConfigError, match="written twice"):
        load_config(_write(tmp_path, GOOD.replace("lr: 0.01", "lr: 0.01, lr: 0.02")))
    big = _write(tmp_path, GOOD + "#" * (1 << 20))
    with pytest.raises(ConfigError, match=f"{big}: larger than 1 MiB"):
        load_config(big)
    if Path("/dev/zero").exists():
        with pytest.raises(ConfigError, match="larger than 1 MiB"):
            load_config("/dev/zero")
    assert load_config(_write(tmp_path, GOOD + "events: {enabled: true}\n")).events.enabled


def test_overrides_replace_dotted_keys_and_are_validated(tmp_path):
    path = _write(tmp_path, GOOD)
    cfg = load_config(path, {"learning.epochs": 3, "network.layers.1.size": 7})
    assert cfg.learning.epochs == 3 and cfg.network.layers[1].size == 7
    with pytest.raises(ConfigError, match="learning.epochs"):
        load_config(path, {"learning.epochs": -2})
    with pytest.raises(ConfigError, match="not an index"):
        load_config(path, {"network.layers.9.size": 3})


def test_parse_quantity_rejects_garbage():
    assert parse_quantity("2.5 us", "s") == pytest.approx(2.5e-6, rel=1e-15)
    assert parse_quantity("3.1 pJ", "J") == pytest.approx(3.1e-12, rel=1e-15)
    for bad in ("ten ms", "5 kg", True, [1]):
        with pytest.raises(UnitError):
            parse_quantity(bad, "s")


@pytest.mark.parametrize("events, expected", [
    ("{enabled: true, theta: -0.1}", "theta must be finite and >= 0"),
    ("{enabled: true, theta: {value_1: 0.1}}", "theta key 'value_1'"),
    ("{enabled: true, payload: integer, theta: 0}", "every theta must be > 0"),
    ("{enabled: true, payload: spikes}", "'graded' or 'integer'"),
])
def test_bad_events_section(tmp_path, events, expected):
    path = _write(tmp_path, GOOD + f"events: {events}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value) and "events" in str(info.value)
    assert expected in str(info.value)


def test_events_theta_per_population(tmp_path):
    cfg = load_config(_write(tmp_path, GOOD + "events: {enabled: true, theta: "
                                              "{value: 0.1, error_l2: 0.01, default: 0.5}}\n"))
    assert cfg.events.theta_for("value_l0") == 0.1
    assert cfg.events.theta_for("error_l2") == 0.01
    assert cfg.events.theta_for("error_l1") == 0.5


def test_event_mode_settings_load_and_are_checked(tmp_path):
    """Event mode with plastic weights loads (its receivers are re-synced, SPEC 3), and
    the execution settings are validated with the field named."""
    path = _write(tmp_path, GOOD.replace("n_steps: 4", "n_steps: 4, tau_w: 1 s")
                  + "events: {enabled: true, execution: sparse, carry: true}\n")
    cfg = load_config(path)
    assert cfg.events.execution == "sparse" and cfg.events.carry
    assert cfg.events.crossover == SPARSE_CROSSOVER
    for bad, field in (("execution: fastest", "execution"), ("crossover: 0", "crossover"),
                       ("crossover: 1.5", "crossover")):
        path = _write(tmp_path, GOOD + f"events: {{enabled: true, {bad}}}\n")
        with pytest.raises(ConfigError, match=field):
            load_config(path)




@pytest.mark.parametrize("override, first_line", [
    ({"learning.lrr": 0.1}, "learning.lrr: unknown key; did you mean 'lr'? (got 0.1)"),
    ({"network.layers.1.sise": 3}, "network.layers.1.sise: unknown key; did you mean 'size'?"),
    ({"dynamics.tau": 3}, "dynamics.tau: unknown key; did you mean 'tau_x'?"),
    ({"run.device": "tpu"}, "run.device: expected 'auto', 'cpu', 'cuda' or 'cuda:N' (N a GPU "
                            "index) (got 'tpu')"),
    ({"learning.zzzz": 1}, "learning.zzzz: unknown key (not one pcsim knows; check its "
                           "spelling)")])
def test_first_line_names_file_key_and_a_close_match(override, first_line):
    """The error's first line names the file and the key, with the known key closest to
    a misspelt one, and says what a patterned key takes in words, not as a regex."""
    path = REPO / "networks" / "mnist_pc.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path, override)
    first = str(info.value).splitlines()[0]
    assert first.startswith(f"{path}: invalid configuration: {first_line}"), first
    assert "^(" not in str(info.value)
