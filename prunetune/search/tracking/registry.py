"""The MLflow model registry of a study: `prunetune-STUDY` holds its selected models, one version
per trial, format and runtime (a search registers the prunetune file of its selection; an export
registers its folder; the same trial exported again in the same format reuses its version)."""

from __future__ import annotations

from pathlib import Path

from prunetune.search.records import TrialRecord


def registered_name(study: str) -> str:
    """The registered model that holds a study's selected models."""
    return f"prunetune-{study}"


def version_of(client, study: str, trial: int, **tags: str) -> str | None:
    """The oldest model version of `registered_name(study)` that holds trial `trial` and has
    the given tags (e.g. format="onnx"), or None."""
    versions = client.search_model_versions(f"name = '{registered_name(study)}'")
    hits = [
        v
        for v in versions
        if v.tags.get("trial") == str(trial)
        and all(v.tags.get(k) == val for k, val in tags.items())
    ]
    return min(hits, key=lambda v: int(v.version)).version if hits else None


def register(
    client,
    study: str,
    record: TrialRecord,
    *,
    artifact: str,
    run_id: str,
    description: str = "",
) -> str:
    """Register a version of `registered_name(study)` whose source is the artifact folder
    `artifact` of run `run_id`, with the trial number and metrics as tags; returns the version."""
    name = registered_name(study)
    try:
        client.get_registered_model(name)
    except Exception:
        client.create_registered_model(name, description=f"prunetune winners of study {study}")
    src = f"{client.get_run(run_id).info.artifact_uri}/{artifact}"
    tags = {"trial": str(record.number)} | {
        k: f"{v:.6g}" for k, v in record.metrics.items() if isinstance(v, int | float)
    }
    mv = client.create_model_version(
        name,
        src,
        run_id=run_id,
        tags=tags,
        description=description or f"trial {record.number} of {study}",
    )
    return mv.version


def register_selection(client, run_id: str, study: str, chosen: TrialRecord) -> None:
    """Log the selected trial's weights under selected/trial-NNNNN/ of the search run `run_id` and
    register that folder, unless a version of that trial exists already."""
    if not (chosen.weights and Path(chosen.weights).is_file()) or version_of(
        client, study, chosen.number
    ):
        return
    # a folder, not the bare file: `models:/NAME/VERSION` resolves to a directory
    artifact = f"selected/trial-{chosen.number:05d}"
    client.log_artifact(run_id, chosen.weights, artifact_path=artifact)
    client.log_dict(
        run_id,
        {
            "study": study,
            "trial": chosen.number,
            "file": Path(chosen.weights).name,
            "metrics": chosen.metrics,
            "config": chosen.config,
            "load": "prunetune.compress.load_compressed_file(file)",
        },
        f"{artifact}/model.json",
    )
    version = register(client, study, chosen, artifact=artifact, run_id=run_id)
    client.set_model_version_tag(registered_name(study), version, "format", "prunetune")
