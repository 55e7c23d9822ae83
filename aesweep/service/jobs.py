"""A sweep as a Ray Job on a cluster's job server (``aesweep submit``): the entrypoint, what ships with it, and the
token a cluster with token authentication wants."""
from __future__ import annotations

import os
import shlex
from pathlib import Path

# What a job's working directory never needs (results, stores, caches); .gitignore'd files are left out by Ray too.
JOB_EXCLUDES = [".git", ".venv", "**/__pycache__", "aesweep-results", "reports", "mlflow.db", "mlruns", "*.pt",
                ".pytest_cache", ".ruff_cache"]


class SubmitFailed(RuntimeError):
    """The job server refused the job or could not be reached; the message is its last line."""


def submit(address: str, args: list[str], sweep_name: str, working_dir: Path | None,
           env_vars: dict[str, str]) -> tuple[str, str]:
    """Submit ``args`` (the aesweep command line) as a job to the job server at ``address`` (http://HEAD:8265);
    ``working_dir``: the folder shipped with it (None: the cluster has aesweep installed). Returns (job id,
    entrypoint)."""
    runtime_env: dict = {} if working_dir is None else {"working_dir": str(working_dir), "excludes": JOB_EXCLUDES}
    if env_vars:
        runtime_env["env_vars"] = env_vars
    # A cluster with token authentication (cluster.yaml, cluster-onprem.yaml): the client sends the token of
    # ~/.ray/auth_token (or RAY_AUTH_TOKEN) when RAY_AUTH_MODE=token.
    if os.environ.get("RAY_AUTH_TOKEN") or (Path.home() / ".ray" / "auth_token").exists():
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    from ray.job_submission import JobSubmissionClient  # deferred: Ray's client is seconds to import

    entrypoint = shlex.join(args)
    try:
        client = JobSubmissionClient(address)
        job = client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env, metadata={"aesweep.sweep": sweep_name})
    except Exception as err:  # unreachable, refused token, a working dir over Ray's size limit
        text = str(err).strip()
        raise SubmitFailed(f"{address}: {text.splitlines()[-1] if text else type(err).__name__}") from None
    return job, entrypoint
