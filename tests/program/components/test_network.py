from __future__ import annotations

import harness

from nocturna_infra.program.components.network import ServiceNetwork, ServiceNetworkArgs


def test_network_has_a_fixed_name_and_is_protected() -> None:
    run = harness.run(
        lambda: ServiceNetwork(
            "svc", ServiceNetworkArgs(name="nocturna-network", environment="production")
        )
    )

    network = run.mocks.resources["svc-network"]
    assert network.typ == "docker:index/network:Network"
    assert network.inputs == {
        "name": "nocturna-network",
        "driver": "bridge",
        "labels": [{"label": "com.nocturna.environment", "value": "production"}],
    }
    assert run.monitor.requests["svc-network"].deleteBeforeReplace is True
    # The live container is attached to it: the engine refuses to replace it.
    assert run.monitor.requests["svc-network"].protect is True
    assert run.monitor.requests["svc"].type == "nocturna:index:ServiceNetwork"
