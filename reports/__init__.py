"""Reports: a study's tables and figures rendered with jinja2 as one self-contained HTML file and
as GitHub markdown (``reports.render.render``)."""
