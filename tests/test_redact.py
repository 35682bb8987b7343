"""Masking secrets in store URLs (prunetune.redact): the config mapping stored with a study, the
masked-URL check, secrets learnt at start-up. (Messages, MLflow, cards: tests/test_secrets.py.)"""

from __future__ import annotations

from prunetune.redact import MASK, is_masked, mask_config, mask_url, scrub, watch


def test_secret_query_values_are_masked_and_other_values_kept():
    url = "postgresql://h/db?sslmode=require&api_key=k3y-value&Token=t0ken"
    assert mask_url(url) == f"postgresql://h/db?sslmode=require&api_key={MASK}&Token={MASK}"
    assert mask_url("sqlite:///a:b@c.db") == "sqlite:///a:b@c.db"  # a file name, not a password
    assert mask_url("mlruns/optuna.db") == "mlruns/optuna.db" and mask_url(None) is None


def test_only_the_store_urls_of_a_config_are_masked():
    config = {
        "storage": "postgresql://u:pw1234@h/db",
        "tracking_uri": "http://h?token=abcdef",
        "address": "ray://u:pw5678@h:10001",
        "study": "u:pw1234@h",  # not a URL field: as it is
        "trials": 3,
    }
    masked = mask_config(config)
    assert masked["storage"] == f"postgresql://u:{MASK}@h/db"
    assert masked["tracking_uri"] == f"http://h?token={MASK}"
    assert masked["address"] == f"ray://u:{MASK}@h:10001"
    assert masked["study"] == "u:pw1234@h" and masked["trials"] == 3
    assert config["storage"] == "postgresql://u:pw1234@h/db"  # a copy: the input is untouched


def test_a_masked_url_is_told_from_a_usable_one():
    assert is_masked(mask_url("postgresql://u:pw1234@h/db"))
    assert is_masked(mask_url("http://h?token=abcdef"))
    assert not is_masked("postgresql://u:pw1234@h/db") and not is_masked(None)


def test_a_watched_urls_secret_is_scrubbed_from_text_written_before_masking():
    watch("postgresql://u:Wat-ch3d!@h/db", None)
    assert scrub("login failed for password Wat-ch3d!") == f"login failed for password {MASK}"
