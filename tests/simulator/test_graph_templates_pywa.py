"""The simulator's template API read by a real Cloud API client: pywa lists every page (by the
``after`` cursor), parses each template with its components and the summary, fetches one, deletes one."""

from __future__ import annotations

import trio
from pywa import WhatsApp
from pywa.types.others import Pagination

from dispatcher.simulator.core import Simulator
from dispatcher.simulator.graph_templates import SimWaba
from dispatcher.simulator.server import serve
from tests.helpers.templates import WABA, WABA_TOKEN, corpus

NAMES = ("pywa_seasonal_promotion", "pywa_coupon_code_fall2023_25off", "meta_docs_order_shipped_named")


async def test_pywa_lists_pages_gets_and_deletes_templates(nursery: trio.Nursery) -> None:
    sim = Simulator()
    sim.templates.add_waba(SimWaba(id=WABA, access_token=WABA_TOKEN))
    for name in NAMES:
        sim.templates.seed(WABA, corpus(name))
    for i in range(7):
        sim.templates.seed(WABA, {**corpus(NAMES[0]), "name": f"extra_{i}"})
    url = await nursery.start(serve, sim, "127.0.0.1", 0)

    def use_pywa() -> tuple[list[str], dict[str, object], list[str]]:
        wa = WhatsApp(token=WABA_TOKEN, waba_id=WABA, api_version="23.0")
        wa.api._session.base_url = f"{url}/v23.0"
        page = wa.get_templates(pagination=Pagination(limit=4))
        names = [t.name for t in page]
        while page.has_next:
            # By the cursor: pywa 4.5's TemplatesResult.next() cannot build its own class (item_factory).
            page = wa.get_templates(pagination=Pagination(limit=4, after=page.after))
            names += [t.name for t in page]
        named = next(t for t in wa.get_templates(name="order_shipped_named"))
        fetched = wa.get_template(named.id)
        details = {
            "status": str(fetched.status),
            "format": str(fetched.parameter_format),
            "category": str(fetched.category),
            "components": len(fetched.components),
        }
        wa.delete_template(template_name="extra_0")
        return names, details, [t.name for t in wa.get_templates()]

    with trio.fail_after(30):
        names, details, after = await trio.to_thread.run_sync(use_pywa)
    assert len(names) == 10 and len(set(names)) == 10  # three pages of 4, 4, 2
    assert details["status"].endswith("APPROVED") and details["format"].endswith("NAMED")  # type: ignore[union-attr]
    assert details["category"].endswith("UTILITY") and details["components"] == 4  # type: ignore[union-attr]
    assert "extra_0" not in after and len(after) == 9
