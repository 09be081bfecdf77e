import gc

from receiver.app import YOUNG_COLLECTION_OBJECTS
from tests.support import RunningServer


async def test_health_and_ready(server: RunningServer) -> None:
    async with server.client() as client:
        assert (await client.get("/healthz")).status_code == 200
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["store"] == "ok"
        assert ready.json()["oxen_stream"] == "disabled"


async def test_a_running_app_has_its_startup_objects_frozen_and_young_collections_spaced(
    server: RunningServer,
) -> None:
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold()[0] == YOUNG_COLLECTION_OBJECTS
