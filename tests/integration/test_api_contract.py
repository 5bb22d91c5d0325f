"""The API keeps its own contract: schemathesis against the running API's ``/openapi.json``.

Every operation of the document, over the real Serve app (the session's ``api`` fixture: real
deployments, real store, real token file), with valid and invalid requests (schemathesis'
examples, coverage and fuzzing phases). Every response must be documented, with its status,
content type and body (errors included), and none may be a server error.
"""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: Examples per operation in the fuzzing phase: 18 operations stay under ~2 minutes on 2 cores.
MAX_EXAMPLES = 12

CHECKS = ("not_a_server_error", "response_schema_conformance", "status_code_conformance", "content_type_conformance")


def test_every_response_is_documented_and_none_is_a_server_error(api: str, tokens: dict[str, str], tmp_path):
    # The caller holds every scope, so that the routes' own checks run, not only the token's.
    command = [
        sys.executable, "-m", "schemathesis.cli", "run", f"{api}/openapi.json",
        "--header", f"Authorization: Bearer {tokens['trainer']}",
        "--checks", ",".join(CHECKS),
        "--phases", "examples,coverage,fuzzing",
        "--mode", "all",  # valid and invalid requests
        "--max-examples", str(MAX_EXAMPLES),
        "--seed", "20261201",
        "--workers", "2",
        "--request-timeout", "120",
        "--suppress-health-check", "all",
        "--generation-database", "none",
        "--no-color",
        "--report", "junit", "--report-dir", str(tmp_path),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    output = result.stdout + result.stderr
    failures = output[output.find("FAILURES"):output.find("WARNINGS")]
    assert result.returncode == 0, (failures or output)[:12000]
    document = httpx.get(f"{api}/openapi.json", headers={"Authorization": f"Bearer {tokens['trainer']}"}).json()
    operations = sum(len(methods) for methods in document["paths"].values())
    assert operations >= 18, sorted(document["paths"])
    assert f"{operations} total" in output and f"{operations} selected" in output, output[-3000:]
