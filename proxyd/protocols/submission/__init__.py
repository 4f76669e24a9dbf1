"""Submission (RFC 6409): the engines of ``submission-login`` (``server``) and its proxy (``backend``)."""
