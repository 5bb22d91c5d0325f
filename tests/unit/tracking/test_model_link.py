"""Linking a checkpoint's model to its run is safe to repeat (a fit killed right after the link resumes)."""

from mlflow import MlflowClient
from mlflow.entities import LoggedModelOutput

from serlens.shared.logged_models import _link


def test_a_repeated_link_leaves_one_output(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.create_experiment("link")
    run_id = client.create_run(experiment).info.run_id
    model = client.create_logged_model(experiment, name="step-000000", source_run_id=run_id)
    client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])  # linked before the kill
    _link(client, run_id, model.model_id, 0, [])  # the resumed fit links again
    outputs = client.get_run(run_id).outputs.model_outputs
    assert [(o.model_id, o.step) for o in outputs] == [(model.model_id, 0)]
