from __future__ import annotations

import harness

from nocturna_infra.program.components.image import ServiceImage, ServiceImageArgs

ARGS = ServiceImageArgs(
    image_name="nocturna-chart-service:production",
    context="../nocturna-image",
    dockerfile="Dockerfile",
    platform="linux/amd64",
    build_args={"BASE_IMAGE": "node:20-slim", "EXTRA_CA_CERTS": ""},
)


def test_image_is_built_with_buildkit_and_never_pushed() -> None:
    run = harness.run(lambda: ServiceImage("svc", ARGS))

    image = run.mocks.resources["svc-image"]
    assert image.typ == "docker:index/image:Image"
    assert image.inputs == {
        "imageName": "nocturna-chart-service:production",
        "skipPush": True,
        "buildOnPreview": False,
        "build": {
            "context": "../nocturna-image",
            "dockerfile": "Dockerfile",
            "platform": "linux/amd64",
            "builderVersion": "BuilderBuildKit",
            "args": {"BASE_IMAGE": "node:20-slim", "EXTRA_CA_CERTS": ""},
        },
    }
    assert run.monitor.requests["svc"].type == "nocturna:index:ServiceImage"


def test_image_id_is_the_local_image_id() -> None:
    def program() -> object:
        return ServiceImage("svc", ARGS).image_id

    run = harness.run(program)

    assert (
        harness._sync_await(run.value.future())
        == harness.DEFAULT_COMPUTED["docker:index/image:Image"]["repoDigest"]
    )
