"""Helpers shared by every test folder (not tests: nothing here is collected).

- :mod:`support.servers`: a WSGI app in a thread, our services under gunicorn, a private Orthanc.
- :mod:`support.labeling`: a labeling config, manifest and JSON-API client over the test client or HTTP.
- :mod:`support.browser`: the session's one headless Chromium, page logs, the built viewer bundle.
- :mod:`support.site`: a labeling site (labeling app + proxy + Orthanc, served) with a job and users.

``tests/`` is on ``sys.path`` (pytest puts the root conftest's folder there), so test modules in any
folder write ``from support.servers import serve``.
"""
