"""CatalogueSchemaGen: the run's Schema artifact, derived from the catalogue it reads.

With the project's own catalogue a run validates against the committed
``schemas/schema.pbtxt`` (ImportSchemaGen; ``marco schema check`` keeps the two in
step). A catalogue from outside the checkout (``marco run --catalogue DIR``, the
``catalogue_dir`` setting on Kubeflow and Vertex AI) may add institutions and native
labels the committed schema does not know, so this component builds the schema from
that catalogue when the run starts, with the same rules
(:func:`components.schema_gen.build_schema`).

Lineage: the Schema artifact records the catalogue folder, a digest of its files and
the institutions it holds, and Transform, the Trainer and ExampleValidator read it, so
ML Metadata shows which catalogue a model was trained on. Caching: the digest is part
of the cache key (the driver computes it locally; on Kubeflow and Vertex AI, where no
drivers run, the ``input_fingerprint`` runtime parameter, which covers the
catalogue's content, is passed in), so an edited catalogue gives a new schema.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, ClassVar

from tfx import types
from tfx import v1 as tfx
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.types import artifact_utils
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from components import filesystem
from components.catalogue import catalogue_files, local_catalogue
from components.drivers import ComputedPropertyDriver

SCHEMA_KEY = "schema"
CATALOGUE_DIR_KEY = "catalogue_dir"
CATALOGUE_FINGERPRINT_KEY = "catalogue_fingerprint"
INPUT_FINGERPRINT_KEY = "input_fingerprint"
# Custom properties of the Schema artifact.
INSTITUTIONS_PROPERTY = "institutions"
CATALOGUE_FILES_PROPERTY = "catalogue_files"
# TFX's readers of a Schema artifact expect this one file in its folder.
SCHEMA_FILE_NAME = "schema.pbtxt"


def file_digests(catalogue_dir: str) -> dict[str, str]:
    """File name -> SHA-256 of its content, for every institution file of the folder."""
    return {
        filesystem.name(path): hashlib.sha256(filesystem.read_bytes(path)).hexdigest()
        for path in catalogue_files(catalogue_dir)
    }


def catalogue_fingerprint(catalogue_dir: str) -> str:
    """One digest of the catalogue's files (names and content)."""
    digest = hashlib.sha256()
    for name, file_digest in file_digests(catalogue_dir).items():
        digest.update(f"{name}\t{file_digest}\n".encode())
    return digest.hexdigest()


class Driver(ComputedPropertyDriver):
    """Adds ``catalogue_fingerprint`` to the execution properties and the Schema."""

    KEY = CATALOGUE_FINGERPRINT_KEY
    TAG_OUTPUTS = True

    def compute(self, exec_properties: Mapping[str, Any]) -> str:
        return catalogue_fingerprint(exec_properties[CATALOGUE_DIR_KEY])


class Executor(base_executor.BaseExecutor):
    """Loads the catalogue, writes ``schema.pbtxt`` and records the catalogue on it."""

    def Do(
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        from components.catalogue import load_catalogue
        from components.schema_gen import render_schema

        catalogue_dir = exec_properties[CATALOGUE_DIR_KEY]
        with local_catalogue(catalogue_dir) as folder:
            catalogue = load_catalogue(folder)
        schema = artifact_utils.get_single_instance(output_dict[SCHEMA_KEY])
        path = filesystem.join(schema.uri, SCHEMA_FILE_NAME)
        from tfx.dsl.io import fileio

        fileio.makedirs(schema.uri)
        with fileio.open(path, "w") as handle:
            handle.write(render_schema(catalogue))
        schema.set_string_custom_property(CATALOGUE_DIR_KEY, catalogue_dir)
        schema.set_string_custom_property(
            CATALOGUE_FINGERPRINT_KEY,
            exec_properties.get(CATALOGUE_FINGERPRINT_KEY) or catalogue_fingerprint(catalogue_dir),
        )
        schema.set_string_custom_property(
            INSTITUTIONS_PROPERTY, json.dumps(sorted(catalogue.codes))
        )
        schema.set_string_custom_property(
            CATALOGUE_FILES_PROPERTY, json.dumps(file_digests(catalogue_dir), sort_keys=True)
        )


class CatalogueSchemaGenSpec(types.ComponentSpec):
    """Parameters and output of :class:`CatalogueSchemaGen`."""

    PARAMETERS: ClassVar[dict] = {
        CATALOGUE_DIR_KEY: ExecutionParameter(type=str),
        # Computed by the driver where drivers run (part of the cache key).
        CATALOGUE_FINGERPRINT_KEY: ExecutionParameter(type=str, optional=True),
        # Where no driver runs: the run's input fingerprint, which covers the catalogue.
        INPUT_FINGERPRINT_KEY: ExecutionParameter(type=str, optional=True),
    }
    INPUTS: ClassVar[dict] = {}
    OUTPUTS: ClassVar[dict] = {
        SCHEMA_KEY: ChannelParameter(type=tfx.types.standard_artifacts.Schema),
    }


class CatalogueSchemaGen(base_component.BaseComponent):
    """The Schema artifact of a run whose catalogue is not the project's own."""

    SPEC_CLASS = CatalogueSchemaGenSpec
    DRIVER_CLASS = Driver
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(self, catalogue_dir: str, *, input_fingerprint=None) -> None:
        """Args:
            catalogue_dir: folder of institution YAML files, local or gs://.
            input_fingerprint: the run's input fingerprint (a runtime parameter on
                Kubeflow and Vertex AI); it changes with the catalogue's content.
        """
        if not catalogue_dir:
            raise ValueError("CatalogueSchemaGen needs a catalogue_dir")
        super().__init__(spec=CatalogueSchemaGenSpec(
            catalogue_dir=catalogue_dir,
            input_fingerprint=input_fingerprint,
            schema=types.Channel(type=tfx.types.standard_artifacts.Schema),
        ))
