# SPDX-License-Identifier: Apache-2.0
"""Where things live: defaults, config file, kernel command line, env, --root."""

from __future__ import annotations

import io
import json

import pytest

from torcx import log as tlog
from torcx import paths as tpaths
from torcx.errors import ConfigError, SchemaError


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def config(root, value, where="etc/torcx/config.json"):
    return write(root / where, json.dumps({"kind": "torcx-config-v0", "value": value}))


def load(root, env=None, **kw):
    return tpaths.load(str(root), environ=env or {}, **kw)


def test_defaults_without_any_file(tmp_path):
    """With no config, env or os-release the SPEC defaults apply."""
    p = load(tmp_path)
    assert (p.base_dir, p.run_dir, p.conf_dir, p.usr) == (
        "/var/lib/torcx", "/run/torcx", "/etc/torcx", "/usr")
    assert p.oem == "/usr/share/oem/torcx"
    assert p.seal_file == "/run/metadata/torcx"
    assert p.bin_dir == "/run/torcx/bin"
    assert p.unpack_dir == "/run/torcx/unpack"
    assert p.run_profile == "/run/torcx/profile.json"
    assert p.next_profile == "/etc/torcx/next-profile"
    assert p.profile_dirs == ("/usr/share/torcx/profiles", "/usr/share/oem/torcx/profiles",
                              "/etc/torcx/profiles")
    assert p.remote_dirs == ("/usr/share/torcx/remotes", "/usr/share/oem/torcx/remotes",
                             "/etc/torcx/remotes")
    assert p.os_version == ""
    assert p.config_file is None
    assert p.store_paths == ("/usr/share/torcx/store", "/usr/share/oem/torcx/store",
                             "/var/lib/torcx/store")


def test_store_order_with_versioned_stores(tmp_path):
    """VERSION_ID adds versioned OEM and user stores before their plain ones."""
    write(tmp_path / "usr/lib/os-release", 'ID=flatcar\nVERSION_ID="3510.2.1"\n')
    config(tmp_path, {"store_paths": ["/srv/a", "/srv/b"]})
    p = load(tmp_path, {"TORCX_STOREPATH": "/x:/y"})
    assert p.os_version == "3510.2.1"
    assert p.store_paths == (
        "/usr/share/torcx/store",
        "/usr/share/oem/torcx/store/3510.2.1",
        "/usr/share/oem/torcx/store",
        "/srv/a",
        "/srv/b",
        "/var/lib/torcx/store/3510.2.1",
        "/var/lib/torcx/store",
        "/x",
        "/y",
    )


@pytest.mark.parametrize("line, expected", [
    ('VERSION_ID="12"', "12"),
    ("VERSION_ID='12.1'", "12.1"),
    ("VERSION_ID=12.2", "12.2"),
    ('  VERSION_ID = "3"  ', "3"),
])
def test_version_id_quotes_are_stripped(tmp_path, line, expected):
    """VERSION_ID is unquoted by os-release rules (upstream kept the quotes)."""
    write(tmp_path / "usr/lib/os-release", f"# comment\nNAME=x\n{line}\n")
    assert load(tmp_path).os_version == expected


def test_config_file_overrides_defaults(tmp_path):
    """CONFDIR/config.json sets base_dir, run_dir and conf_dir."""
    config(tmp_path, {"base_dir": "/b", "run_dir": "/r/", "conf_dir": "/c"})
    p = load(tmp_path)
    assert (p.base_dir, p.run_dir, p.conf_dir) == ("/b", "/r", "/c")
    assert p.config_file == "/etc/torcx/config.json"
    assert p.bin_dir == "/r/bin"


def test_env_overrides_config_file(tmp_path):
    """TORCX_BASEDIR/RUNDIR win over the config file."""
    config(tmp_path, {"base_dir": "/b", "run_dir": "/r"})
    p = load(tmp_path, {"TORCX_BASEDIR": "/eb", "TORCX_RUNDIR": "/er"})
    assert (p.base_dir, p.run_dir) == ("/eb", "/er")


def test_env_confdir_locates_the_config_file(tmp_path):
    """With TORCX_CONFDIR set, the config file is read from that folder."""
    config(tmp_path, {"base_dir": "/from-env-confdir"}, where="opt/conf/config.json")
    config(tmp_path, {"base_dir": "/from-default"})
    p = load(tmp_path, {"TORCX_CONFDIR": "/opt/conf"})
    assert p.base_dir == "/from-env-confdir"
    assert p.conf_dir == "/opt/conf"


def test_cmdline_config_wins_over_confdir_config(tmp_path):
    """torcx_config= on the kernel command line replaces CONFDIR/config.json."""
    config(tmp_path, {"base_dir": "/from-confdir"})
    config(tmp_path, {"base_dir": "/from-cmdline"}, where="boot/torcx.json")
    write(tmp_path / "proc/cmdline", "ro quiet torcx_config=/boot/torcx.json console=ttyS0\n")
    p = load(tmp_path)
    assert p.base_dir == "/from-cmdline"
    assert p.config_file == "/boot/torcx.json"


def test_cmdline_config_missing_warns_and_uses_defaults(tmp_path):
    """A torcx_config= file that does not exist is a warning, not a failure."""
    config(tmp_path, {"base_dir": "/from-confdir"})
    write(tmp_path / "proc/cmdline", "torcx_config=/nope.json\n")
    stream = io.StringIO()
    p = load(tmp_path, log=tlog.Logger(tlog.DEBUG, stream=stream))
    assert p.base_dir == "/var/lib/torcx"
    assert "/nope.json" in stream.getvalue() and "ignoring" in stream.getvalue()


def test_cmdline_without_torcx_config_uses_confdir(tmp_path):
    """A command line without torcx_config= leaves CONFDIR/config.json in charge."""
    config(tmp_path, {"base_dir": "/from-confdir"})
    write(tmp_path / "proc/cmdline", "ro quiet\n")
    assert load(tmp_path).base_dir == "/from-confdir"


def test_cmdline_parser_takes_the_last_value():
    """Like the kernel, the last torcx_config= word counts."""
    assert tpaths.cmdline_config_path("a torcx_config=/1 b torcx_config=/2") == "/2"
    assert tpaths.cmdline_config_path("torcx_configx=/1") is None
    assert tpaths.cmdline_config_path("torcx_config=") is None


@pytest.mark.parametrize("value, expected", [
    ("/a:/b", ["/a", "/b"]),
    ("/a /b", ["/a", "/b"]),
    (" /a:: /b\t/c ", ["/a", "/b", "/c"]),
    ("", []),
])
def test_storepath_split_on_colons_and_blanks(value, expected):
    """TORCX_STOREPATH accepts colons (documented) and blanks (upstream)."""
    assert tpaths.split_storepath(value) == expected


@pytest.mark.parametrize("env", [
    {"TORCX_BASEDIR": "var/lib"},
    {"TORCX_RUNDIR": "run"},
    {"TORCX_CONFDIR": "etc"},
    {"TORCX_USR_MOUNTPOINT": "usr"},
    {"TORCX_STOREPATH": "/ok:relative/store"},
])
def test_relative_env_path_is_a_config_error(tmp_path, env):
    """Every configured path must be absolute; the error names the variable."""
    with pytest.raises(ConfigError) as e:
        load(tmp_path, env)
    assert next(iter(env)) in str(e.value)


@pytest.mark.parametrize("value", [
    {"base_dir": "rel"},
    {"run_dir": "./run"},
    {"conf_dir": "etc"},
    {"store_paths": ["/ok", "rel"]},
])
def test_relative_config_path_is_a_config_error(tmp_path, value):
    """A relative path in config.json is a ConfigError naming the file and key."""
    config(tmp_path, value)
    with pytest.raises(ConfigError) as e:
        load(tmp_path)
    assert "/etc/torcx/config.json" in str(e.value)
    assert next(iter(value)) in str(e.value)


def test_invalid_config_file_is_a_schema_error(tmp_path):
    """A config file with a wrong type names the host file and JSON path."""
    config(tmp_path, {"base_dir": 3})
    with pytest.raises(SchemaError) as e:
        load(tmp_path)
    assert e.value.jsonpath == "$.value.base_dir"
    assert e.value.filename == str(tmp_path / "etc/torcx/config.json")


def test_usr_mountpoint_moves_vendor_paths(tmp_path):
    """TORCX_USR_MOUNTPOINT relocates the vendor store, profiles and os-release."""
    write(tmp_path / "mnt/usr-b/lib/os-release", "VERSION_ID=99\n")
    write(tmp_path / "usr/lib/os-release", "VERSION_ID=1\n")
    p = load(tmp_path, {"TORCX_USR_MOUNTPOINT": "/mnt/usr-b"})
    assert p.os_version == "99"
    assert p.vendor_store == "/mnt/usr-b/share/torcx/store"
    assert p.profile_dirs[0] == "/mnt/usr-b/share/torcx/profiles"
    assert p.store_paths[0] == "/mnt/usr-b/share/torcx/store"


def test_os_version_override_leaves_out_the_vendor_store(tmp_path):
    """-n OSVER for another OS version searches that version's stores, not the vendor's."""
    write(tmp_path / "usr/lib/os-release", "VERSION_ID=1\n")
    p = load(tmp_path, os_version="2")
    assert p.os_version == "2" and p.detected_os_version == "1"
    assert p.store_paths == ("/usr/share/oem/torcx/store/2", "/usr/share/oem/torcx/store",
                             "/var/lib/torcx/store/2", "/var/lib/torcx/store")
    same = load(tmp_path, os_version="1")
    assert same.store_paths[0] == "/usr/share/torcx/store"


def test_version_with_slash_is_rejected(tmp_path):
    """A VERSION_ID that would escape the store folder is a ConfigError."""
    write(tmp_path / "usr/lib/os-release", "VERSION_ID=../../etc\n")
    with pytest.raises(ConfigError):
        load(tmp_path)


def test_host_maps_logical_paths_under_the_root(tmp_path):
    """host() prefixes the root; logical() undoes it; a root of / is the identity."""
    p = load(tmp_path)
    assert p.host("/run/torcx/bin") == f"{tmp_path}/run/torcx/bin"
    assert p.logical(f"{tmp_path}/run/torcx/bin") == "/run/torcx/bin"
    assert p.logical(str(tmp_path)) == "/"
    with pytest.raises(ValueError):
        p.logical("/elsewhere")
    plain = tpaths.Paths()
    assert plain.host("/run/torcx") == "/run/torcx"


def test_duplicate_store_is_searched_once(tmp_path):
    """A store named twice (config and env) keeps its first position only."""
    config(tmp_path, {"store_paths": ["/var/lib/torcx/store", "/srv/s"]})
    p = load(tmp_path, {"TORCX_STOREPATH": "/srv/s"})
    assert p.store_paths.count("/var/lib/torcx/store") == 1
    assert p.store_paths.count("/srv/s") == 1
    assert p.store_paths.index("/var/lib/torcx/store") < p.store_paths.index("/srv/s")


@pytest.mark.parametrize("content", [
    '{"kind": "torcx-config-v0", "value": {"base_dir": 1}}',
    '{"kind": "torcx-config-v0", "value": {"base_dir": "relative"}}',
    "{not json",
])
def test_lenient_load_ignores_a_broken_config_file(tmp_path, content):
    """strict=False (boot): a bad config file is a warning and the defaults apply."""
    config(tmp_path, {"run_dir": "/elsewhere"}, where="unused.json")
    write(tmp_path / "etc/torcx/config.json", content)
    stream = io.StringIO()
    p = load(tmp_path, {"TORCX_RUNDIR": "/env-run"}, strict=False,
             log=tlog.Logger(tlog.WARNING, stream=stream))
    assert (p.base_dir, p.run_dir) == ("/var/lib/torcx", "/env-run")
    assert p.config_file is None
    assert len(p.problems) == 1 and "/etc/torcx/config.json" in p.problems[0]
    assert "using the defaults" in stream.getvalue()


def test_lenient_load_config_file_that_is_a_folder(tmp_path):
    """strict=False: an unreadable config file (a folder) is tolerated; strict fails."""
    (tmp_path / "etc/torcx/config.json").mkdir(parents=True)
    p = load(tmp_path, strict=False)
    assert p.base_dir == "/var/lib/torcx"
    assert "Is a directory" in p.problems[0]
    with pytest.raises(IsADirectoryError):
        load(tmp_path)


def test_lenient_load_bad_version_id(tmp_path):
    """strict=False: an unusable VERSION_ID means no versioned stores, with a warning."""
    write(tmp_path / "usr/lib/os-release", "VERSION_ID=a/b\n")
    p = load(tmp_path, strict=False)
    assert p.os_version == ""
    assert p.store_paths == ("/usr/share/torcx/store", "/usr/share/oem/torcx/store",
                             "/var/lib/torcx/store")
    assert "VERSION_ID 'a/b'" in p.problems[0]


def test_lenient_load_keeps_env_errors_fatal(tmp_path):
    """strict=False still refuses a relative path from the environment."""
    with pytest.raises(ConfigError):
        load(tmp_path, {"TORCX_RUNDIR": "run"}, strict=False)


def test_host_path_dotdot_stops_at_the_root(tmp_path):
    """A '..' in a configured path cannot lead outside --root."""
    p = tpaths.load(str(tmp_path), environ={"TORCX_RUNDIR": "/run/../../../etc/torcx-x"})
    assert p.host(p.run_dir) == str(tmp_path / "etc/torcx-x")
    assert p.host("/../../etc/passwd") == str(tmp_path / "etc/passwd")
