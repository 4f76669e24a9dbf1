"""POP3: sans-IO engines for the pre-login dialogue (``server``) and the backend login (``backend``)."""
