"""Ingestion: the ImageExampleGen component and its Beam stages.

The component itself is imported from :mod:`components.ingestion.component` (it pulls
in TFX); the Beam stages in :mod:`components.ingestion.beam_stages` need only Beam.
"""
