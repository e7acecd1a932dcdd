"""``[cluster]``: flock or etcd ownership, its endpoints, TLS files, auth and lease timing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dispatcher import config
from dispatcher.cli import main

NUMBER = """
[[accounts]]
sid = "AC00000000000000000000000000000001"
auth_token = { value = "test-auth-token-0123456789" }

[[numbers]]
number = "+15550000001"
account = "AC00000000000000000000000000000001"
endpoints = ["https://wa.example.com"]
password = { value = "pw" }
webhook_secret = { value = "hook-secret-0123456789" }
request_timeout = 10.0
"""
ETCD = """
[cluster]
backend = "etcd"
name = "eu-1"
[cluster.etcd]
endpoints = ["http://10.0.0.1:2379", "http://10.0.0.2:2379", "http://10.0.0.3:2379"]
"""
ETCD_E = '[cluster]\nbackend = "etcd"\n[cluster.etcd]\nendpoints = ["http://e:2379"]\n'


def test_no_cluster_section_means_one_daemon_owning_everything() -> None:
    assert config.loads(NUMBER).cluster is None


def test_flock_is_the_default_backend_with_its_defaults() -> None:
    cluster = config.loads(NUMBER + "[cluster]\n").cluster
    assert cluster is not None
    assert (cluster.backend, cluster.name, cluster.peer_listen, cluster.poll_interval) == (
        "flock",
        "default",
        "127.0.0.1:0",
        0.25,
    )
    assert (cluster.lane_listen, cluster.advertise_lane) == (None, None)  # the lane: peer host, any port


def test_the_lane_s_listen_and_advertised_addresses() -> None:
    section = '[cluster]\nlane_listen = "0.0.0.0:7401"\nadvertise_lane = "lane://10.0.0.5:7401"\n'
    cluster = config.loads(NUMBER + section).cluster
    assert cluster is not None
    assert (cluster.lane_listen, cluster.advertise_lane) == ("0.0.0.0:7401", "lane://10.0.0.5:7401")


def test_an_etcd_cluster_with_its_lease_defaults() -> None:
    cluster = config.loads(NUMBER + ETCD).cluster
    assert cluster is not None and cluster.backend == "etcd"
    etcd = cluster.etcd
    assert len(etcd.endpoints) == 3
    assert (etcd.ttl, etcd.margin, etcd.grace, etcd.request_timeout) == (15.0, 1.0, 2.0, 2.0)


def test_tls_files_and_auth_through_the_credentials_mechanism(tmp_path: Path) -> None:
    for name in ("ca.pem", "client.pem", "client.key", "etcd-password"):
        (tmp_path / name).write_text("x\n")
    text = f"""
[cluster]
backend = "etcd"
[cluster.etcd]
endpoints = ["https://10.0.0.1:2379"]
ca_file = "{tmp_path / "ca.pem"}"
cert_file = "{tmp_path / "client.pem"}"
key_file = "{tmp_path / "client.key"}"
username = "wadispatch"
password = {{ file = "{tmp_path / "etcd-password"}" }}
"""
    cluster = config.loads(NUMBER + text).cluster
    assert cluster is not None and cluster.etcd.password is not None
    assert cluster.etcd.password.resolve("p") == "x"


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            '[cluster]\nbackend = "etcd"\n',
            "cluster.etcd.endpoints: the etcd backend needs at least one endpoint",
        ),
        (
            '[cluster]\nbackend = "etcd"\n[cluster.etcd]\nendpoints = ["10.0.0.1:2379"]\n',
            "cluster.etcd.endpoints[0]: expected http(s)://host:port, got '10.0.0.1:2379'",
        ),
        (
            '[cluster]\nbackend = "etcd"\n[cluster.etcd]\nendpoints = ["http://e:2379"]\nttl = 10.0\n',
            "cluster.etcd.ttl: must exceed margin + the longest numbers' request_timeout (1 + 10 s)",
        ),
        (
            '[cluster]\nbackend = "etcd"\n[cluster.etcd]\nendpoints = ["http://e:2379"]\ncert_file = "/x"\n',
            "cluster.etcd: give cert_file and key_file together",
        ),
        (
            ETCD_E + 'ca_file = "/nope.pem"\n',
            "cluster.etcd.ca_file: no such file /nope.pem",
        ),
        (
            '[cluster]\nbackend = "etcd"\n[cluster.etcd]\nendpoints = ["http://e:2379"]\nusername = "u"\n',
            "cluster.etcd: give username and password together",
        ),
        (
            '[cluster]\nbackend = "etcd"\n[cluster.etcd]\nendpoints = ["http://e:2379"]\nusername = "u"\n'
            'password = { env = "WADISPATCH_TEST_UNSET_ETCD_PASSWORD" }\n',
            "cluster.etcd.password.env: environment variable WADISPATCH_TEST_UNSET_ETCD_PASSWORD is not set",
        ),
        ('[cluster]\nbackend = "zookeeper"\n', "cluster.backend"),
        ('[cluster]\nname = "a/b"\n', "cluster.name"),
        ('[cluster]\npeer_listen = "nowhere"\n', "cluster.peer_listen: expected HOST:PORT, got 'nowhere'"),
        (
            '[cluster]\nadvertise_url = "10.0.0.1:9000"\n',
            "cluster.advertise_url: expected http(s)://host:port",
        ),
        ('[cluster]\nlane_listen = "nowhere"\n', "cluster.lane_listen: expected HOST:PORT, got 'nowhere'"),
        (
            '[cluster]\nadvertise_lane = "http://10.0.0.1:9001"\n',
            "cluster.advertise_lane: expected lane://host:port, got 'http://10.0.0.1:9001'",
        ),
        ("[cluster]\ncolour = 1\n", "cluster"),
    ],
)
def test_a_bad_cluster_section_is_refused_naming_the_key(section: str, message: str) -> None:
    with pytest.raises(config.ConfigError, match="^" + re.escape(message)):
        config.loads(NUMBER + section)


def test_tls_files_need_https_endpoints(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("x\n")
    section = ETCD_E + f'ca_file = "{tmp_path / "ca.pem"}"\n'
    with pytest.raises(config.ConfigError, match=r"^cluster\.etcd\.endpoints: TLS files are set"):
        config.loads(NUMBER + section)


def test_check_config_reports_the_cluster(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "dispatcher.toml"
    path.write_text(NUMBER + ETCD)
    assert main(["check-config", str(path)]) == 0
    assert "cluster: etcd 'eu-1' via 3 endpoints" in capsys.readouterr().out
    path.write_text(NUMBER + '[cluster]\nbackend = "etcd"\n')
    assert main(["check-config", str(path)]) == 2
    assert "cluster.etcd.endpoints" in capsys.readouterr().err
