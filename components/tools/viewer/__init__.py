"""The plate viewer: a static site of plate grids, ranked crystals and time courses.

:mod:`components.tools.viewer.data` reads a results CSV file into plates and drops,
:mod:`components.tools.viewer.thumbnails` writes the thumbnails, and
:mod:`components.tools.viewer.site` writes the page (``static/``) and its data.
"""

from components.tools.viewer.data import PLATE_FORMATS, ResultsError
from components.tools.viewer.site import SiteSummary, ViewerOptions, build_site

__all__ = ["PLATE_FORMATS", "ResultsError", "SiteSummary", "ViewerOptions", "build_site"]
