"""ManageSieve (RFC 5804): the engines of ``managesieve-login`` (``server``) and its proxy (``backend``)."""
