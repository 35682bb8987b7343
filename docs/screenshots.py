"""Refresh the README's MLflow screenshots from a real headless Chromium against `prunetune ui`.

    cd FOLDER_WITH_MLRUNS && python /path/to/docs/screenshots.py [--study NAME] [--out docs/]

Starts `prunetune ui` on a free 127.0.0.1 port for ./mlruns, opens each page through the link
prunetune prints (model-training view, no clicking between views), closes MLflow's assistant panel,
and writes: mlflow-experiment.png (the study's runs), mlflow-parent-run.png (the parent run's
Overview: the front's plot and table in its description), mlflow-parent-run-html.png
(pareto_front.html inside MLflow's artifact viewer, checked to have rendered its SVG inside the
viewer's sandboxed iframe) and mlflow-child-run.png (the knee trial's run). Stops the server.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser import Browser, _free_port  # noqa: E402

CLOSE_ASSISTANT = (
    "document.querySelector('[data-component-id=\"mlflow.assistant.chat_panel.close\"]')?.click()"
)


def serve(port: int) -> subprocess.Popen:
    """`prunetune ui` for ./mlruns on 127.0.0.1:`port`, answering HTTP (waits up to 3 minutes)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "prunetune", "ui", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    end = time.time() + 180
    while time.time() < end:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return proc
        except OSError:
            time.sleep(1)
    os.killpg(proc.pid, signal.SIGTERM)
    raise SystemExit("prunetune ui did not answer within 3 minutes")


def shoot(b: Browser, url: str, ready: str, path: Path, *, then: str = "") -> None:
    """Open `url`, wait for the JavaScript condition `ready`, close the assistant, run `then`,
    save."""
    b.goto(url, 1)
    if not b.wait_for(ready, 60):
        raise SystemExit(f"{url}: page not ready ({ready})")
    b.js(CLOSE_ASSISTANT)
    if then:
        b.js(then)
    time.sleep(2)
    b.screenshot(path)
    print(f"wrote {path}")


def main() -> None:
    from mlflow.tracking import MlflowClient

    from prunetune.search.tracking import PARENT_ATTR, experiment_url, tracking_uri

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", help="default: the only study (prunetune's default-study rule)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    from prunetune.search.api import resolve_study
    from prunetune.search.study import load_existing

    storage = f"sqlite:///{Path('mlruns/optuna.db').resolve()}"
    name = resolve_study(a.study, storage)
    study = load_existing(storage, name)
    client = MlflowClient(tracking_uri(None))
    exp = client.get_experiment_by_name(name).experiment_id
    parent = study.user_attrs[PARENT_ATTR]
    knee = client.get_run(parent).data.tags.get("selected_trial")
    [child] = client.search_runs(
        [exp], f"tags.`prunetune.role` = 'trial' and tags.trial = '{knee}'", max_results=1
    )
    port = _free_port()
    server = serve(port)
    base = f"http://127.0.0.1:{port}"
    try:
        with Browser(1400, 1000) as b:
            shoot(
                b,
                experiment_url(base, exp),
                "document.body.innerText.includes('trial 0')",
                a.out / "mlflow-experiment.png",
                then="document.querySelector('[aria-label*=\"Expand\" i]')?.click()",
            )
            shoot(
                b,
                experiment_url(base, exp, parent),
                "[...document.images].some(i => i.naturalWidth > 0)",
                a.out / "mlflow-parent-run.png",
                then="(()=>{document.querySelector("
                "'[data-component-id=\"discovery.data_explorer.entity_comment.show_comment_text_toggle\"]')?.click();"
                "[...document.querySelectorAll('*')]"
                ".find(e => e.textContent.trim() === 'Description')"
                "?.scrollIntoView()})()",
            )
            html = experiment_url(base, exp, parent).replace("?", "/artifacts/pareto_front.html?")
            shoot(
                b,
                html,
                "!!document.querySelector('iframe.mlflow-html-iframe')",
                a.out / "mlflow-parent-run-html.png",
            )
            drawn = b.frame_js("blob:", "document.querySelectorAll('svg path').length")
            if not drawn:
                raise SystemExit("pareto_front.html did not render inside MLflow's artifact viewer")
            shoot(
                b,
                experiment_url(base, exp, child.info.run_id),
                "document.body.innerText.includes('Duration')",
                a.out / "mlflow-child-run.png",
            )
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)


if __name__ == "__main__":
    main()
