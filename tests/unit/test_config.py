import re

import pytest

from worker.config import load_config, redacted
from worker.errors import ConfigError


def write(tmp_path, text):
    path = tmp_path / "worker.yaml"
    path.write_text(text)
    return path


def test_defaults_without_file():
    config = load_config(None, environ={})
    assert config.kafka.output_topic == "streamclf-output"
    assert config.model.path == "bundled"
    assert config.batching.max_batch_size == 32
    assert config.metrics.port == 9100


def test_yaml_then_env_then_set(tmp_path):
    path = write(tmp_path, "kafka:\n  bootstrap_servers: [a:1]\n  group_id: from-yaml\n"
                           "batching:\n  max_batch_size: 8\n")
    env = {"STREAMCLF__KAFKA__GROUP_ID": "from-env", "STREAMCLF__BATCHING__MAX_WAIT_MS": "7"}
    config = load_config(path, ["batching.max_batch_size=16"], environ=env)
    assert config.kafka.bootstrap_servers == ["a:1"]
    assert config.kafka.group_id == "from-env"
    assert config.batching.max_wait_ms == 7.0
    assert config.batching.max_batch_size == 16


def test_a_yaml_list_may_be_one_string(tmp_path):
    config = load_config(write(tmp_path, "kafka:\n  bootstrap_servers: kafka:9092\n"
                                         "  input_topics: a, b\n"), environ={})
    assert config.kafka.bootstrap_servers == ["kafka:9092"]
    assert config.kafka.input_topics == ["a", "b"]


def test_env_list_as_comma_separated():
    config = load_config(None, environ={"STREAMCLF__KAFKA__BOOTSTRAP_SERVERS": "b1:9092,b2:9092"})
    assert config.kafka.bootstrap_servers == ["b1:9092", "b2:9092"]


def test_env_and_set_strings_are_taken_verbatim():
    """A string key takes the value as typed: YAML would cut a password at ` #`, read `0123`
    as octal 83, `12:30` as 750 (sexagesimal) and `1_000` as 1000, and refuse `yes` or `~` as
    strings."""
    env = {"STREAMCLF__KAFKA__SASL_PLAIN_PASSWORD": "s3cret #1",
           "STREAMCLF__KAFKA__GROUP_ID": "0123",
           "STREAMCLF__KAFKA__SASL_PLAIN_USERNAME": "12:30",
           "STREAMCLF__KAFKA__OUTPUT_TOPIC": "1_000",
           "STREAMCLF__KAFKA__DLQ_TOPIC": "yes",
           "STREAMCLF__KAFKA__CLIENT_ID": "~"}
    config = load_config(None, ["kafka.input_topics=0x1F,007", "output.routes.spam=0123"],
                         environ=env)
    assert config.kafka.sasl_plain_password == "s3cret #1"
    assert config.kafka.group_id == "0123"
    assert config.kafka.sasl_plain_username == "12:30"
    assert config.kafka.output_topic == "1_000"
    assert config.kafka.dlq_topic == "yes"
    assert config.kafka.client_id == "~"
    assert config.kafka.input_topics == ["0x1F", "007"]
    assert config.output.routes == {"spam": "0123"}


def test_env_and_set_values_of_other_types_are_read_as_yaml():
    env = {"STREAMCLF__BATCHING__MAX_BATCH_SIZE": "16",
           "STREAMCLF__KAFKA__CONSUMER__SESSION_TIMEOUT_MS": "6000",
           "STREAMCLF__MODEL__THRESHOLD": "null"}
    config = load_config(None, ["kafka.input_topics=[a, b]", "metrics.port=9200"], environ=env)
    assert config.batching.max_batch_size == 16
    assert config.kafka.consumer == {"session_timeout_ms": 6000}
    assert config.model.threshold is None
    assert config.kafka.input_topics == ["a", "b"]
    assert config.metrics.port == 9200
    with pytest.raises(ConfigError, match="batching.max_batch_size"):
        load_config(None, ["batching.max_batch_size=many"], environ={})


def test_passthrough_mappings_keep_their_keys():
    config = load_config(None, ["kafka.consumer={session_timeout_ms: 6000, fetch_max_wait_ms: 50}"],
                         environ={})
    assert config.kafka.consumer == {"session_timeout_ms": 6000, "fetch_max_wait_ms": 50}


@pytest.mark.parametrize(
    "text, path",
    [
        ("kafka:\n  bootstrap_servrs: x\n", "kafka.bootstrap_servrs"),
        ("modle: {}\n", "modle"),
        ("batching:\n  max_batch_size: many\n", "batching.max_batch_size"),
        ("batching:\n  max_batch_size: 0\n", "batching.max_batch_size"),
        ("model:\n  device: tpu\n", "model.device"),
        ("input:\n  format: xml\n", "input.format"),
        ("metrics:\n  enabled: maybe\n", "metrics.enabled"),
        ("kafka: [1, 2]\n", "kafka"),
        ("model:\n  threshold: 1.5\n", "model.threshold"),
        ("model:\n  quantize: int4\n", "model.quantize"),
        ("model:\n  lanes: -1\n", "model.lanes"),
        ("model:\n  threads: -2\n", "model.threads"),
        ("input:\n  decode_processes: -1\n", "input.decode_processes"),
        ("input:\n  decode_processes: two\n", "input.decode_processes"),
        ("kafka:\n  sasl_mechanism: PLAN\n", "kafka.sasl_mechanism"),
        ("output:\n  routes: {spam: streamclf-output}\n", "output.routes.spam"),
        ("output:\n  routes: {spam: streamclf-input}\n", "output.routes.spam"),
    ],
)
def test_bad_keys_and_values_name_the_key(tmp_path, text, path):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), environ={})
    assert str(info.value).startswith(path)


def test_bad_env_override_names_the_key():
    with pytest.raises(ConfigError, match=r"^kafka\.nope: unknown key"):
        load_config(None, environ={"STREAMCLF__KAFKA__NOPE": "1"})


def test_bad_set_syntax():
    with pytest.raises(ConfigError, match="expected key.path=value"):
        load_config(None, ["batching.max_batch_size"], environ={})


def test_invalid_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(write(tmp_path, "kafka: [\n"), environ={})
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml", environ={})


def test_secrets_are_redacted():
    config = load_config(None, ["kafka.sasl_plain_password=hunter2",
                                "kafka.producer={sasl_plain_password: s3cret}"], environ={})
    text = str(redacted(config))
    assert "hunter2" not in text and "s3cret" not in text
    assert config.kafka.sasl_plain_password == "hunter2"
    # Words that merely contain a secret-sounding one stay readable.
    assert redacted(load_config(None, ["model.max_tokens=256"], environ={}))["model"][
        "max_tokens"] == 256


@pytest.mark.parametrize("client", ["consumer", "producer"])
def test_a_setting_the_kafka_client_does_not_know_names_its_key(client):
    from worker.kafka import consumer_settings, producer_settings

    config = load_config(None, [f"kafka.{client}={{linger_ms: 5, fetch_min_bytes: 1}}"],
                         environ={})
    build = consumer_settings if client == "consumer" else producer_settings
    # linger_ms is a producer setting, fetch_min_bytes a consumer one: each is unknown to the
    # other client.
    wrong = "linger_ms" if client == "consumer" else "fetch_min_bytes"
    with pytest.raises(ConfigError, match=rf"^kafka\.{client}\.{wrong}: not a kafka-python"):
        build(config.kafka)


def test_security_settings_reach_the_kafka_clients_and_unset_ones_stay_out(tmp_path):
    from worker.kafka import client_settings, consumer_settings, producer_settings

    secret = tmp_path / "password"
    secret.write_text("from-file\n")
    crl = tmp_path / "crl.pem"
    crl.write_text("")
    config = load_config(None, ["kafka.security_protocol=SASL_SSL",
                                "kafka.sasl_mechanism=GSSAPI",
                                "kafka.sasl_kerberos_service_name=kafka-prod",
                                f"kafka.ssl_crlfile={crl}",
                                "kafka.ssl_ciphers=ECDHE-RSA-AES256-GCM-SHA384",
                                f"kafka.sasl_plain_password_file={secret}"], environ={})
    settings = client_settings(config.kafka)
    assert settings["sasl_kerberos_service_name"] == "kafka-prod"
    assert settings["ssl_crlfile"] == str(crl)
    assert settings["ssl_ciphers"] == "ECDHE-RSA-AES256-GCM-SHA384"
    assert settings["sasl_plain_password"] == "from-file"
    assert "sasl_kerberos_domain_name" not in settings and "ssl_cafile" not in settings
    for built in (consumer_settings(config.kafka), producer_settings(config.kafka)):
        assert built["security_protocol"] == "SASL_SSL"
        assert built["sasl_mechanism"] == "GSSAPI"


@pytest.mark.parametrize("key", ["ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_crlfile"])
def test_a_tls_file_that_cannot_be_read_is_a_config_error_not_an_unreachable_broker(
        tmp_path, key):
    """Before, the clients failed to connect and the worker retried for ever, never ready."""
    from worker.kafka import client_settings

    config = load_config(None, ["kafka.security_protocol=SSL",
                                f"kafka.{key}={tmp_path / 'absent.pem'}"], environ={})
    with pytest.raises(ConfigError, match=f"kafka.{key}: cannot read .*absent.pem"):
        client_settings(config.kafka)
    config = load_config(None, [f"kafka.{key}={tmp_path}"], environ={})  # a directory
    with pytest.raises(ConfigError, match=f"kafka.{key}"):
        client_settings(config.kafka)


@pytest.mark.parametrize("override, key", [
    ("kafka.output_topic=in", "kafka.output_topic"),  # the worker would classify its results
    ("kafka.dlq_topic=in", "kafka.dlq_topic"),  # a dead letter would be read back forever
    ("kafka.output_topic=", "kafka.output_topic"),  # an unset variable in a manifest
    ("kafka.dlq_topic=a b", "kafka.dlq_topic"),
    ("output.routes.neg=", "output.routes.neg"),
    ("kafka.input_topics=[in, 'x/y']", "kafka.input_topics[1]"),
])
def test_topics_that_cannot_work_are_config_errors(override, key):
    with pytest.raises(ConfigError, match=re.escape(key)):
        load_config(None, ["kafka.input_topics=in", override], environ={})


def test_mapping_keys_are_strings_whatever_yaml_reads_them_as(tmp_path):
    path = tmp_path / "worker.yaml"
    path.write_text("kafka: {input_topics: [in]}\noutput: {routes: {1: flagged, 0.5: half}}\n")
    config = load_config(path, environ={})
    assert config.output.routes == {"1": "flagged", "0.5": "half"}
    assert redacted(config)["output"]["routes"] == config.output.routes  # no crash
    path.write_text("kafka: {input_topics: [in]}\noutput: {routes: {yes: y}}\n")  # YAML 1.1: True
    assert load_config(path, environ={}).output.routes == {"true": "y"}


def test_the_producer_takes_records_as_large_as_the_inputs_it_accepts():
    """A dead letter carries its input: kafka-python's own 1 MiB limit would drop the value of
    any input between 1 MiB and input.max_bytes."""
    from worker.kafka import producer_settings

    config = load_config(None, ["input.max_bytes=5000000"], environ={})
    assert producer_settings(config.kafka, config.input.max_bytes)["max_request_size"] == (
        5_000_000 + 1024 * 1024)
    config = load_config(None, ["kafka.producer={max_request_size: 20000}"], environ={})
    assert producer_settings(config.kafka, config.input.max_bytes)["max_request_size"] == 20_000


@pytest.mark.parametrize("override, message", [
    ("kafka.consumer.session_timeout_ms=abc",
     "kafka.consumer.session_timeout_ms: 'abc' is not a number"),
    ("kafka.producer={linger_ms: [5]}", "kafka.producer.linger_ms: [5] is not a number"),
    ("kafka.consumer.check_crcs=maybe", "kafka.consumer.check_crcs: 'maybe' is not true or false"),
    ("kafka.producer.max_request_size=true",
     "kafka.producer.max_request_size: True is not a number"),
    ("kafka.producer.partitioner=murmur2",
     "kafka.producer.partitioner: takes a Python object, which a config file cannot give"),
    ("kafka.consumer.value_deserializer=json",
     "kafka.consumer.value_deserializer: takes a Python object"),
    ("kafka.producer.acks=0", "kafka.producer.acks: 0 asks the broker for no acknowledgement"),
])
def test_a_client_setting_of_the_wrong_kind_names_its_key(override, message):
    """Before, kafka-python's own error named no key ("'>=' not supported between ...")."""
    from worker.kafka import consumer_settings, producer_settings

    config = load_config(None, [override], environ={})
    with pytest.raises(ConfigError, match=re.escape(message)):
        consumer_settings(config.kafka)
        producer_settings(config.kafka)


def test_client_settings_of_the_right_kind_pass_as_they_are():
    from worker.kafka import consumer_settings, producer_settings

    config = load_config(None, ["kafka.producer={acks: all, linger_ms: 2.5, retries: 5}",
                                "kafka.consumer={session_timeout_ms: 6000, check_crcs: false}"],
                         environ={})
    assert producer_settings(config.kafka)["acks"] == "all"
    assert producer_settings(config.kafka)["linger_ms"] == 2.5
    assert consumer_settings(config.kafka)["check_crcs"] is False


def test_config_errors_never_echo_a_secret(tmp_path):
    """Before, PyYAML's quote of the line, a malformed --set item and the value of a wrong type
    went into the error message, password included."""
    cases = []
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("kafka:\n  sasl_plain_password: Hunter2: s3cretPW\n")
    cases.append((bad_yaml, []))
    at_sign = tmp_path / "at.yaml"
    at_sign.write_text("kafka:\n  sasl_plain_password: @s3cretPW!\n")
    cases.append((at_sign, []))
    cases.append((None, ["kafka.sasl_plain_password:s3cretPW"]))
    dated = tmp_path / "date.yaml"
    dated.write_text("kafka:\n  input_topics: [in]\n  ssl_password: 2024-05-17\n")
    cases.append((dated, []))
    for path, overrides in cases:
        with pytest.raises(ConfigError) as caught:
            load_config(path, overrides, environ={})
        message = str(caught.value)
        assert "s3cretPW" not in message and "2024" not in message, message
    with pytest.raises(ConfigError, match=r"invalid YAML at line 2, column \d+"):
        load_config(bad_yaml, environ={})


def test_an_unquoted_secret_that_yaml_would_change_is_refused_and_typed_ones_stay_verbatim(
        tmp_path):
    path = tmp_path / "w.yaml"
    path.write_text("kafka:\n  input_topics: [in]\n  sasl_plain_password: 0123\n")
    with pytest.raises(ConfigError, match="kafka.sasl_plain_password: quote the value") as caught:
        load_config(path, environ={})
    assert "83" not in str(caught.value)  # YAML 1.1 reads 0123 as octal
    path.write_text("kafka:\n  input_topics: [in]\n  producer: {ssl_password: 12:30}\n")
    with pytest.raises(ConfigError, match="kafka.producer.ssl_password: quote the value"):
        load_config(path, environ={})
    config = load_config(None, ["kafka.input_topics=in"],
                         environ={"STREAMCLF__KAFKA__CONSUMER__SASL_PLAIN_PASSWORD": "0123",
                                  "STREAMCLF__KAFKA__SASL_PLAIN_PASSWORD": "12:30"})
    assert config.kafka.consumer["sasl_plain_password"] == "0123"
    assert config.kafka.sasl_plain_password == "12:30"


@pytest.mark.parametrize(("written", "yaml_reads"), [("012", "10"), ("1.10", "1.1"),
                                                      ("1_000", "1000"), ("1:30", "90")])
def test_a_string_setting_that_yaml_reads_as_a_number_is_refused(tmp_path, written, yaml_reads):
    """Before, group_id: 012 became the group "10": another group's offsets, silently."""
    path = tmp_path / "w.yaml"
    path.write_text(f"kafka:\n  input_topics: [in]\n  group_id: {written}\n")
    with pytest.raises(ConfigError, match=f"kafka.group_id: quote the value; unquoted, YAML "
                                          f"reads it as (int|float) {yaml_reads}"):
        load_config(path, environ={})
    path.write_text(f"kafka:\n  input_topics: [in]\n  group_id: '{written}'\n")
    assert load_config(path, environ={}).kafka.group_id == written
    config = load_config(None, ["kafka.input_topics=in", f"kafka.group_id={written}"],
                         environ={})
    assert config.kafka.group_id == written  # typed on the command line: as written


@pytest.mark.parametrize("server", ["localhost:9092", "broker", "10.0.0.1:9092", "[::1]:9092",
                                    "SASL_SSL://kafka.prod.svc:9093"])
def test_bootstrap_addresses_kafka_python_reads_are_accepted(server):
    config = load_config(None, ["kafka.input_topics=in", f"kafka.bootstrap_servers={server}"],
                         environ={})
    assert config.kafka.bootstrap_servers == [server]


def test_a_bootstrap_address_with_credentials_is_refused_without_echoing_them():
    """Before, kafka-python tried to resolve "alice:UrlS3cret@host" for ever and logged it."""
    with pytest.raises(ConfigError, match=r"kafka.bootstrap_servers\[1\]: .*credentials") as caught:
        load_config(None, ["kafka.input_topics=in",
                           "kafka.bootstrap_servers=a:9092,sasl://alice:UrlS3cret@b:9092"],
                    environ={})
    assert "UrlS3cret" not in str(caught.value)
    with pytest.raises(ConfigError, match=r"kafka.bootstrap_servers\[0\]: expected host:port"):
        load_config(None, ["kafka.input_topics=in", "kafka.bootstrap_servers=b:port"], environ={})


def test_a_short_session_timeout_gets_a_heartbeat_kafka_python_accepts():
    """`consumer: {session_timeout_ms: 6000}` (the README's example) logged kafka-python's
    warning "heartbeat_interval_ms is high relative to session_timeout_ms (3000 v 6000)" at
    every start, and 2500 was refused: the default 3 s heartbeat is not below it."""
    from worker.kafka import consumer_settings

    def heartbeat(consumer: str) -> object:
        config = load_config(None, [f"kafka.consumer={consumer}"], environ={})
        return consumer_settings(config.kafka).get("heartbeat_interval_ms")

    assert heartbeat("{session_timeout_ms: 6000}") == 2000
    assert heartbeat("{session_timeout_ms: 2500}") == 833
    assert heartbeat("{session_timeout_ms: 45000}") is None  # kafka-python's 3 s is fine
    assert heartbeat("{session_timeout_ms: 6000, heartbeat_interval_ms: 1000}") == 1000
    assert heartbeat("{}") is None
