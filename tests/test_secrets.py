"""Secrets never leave the process: a store URL's password (and secret query values) is masked in
every message, MLflow param and tag, card, registry artifact and the study's stored config."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from urllib.parse import quote

import optuna
import pytest

from prunetune.cli import main
from prunetune.redact import is_masked, mask_url, scrub
from tests.helpers import run_cli, search_args
from tests.services import mlflow_server, pg_bin, postgres_server

SECRET = "S3cr:t/p@ss#w"  # special characters: written percent-escaped in a URL
ESCAPED = quote(SECRET, safe="")


@pytest.mark.parametrize(
    "url, shown",
    [
        (
            f"postgresql://u:{ESCAPED}@db.example:5432/optuna",
            "postgresql://u:***@db.example:5432/optuna",
        ),
        (
            "postgresql+psycopg://u:pw123@h/db?sslmode=require",
            "postgresql+psycopg://u:***@h/db?sslmode=require",
        ),
        ("mysql+pymysql://root:hunter2@h:3306/db", "mysql+pymysql://root:***@h:3306/db"),
        (
            "postgresql://u:p@ss@host/db",
            "postgresql://u:***@host/db",
        ),  # an unescaped @ leaks nothing
        ("http://user:hunter2@mlflow.example:5000", "http://user:***@mlflow.example:5000"),
        ("https://user:pa:ss@h/?token=abc123&x=1", "https://user:***@h/?token=***&x=1"),
        ("databricks://profile", "databricks://profile"),
        ("sqlite:////tmp/a@b:c/optuna.db", "sqlite:////tmp/a@b:c/optuna.db"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("http://h:5000/api?access_token=zzz999", "http://h:5000/api?access_token=***"),
    ],
)
def test_urls_are_shown_with_their_secrets_masked(url, shown):
    assert mask_url(url) == shown
    assert is_masked(shown) == ("***" in shown)


def test_scrub_removes_a_seen_secret_from_any_text():
    mask_url("postgresql://u:zz-Top-Secret@h/db")
    assert scrub("FATAL: password zz-Top-Secret rejected") == "FATAL: password *** rejected"


@pytest.mark.parametrize(
    "flag, url",
    [
        ("--storage", f"postgresql://u:{ESCAPED}@127.0.0.1:1/optuna"),
        ("--storage", "mysql+pymysql://root:hunter2xyz@127.0.0.1:1/db"),
        ("--tracking-uri", f"http://user:{ESCAPED}@127.0.0.1:1"),
        ("--tracking-uri", "http://127.0.0.1:1/?token=tok3n-value"),
    ],
)
def test_error_lines_never_show_a_password(isolated, capsys, flag, url):
    assert main(search_args("s", 1, flag, url)) in (1, 2)
    err = capsys.readouterr().err
    assert [x for x in err.splitlines() if x.startswith("prunetune: error:")], err
    for secret in (SECRET, ESCAPED, "hunter2xyz", "tok3n-value"):
        assert secret not in err


def _texts(folder: Path) -> str:
    """Every file under `folder` as text (binary bytes decoded loosely)."""
    return "\n".join(
        p.read_bytes().decode("utf-8", "replace") for p in folder.rglob("*") if p.is_file()
    )


def _sqlite_text(db: Path) -> str:
    con = sqlite3.connect(db)
    try:
        return "\n".join(line for line in con.iterdump())
    finally:
        con.close()


@pytest.mark.slow
@pytest.mark.skipif(pg_bin() is None, reason="PostgreSQL server not installed")
def test_a_search_with_credentials_records_and_prints_them_masked(tmp_path):
    """A real PostgreSQL study (trust authentication: the password is sent and ignored) and a real
    MLflow server reached with user:password: no trace of either password in the output, the
    MLflow store (params, tags, registry), its artifacts, the cards or the stored config."""
    srv = tmp_path / "srv"
    srv.mkdir()
    with (
        postgres_server(("optuna",)) as pg,
        mlflow_server(f"sqlite:///{srv / 'mlflow.db'}", srv / "artifacts") as server,
    ):
        storage = pg.replace("postgres@", f"postgres:{ESCAPED}@") + "/optuna"
        tracking = server.replace("http://", f"http://tracker:{ESCAPED}@")
        out = tmp_path / "out"
        proc = run_cli(
            search_args(
                "s", 2, "--storage", storage, "--tracking-uri", tracking, "--export", str(out)
            ),
            tmp_path,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        config = optuna.load_study(study_name="s", storage=pg + "/optuna").user_attrs["config"]
    card = json.loads((out / "card.json").read_text())
    assert card["provenance"]["storage"] == mask_url(storage)
    assert card["provenance"]["mlflow"]["tracking_uri"] == mask_url(tracking)
    assert config["storage"] == mask_url(storage) and config["tracking_uri"] == mask_url(tracking)
    everything = "\n".join(
        [
            proc.stdout,
            proc.stderr,
            _texts(out),
            _texts(srv / "artifacts"),
            _sqlite_text(srv / "mlflow.db"),
            json.dumps(config),
        ]
    )
    assert "tracker:***@" in everything
    for secret in (SECRET, ESCAPED):
        assert secret not in everything
