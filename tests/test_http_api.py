"""The plan API's description: what docs/openapi.json says is what the service serves."""

from __future__ import annotations

import json
from pathlib import Path

from prometheus_client import CollectorRegistry

from thermoroute.http_api import create_app

OPENAPI = Path(__file__).resolve().parents[1] / "docs" / "openapi.json"


def test_documented_openapi_is_the_served_one() -> None:
    served = create_app(None, CollectorRegistry(), "t" * 32).openapi()
    # (served at /openapi.json behind the token: test_a_live_service_answers_…)
    assert json.loads(OPENAPI.read_text()) == json.loads(json.dumps(served)), (
        "docs/openapi.json is out of date: regenerate it from thermoroute.http_api.create_app"
    )
    assert set(served["paths"]) == {"/plan", "/status", "/healthz", "/metrics"}
    plan = served["components"]["schemas"]["PlanResponse"]["properties"]
    assert {"plan_cycle", "age_s", "stale", "kept_previous", "degraded", "routes"} <= set(plan)
    assert served["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_a_live_service_answers_with_and_without_its_token(tiny_scenario_dir: Path) -> None:
    """An in-process service (site agents inline) behind a real uvicorn server."""
    import socket
    import urllib.error
    import urllib.request

    from thermoroute.cluster import discover, serve_fleet
    from thermoroute.http_api import ApiServer
    from thermoroute.options import RunOptions
    from thermoroute.service import PlanningService, ServeSettings
    from thermoroute.service_metrics import ServiceMetrics

    coordinator_dir, site_ids = discover(tiny_scenario_dir)
    metrics = ServiceMetrics()
    service = PlanningService(
        coordinator_dir, site_ids, RunOptions(method="ipm").method_settings(),
        ServeSettings(horizon=2, step_seconds=3600.0, cycles=1),
        serve_fleet(tiny_scenario_dir, site_ids, executor="inline"), metrics=metrics,
    )  # fmt: skip
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = "k" * 40
    server = ApiServer(create_app(service, metrics.registry, token), "127.0.0.1", port)
    server.start()
    try:

        def get(path: str, bearer: str | None = token) -> tuple[int, bytes]:
            request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
            if bearer is not None:
                request.add_header("Authorization", f"Bearer {bearer}")
            try:
                with urllib.request.urlopen(request, timeout=10) as answer:
                    return answer.status, answer.read()
            except urllib.error.HTTPError as error:
                return error.code, error.read()

        assert get("/healthz", None) == (200, b"ok\n")
        assert get("/plan")[0] == 503  # no cycle yet: no plan, said so
        service.run()  # one cycle (the clock's first step is due at once)
        code, body = get("/plan")
        plan = json.loads(body)
        assert code == 200 and plan["plan_cycle"] == 0 and not plan["stale"]
        assert get("/plan", None)[0] == 401 and get("/plan", "x" * 40)[0] == 401
        assert get("/status", None)[0] == 401 and get("/metrics", None)[0] == 401
        # The schema names every endpoint and field: behind the token too.
        assert get("/openapi.json", None)[0] == 401
        code, body = get("/openapi.json")
        assert code == 200 and set(json.loads(body)["paths"]) == {
            "/plan", "/status", "/healthz", "/metrics"
        }  # fmt: skip
        assert get("/plan?time=2023-01-18T01:00:00")[0] == 422  # no UTC offset
        # The offset's + typed as is: the query string decodes it to a space, read back as
        # the + it was (and only there); the same plan as with %2B.
        answers = [get(f"/plan?time=2023-01-16T01:00:00{sign}10:00") for sign in ("+", "%2B")]
        assert [code for code, _ in answers] == [200, 200], answers
        plus, encoded = (json.loads(body) for _, body in answers)
        del plus["age_s"], encoded["age_s"]
        assert plus == encoded and plus["time"] == "2023-01-16T01:00:00+10:00"
        assert get("/plan?time=2023-01-16%2001:00:00")[0] == 422  # a space, but no offset
        assert get("/plan?time=2023-01-16T01:00:00%20%2010:00")[0] == 422  # two spaces
        assert get("/plan?time=2030-01-01T00:00:00%2B10:00")[0] == 503  # beyond the horizon
        status = json.loads(get("/status")[1])
        assert status["cycles"] == 1 and status["cycles_by_outcome"] == {"planned": 1}
        assert b'thermoroute_service_cycles_total{outcome="planned"} 1.0' in get("/metrics")[1]
    finally:
        server.stop()
