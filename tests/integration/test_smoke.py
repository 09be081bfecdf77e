from tests.support import RunningServer


async def test_health_and_ready(server: RunningServer) -> None:
    async with server.client() as client:
        assert (await client.get("/healthz")).status_code == 200
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["store"] == "ok"
        assert ready.json()["oxen_stream"] == "disabled"
